"""Teacher signals: batch inference of the consolidated teacher with Ray Data (`rdistill teacher-infer`).

Ray Data reads a split's Parquet table, cuts it into blocks of `infer.batch_size` rows and streams them through
an actor pool (`infer.num_actors` actors, `infer.cpus_per_actor` CPUs or one GPU each) in which every actor loads
the teacher once. Each batch is scored against the whole catalogue and reduced to its top-K on the spot, so the
[rows, catalogue] logits never exist beyond one batch. The driver streams the results into one Parquet file per
signal (see rdistill/teacher/signals.py), inside a temporary folder that replaces signals/ only when complete.

A rerun with the same checkpoint, dataset tables and output settings finds signals/manifest.json and skips.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from rdistill import layout
from rdistill.artifacts import atomic_dir, atomic_write_json, build_manifest, file_sha256, read_json
from rdistill.config import Config, InferConfig, config_to_dict
from rdistill.data.dataset import DatasetInfo, load_dataset_info, pad_histories
from rdistill.data.schema import read_table
from rdistill.errors import ArtifactError, ConfigError
from rdistill.evaluate import mask_history
from rdistill.ray_runtime import ensure_ray
from rdistill.teacher.signals import ITEM_EMB_SCHEMA, TOPK_SCHEMA, hidden_column, hidden_schema, list_column

log = logging.getLogger(__name__)

# Settings that change what is written; pool size, batch size and threads only change how fast.
_OUTPUT_SETTINGS = ("splits", "top_k", "exclude_history", "hidden_layers")


@dataclass
class InferResult:
    signals_dir: Path
    skipped: bool  # true when signals/ already held this exact output
    rows: dict[str, int]  # split -> rows written
    seconds: float
    rows_per_second: float  # scored rows per second of Ray Data work (0 when skipped)


@torch.no_grad()
def teacher_signals_batch(teacher, history: torch.Tensor, item_table: torch.Tensor, top_k: int,
                          exclude_history: bool, hidden_layers: list[int]) -> dict[str, torch.Tensor]:
    """Signals of one batch of left-padded histories: top-K items/scores, user vectors, pooled hidden states.
    The one implementation behind the Ray Data actors and the single-process benchmark loop."""
    user, hidden = teacher.encode(history, hidden_layers)
    scores = teacher.logits(user, item_table)
    if exclude_history:
        mask_history(scores, history)
    top_scores, top_items = torch.topk(scores, top_k, dim=1)
    return {"topk_items": top_items, "topk_scores": top_scores, "user_emb": user,
            **{hidden_column(layer): state for layer, state in hidden.items()}}


def signals_table(row_id: pa.Array, signals: dict[str, torch.Tensor], hidden_layers: list[int]) -> pa.Table:
    """One Arrow table per batch: the top-K columns, then one column per hidden layer."""
    columns = {"row_id": row_id,
               "topk_items": list_column(signals["topk_items"].cpu().numpy().astype(np.int32), pa.int32()),
               "topk_scores": list_column(signals["topk_scores"].float().cpu().numpy(), pa.float32()),
               "user_emb": list_column(signals["user_emb"].float().cpu().numpy(), pa.float32())}
    for layer in hidden_layers:
        columns[hidden_column(layer)] = list_column(signals[hidden_column(layer)].float().cpu().numpy(), pa.float32())
    schema = pa.schema(list(TOPK_SCHEMA) + list(hidden_schema(hidden_layers))[1:])
    return pa.Table.from_pydict(columns, schema=schema)


class TeacherScorer:
    """The Ray Data callable class: loads the consolidated teacher once per actor, scores pyarrow batches."""

    def __init__(self, artifact_root: str, max_len: int, top_k: int, exclude_history: bool,
                 hidden_layers: list[int], torch_threads: int, use_gpu: bool):
        from rdistill.models.lm_teacher import load_teacher
        from rdistill.storage import open_root

        torch.set_num_threads(torch_threads)
        self.device = torch.device("cuda" if use_gpu else "cpu")
        # an actor may run on a node without the driver's files: a URI root is pulled into this node's mirror
        root = open_root(artifact_root)
        root.pull(layout.TEACHER_CHECKPOINT)
        self.teacher, _ = load_teacher(layout.ArtifactLayout(root.local).teacher_checkpoint_dir)
        self.teacher.to(self.device)
        self.item_table = self.teacher.item_embeddings().detach()
        self.max_len, self.top_k, self.exclude_history = max_len, top_k, exclude_history
        self.hidden_layers = list(hidden_layers)

    def __call__(self, batch: pa.Table) -> pa.Table:
        history = torch.from_numpy(pad_histories(batch.column("history"), self.max_len)).to(self.device)
        signals = teacher_signals_batch(self.teacher, history, self.item_table, self.top_k, self.exclude_history,
                                        self.hidden_layers)
        return signals_table(batch.column("row_id"), signals, self.hidden_layers)


# ------------------------------------------------------------------------------------------------- checks


def check_infer_inputs(config: Config):
    """Everything that can be wrong before an actor starts; returns (teacher, dataset info, checkpoint dir)."""
    from rdistill.models.lm_teacher import load_teacher

    paths = layout.ArtifactLayout(config.artifact_path())  # dataset and teacher pulled by the stage runner
    info = load_dataset_info(paths.dataset_dir)  # raises naming a missing dataset table
    for split in config.infer.splits:
        read_table(paths.dataset_dir, split)
    checkpoint_dir = paths.teacher_checkpoint_dir
    if not checkpoint_dir.is_dir():
        raise ArtifactError(f"{checkpoint_dir} does not exist: train a teacher first (`rdistill teacher-train`)")
    teacher, _ = load_teacher(checkpoint_dir)  # raises ArtifactError when the folder is not a teacher
    _check_teacher_fits_dataset(teacher, info, paths)
    _check_infer_settings(config.infer, teacher, info)
    return teacher, info, checkpoint_dir


def _check_teacher_fits_dataset(teacher, info: DatasetInfo, paths: layout.ArtifactLayout) -> None:
    """The teacher was trained on this dataset: same catalogue size and, when its manifest says, same item table."""
    checkpoint_dir = paths.teacher_checkpoint_dir
    if teacher.n_items != info.n_items:
        raise ArtifactError(f"the teacher in {checkpoint_dir} scores {teacher.n_items} items but "
                            f"{paths.dataset_dir} has {info.n_items}: it was trained on another dataset; retrain it "
                            "or point artifact_root at its dataset")
    manifest_path = checkpoint_dir / layout.MANIFEST
    if manifest_path.is_file():
        trained_on = read_json(manifest_path).get("inputs", {}).get("items", {}).get("sha256")
        if trained_on and trained_on != file_sha256(paths.table("items")):
            raise ArtifactError(f"the teacher in {checkpoint_dir} was trained on a different item table than "
                                f"{paths.table('items')} (sha256 differs): retrain it on this dataset")


def _check_infer_settings(infer: InferConfig, teacher, info: DatasetInfo) -> None:
    """infer.* against the teacher and the dataset: hidden layers that exist, a top-K a row can fill, GPUs."""
    n_layers = teacher.num_layers()
    too_deep = [layer for layer in infer.hidden_layers if layer > n_layers]
    if too_deep:
        raise ConfigError(f"infer.hidden_layers={infer.hidden_layers}: the teacher's backbone has {n_layers} "
                          f"layers (0 = embeddings .. {n_layers} = last), so {too_deep} do not exist")
    candidates = info.n_items - (info.max_len if infer.exclude_history else 0)
    if infer.top_k > candidates:
        raise ConfigError(f"infer.top_k={infer.top_k} exceeds the {candidates} items a row can rank "
                          f"({info.n_items} items" + (f" minus up to {info.max_len} history items)"
                                                      if infer.exclude_history else ")"))
    if infer.use_gpu and not torch.cuda.is_available() and _ray_gpus() == 0:
        raise ConfigError("infer.use_gpu=true but neither this machine nor the Ray cluster has a GPU")


def _ray_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0.0


def fingerprint(config: Config, checkpoint_dir: Path) -> str:
    """What the output depends on: teacher weights, dataset tables, output settings."""
    paths = layout.ArtifactLayout(config.artifact_path())
    relevant = {
        "checkpoint": file_sha256(checkpoint_dir / layout.WEIGHTS),
        "tables": {name: file_sha256(paths.table(name)) for name in ("items", *config.infer.splits)},
        "settings": config.infer.model_dump(mode="json", include=set(_OUTPUT_SETTINGS)),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def torch_threads(infer: InferConfig) -> int:
    return infer.torch_threads_per_actor or max(1, int(infer.cpus_per_actor))


# ------------------------------------------------------------------------------------------------- driver


def infer_teacher(config: Config, force: bool = False) -> InferResult:
    """Write signals/ for config.infer.splits, or skip when it already holds this exact output."""
    started = time.time()
    root = config.storage()
    paths = layout.ArtifactLayout(root.local)
    signals_dir = paths.signals_dir
    teacher, info, checkpoint_dir = check_infer_inputs(config)
    digest = fingerprint(config, checkpoint_dir)
    recorded = None if force else _recorded_manifest(root)
    if recorded is not None and recorded.get("fingerprint") == digest:
        log.info("signals in %s are up to date (same teacher, data and settings): skipping", signals_dir)
        return InferResult(signals_dir, True, recorded["counts"]["rows"], time.time() - started, 0.0)

    ensure_ray()
    rows: dict[str, int] = {}
    scoring_seconds = 0.0
    with atomic_dir(signals_dir) as staging:
        _write_item_embeddings(teacher, staging / layout.SIGNALS_ITEM_EMB_FILE)
        del teacher  # the actors load their own copy
        for split in config.infer.splits:
            split_started = time.time()
            rows[split] = _infer_split(config, split, info.max_len, staging)
            scoring_seconds += time.time() - split_started
            log.info("teacher signals for %s: %d rows in %.1fs", split, rows[split], time.time() - split_started)
        rows_per_second = sum(rows.values()) / max(scoring_seconds, 1e-9)
        manifest = _signals_manifest(config, paths, staging, info, rows, digest, rows_per_second, started)
        atomic_write_json(staging / layout.MANIFEST, manifest)
    return InferResult(signals_dir, False, rows, time.time() - started, rows_per_second)


def _recorded_manifest(root) -> dict[str, Any] | None:
    """signals/manifest.json, read where the root lives: deciding to skip needs no download of the signals."""
    recorded = root.read_bytes(layout.manifest_of(layout.SIGNALS))
    return None if recorded is None else json.loads(recorded)


def _signals_manifest(config: Config, paths: layout.ArtifactLayout, staging: Path, info: DatasetInfo,
                      rows: dict[str, int], digest: str, rows_per_second: float, started: float) -> dict[str, Any]:
    infer = config.infer
    return build_manifest(
        stage="teacher-infer", config=config_to_dict(config),
        inputs={"teacher": paths.teacher_checkpoint_dir / layout.WEIGHTS,
                **{name: paths.table(name) for name in ("items", *infer.splits)}},
        counts={"rows": rows, "items": info.n_items, "top_k": infer.top_k,
                "embedding_dim": int(_embedding_dim(staging / layout.SIGNALS_ITEM_EMB_FILE))},
        started_at=started,
        extra={"fingerprint": digest, "hidden_layers": infer.hidden_layers,
               "files": sorted(path.name for path in staging.iterdir()),
               "rows_per_second": rows_per_second},
    )


def _write_item_embeddings(teacher, path: Path) -> None:
    with torch.no_grad():
        table = teacher.item_embeddings()[1:].float().numpy()
    pq.write_table(pa.Table.from_pydict({
        "item_idx": pa.array(np.arange(1, len(table) + 1, dtype=np.int32)),
        "embedding": list_column(table, pa.float32()),
    }, schema=ITEM_EMB_SCHEMA), path)


def _embedding_dim(path: Path) -> int:
    first = pq.read_table(path).column("embedding")[0].as_py()
    return len(first)


def _infer_split(config: Config, split: str, max_len: int, staging: Path) -> int:
    """Stream one split through the actor pool into topk[_split].parquet (+ hidden[_split].parquet)."""
    import ray.data

    root = config.storage()
    table_path = layout.ArtifactLayout(root.local).table(split).resolve()  # pulled by check_infer_inputs
    total = pq.ParquetFile(table_path).metadata.num_rows
    # Ray Data's read tasks may run on any node: a URI root is read from the object store itself
    dataset = _scored_rows(config, *root.location(layout.table(split)), max_len)
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars, context.execution_options.preserve_order
    context.enable_progress_bars = False  # one bar below, of rows written, is enough
    context.execution_options.preserve_order = True  # output rows in the split's order: deterministic files
    try:
        written = _write_signals(dataset, config.infer, split, staging, total)
    finally:
        context.enable_progress_bars, context.execution_options.preserve_order = saved
    if written != total:
        raise RuntimeError(f"teacher inference wrote {written} rows for {table_path} but it has {total}")
    return written


def _scored_rows(config: Config, read_path: str, filesystem, max_len: int):
    """The Ray Dataset of a split table's signals: read, cut into blocks, scored by the actor pool (lazy)."""
    import ray.data

    infer = config.infer
    return (
        ray.data.read_parquet(read_path, filesystem=filesystem, columns=["row_id", "history"])
        # one Parquet row group is one block: cut it so that every actor of the pool gets work
        .repartition(target_num_rows_per_block=infer.batch_size)
        .map_batches(
            TeacherScorer,
            fn_constructor_kwargs={"artifact_root": config.worker_artifact_root(), "max_len": max_len,
                                   "top_k": infer.top_k, "exclude_history": infer.exclude_history,
                                   "hidden_layers": infer.hidden_layers, "torch_threads": torch_threads(infer),
                                   "use_gpu": infer.use_gpu},
            batch_size=infer.batch_size, batch_format="pyarrow", concurrency=infer.num_actors,
            num_cpus=infer.cpus_per_actor, num_gpus=1 if infer.use_gpu else 0,
        )
    )


def _write_signals(dataset, infer: InferConfig, split: str, staging: Path, total: int) -> int:
    """Append the scored batches, in order, to the split's signal files; returns the rows written."""
    from tqdm.auto import tqdm

    topk_writer = pq.ParquetWriter(staging / layout.signals_topk_file(split), TOPK_SCHEMA)
    hidden = hidden_schema(infer.hidden_layers)
    hidden_writer = (pq.ParquetWriter(staging / layout.signals_hidden_file(split), hidden)
                     if infer.hidden_layers else None)
    written = 0
    try:
        with tqdm(total=total, desc=f"teacher signals ({split})", unit="rows", disable=not infer.progress) as bar:
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                topk_writer.write_table(batch.select(TOPK_SCHEMA.names).cast(TOPK_SCHEMA))
                if hidden_writer is not None:
                    hidden_writer.write_table(batch.select(hidden.names).cast(hidden))
                written += batch.num_rows
                bar.update(batch.num_rows)
    finally:
        topk_writer.close()
        if hidden_writer is not None:
            hidden_writer.close()
    return written


def inference_summary(result: InferResult) -> dict[str, Any]:
    return {"signals_dir": str(result.signals_dir), "skipped": result.skipped, "rows": result.rows,
            "seconds": round(result.seconds, 1), "rows_per_second": round(result.rows_per_second, 1)}
