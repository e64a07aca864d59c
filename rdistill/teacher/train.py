"""`rdistill teacher-train`: fine-tune the language-model teacher with Ray Train and DeepSpeed.

The driver checks every input before any worker starts, encodes the item texts once, and launches a
TorchTrainer. Each worker builds the teacher, wraps it in a DeepSpeed engine (ZeRO stage from config, a torch
AdamW with two learning rates, warm-up + cosine, clipping, gradient accumulation), reads its shard of the
training rows from a Ray Dataset, validates every epoch (NDCG@10 over its slice of the validation users,
gathered across workers) and reports a DeepSpeed checkpoint. Ray keeps the best checkpoints by validation
NDCG@10 and restarts a failed run from the latest one. At the end the driver consolidates the best checkpoint
into fp32 safetensors (teacher/checkpoint/), keeps its DeepSpeed shards (teacher/ds_checkpoint/) and evaluates
the test split once.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from rdistill import layout
from rdistill.artifacts import atomic_write_json, build_manifest, file_sha256
from rdistill.config import Config, TeacherConfig, config_to_dict
from rdistill.data.dataset import (
    DatasetInfo,
    SplitTensors,
    load_dataset_info,
    load_split,
    pad_histories,
    sequence_window_rows,
)
from rdistill.data.schema import SPLITS, read_table
from rdistill.errors import ConfigError
from rdistill.metrics import ranking_metrics
from rdistill.ray_runtime import ensure_ray
from rdistill.seeding import seed_everything

log = logging.getLogger(__name__)

METRIC = "valid_ndcg_at_10"
FAULT_MARKER = PurePosixPath(layout.TEACHER_FAULT_MARKER).name  # its file name in teacher/
DS_MODEL_STATES = "mp_rank_00_model_states.pt"  # DeepSpeed's name for the module weights of a ZeRO-0 checkpoint


@dataclass
class TeacherResult:
    checkpoint_dir: Path
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    global_steps: int
    seconds: float
    worker_node_ids: list[str] = field(default_factory=list)  # Ray node of each worker, by rank


# ------------------------------------------------------------------------------------------ checks (driver)


def deepspeed_config(config: Config) -> dict[str, Any]:
    """The DeepSpeed config the workers use: generated from teacher.* and merged with teacher.deepspeed."""
    teacher = config.teacher
    generated: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": teacher.batch_size,
        "gradient_accumulation_steps": teacher.gradient_accumulation_steps,
        "gradient_clipping": teacher.grad_clip,
        "zero_optimization": {"stage": teacher.zero_stage},
        # a plain torch AdamW runs on any device; DeepSpeed only vouches for its own optimizers by default
        "zero_allow_untested_optimizer": True,
        "fp16": {"enabled": False},
        "bf16": {"enabled": False},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return _deep_merge(generated, teacher.deepspeed)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    return merged


def check_teacher_inputs(config: Config) -> Path:
    """Everything that can be wrong before a worker starts: tables, model path, DeepSpeed vs. machine."""
    from rdistill.models.lm_teacher import resolve_backbone_path

    dataset_dir = layout.ArtifactLayout(config.artifact_path()).dataset_dir  # pulled by the stage runner
    for name in ("items", *SPLITS):
        read_table(dataset_dir, name)  # raises ArtifactError naming the missing or malformed table
    backbone_path = resolve_backbone_path(config.teacher.model)
    if config.teacher.objective == "all_positions" and not config.teacher.causal:
        from transformers import AutoConfig

        from rdistill.models.lm_teacher import is_decoder_config

        if not is_decoder_config(AutoConfig.from_pretrained(str(backbone_path), local_files_only=True)):
            raise ConfigError(f"teacher.objective=all_positions needs a causal teacher, but {config.teacher.model!r} "
                              "is an encoder: set teacher.causal=true (a causal attention mask), or use a decoder")
    ds_config = deepspeed_config(config)
    if not config.teacher.use_gpu:
        for precision in ("fp16", "bf16"):
            if ds_config.get(precision, {}).get("enabled"):
                raise ConfigError(f"teacher.deepspeed.{precision}.enabled=true needs GPUs, but teacher.use_gpu is "
                                  "false: mixed precision is not supported on CPU workers; disable it")
        if ds_config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device") == "nvme":
            raise ConfigError("teacher.deepspeed.zero_optimization.offload_optimizer.device=nvme needs GPUs")
    if config.teacher.mode == "text" and config.teacher.pooling == "mean":
        log.info("text mode with mean pooling: the user state averages the prompt's tokens")
    return dataset_dir


def item_text_vectors(config: Config, dataset_dir: Path) -> np.ndarray:
    """The backbone's encoding of every item's text, computed once and cached under teacher/."""
    from rdistill.models.lm_teacher import encode_texts, item_texts, load_backbone

    teacher = config.teacher
    items = read_table(dataset_dir, "items")
    root = config.storage()
    cache_name = layout.item_text_vectors_cache(_text_vectors_key(teacher, dataset_dir))
    cache = layout.ArtifactLayout(root.local).path(cache_name)
    root.pull(cache_name)
    if cache.is_file():
        return np.load(cache)
    started = time.time()
    backbone, tokenizer = load_backbone(teacher.model)
    texts = item_texts(items)
    encoded = encode_texts(backbone, tokenizer, texts[1:], teacher.item_text_max_tokens, progress=True).numpy()
    vectors = np.concatenate([np.zeros((1, encoded.shape[1]), dtype=np.float32), encoded.astype(np.float32)])
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = cache.with_suffix(".tmp.npy")
    np.save(staging, vectors)
    staging.rename(cache)
    root.push(cache_name)
    log.info("encoded %d item texts in %.1fs (cached at %s)", len(texts) - 1, time.time() - started, cache)
    return vectors


def _text_vectors_key(teacher: TeacherConfig, dataset_dir: Path) -> str:
    """What the item-text vectors depend on: the items table, the token budget and the backbone's weights."""
    from rdistill.models.lm_teacher import resolve_backbone_path

    key = f"{file_sha256(dataset_dir / layout.table_file('items'))[:16]}-{teacher.item_text_max_tokens}"
    backbone_path = resolve_backbone_path(teacher.model)
    weights = sorted(backbone_path.glob("*.safetensors")) or sorted(backbone_path.glob("*.bin"))
    if weights:
        key += f"-{file_sha256(weights[0])[:16]}"
    return key


def prebuild_deepspeed_ops() -> None:
    """Compile DeepSpeed's CPU shared-memory collective once, here, before the workers start.

    Its first build takes about a minute and is cached under TORCH_EXTENSIONS_DIR (default
    ~/.cache/torch_extensions). Building it in the driver keeps that minute out of the workers, where two
    processes would otherwise race for the same build, and makes later runs' times predictable."""
    started = time.time()
    from deepspeed.comm.torch import build_shm_op

    build_shm_op()
    log.info("DeepSpeed CPU ops ready in %.1fs", time.time() - started)


# -------------------------------------------------------------------------------------------- worker loop


def _warmup_cosine(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _distributed_ranks(model, valid: SplitTensors, batch_size: int, rank: int, world: int,
                       device: torch.device) -> np.ndarray:
    """Target ranks of all validation rows: each worker scores its slice, then all slices are gathered.

    Every worker runs the same number of forward passes (an empty slice scores a stand-in row and drops it),
    because under ZeRO-3 each forward gathers parameters from all workers."""
    import torch.distributed as dist

    from rdistill.evaluate import batch_ranks

    mine = torch.arange(rank, len(valid), world)
    batches = math.ceil(math.ceil(len(valid) / world) / batch_size)
    ranks = []
    with torch.no_grad():
        for b in range(batches):
            index = mine[b * batch_size:(b + 1) * batch_size]
            stand_in = len(index) == 0
            if stand_in:
                index = torch.tensor([0])
            batch = batch_ranks(model.scores, valid.history[index].to(device), valid.target[index], True)
            if not stand_in:
                ranks.append(batch)
    local = torch.cat(ranks).numpy() if ranks else np.empty(0, dtype=np.int64)
    if world == 1:
        return local
    gathered: list[np.ndarray | None] = [None] * world
    dist.all_gather_object(gathered, local)
    return np.concatenate(gathered)


def _worker_node_ids(world: int) -> list[str]:
    """The Ray node id of every worker, by rank: the record of where a run really ran (placement_strategy)."""
    import ray
    import torch.distributed as dist

    mine = ray.get_runtime_context().get_node_id()
    if world == 1:
        return [mine]
    gathered: list[str | None] = [None] * world
    dist.all_gather_object(gathered, mine)
    return [str(node_id) for node_id in gathered]


@dataclass(frozen=True)
class _Worker:
    """One worker's place in the group and what its epochs share."""

    config: Config
    rank: int
    world: int
    max_len: int
    micro_batches: int  # per epoch, the same on every worker
    root: Any  # the artifact root as this worker's node sees it (rdistill.storage.ArtifactRoot)


@dataclass
class _EpochStats:
    """Training loss and throughput of one epoch on one worker."""

    loss_sum: float = 0.0
    seen: int = 0  # micro-batches
    timed_from: float | None = None  # the end of the first step: data pipeline and warm-up are not timed
    timed_seconds: float = 0.0

    def add(self, loss: float) -> None:
        self.loss_sum, self.seen = self.loss_sum + loss, self.seen + 1
        if self.seen == 1:
            self.timed_from = time.time()

    def stop_clock(self) -> None:
        self.timed_seconds = time.time() - self.timed_from if self.timed_from else 0.0

    def mean_loss(self) -> float:
        return self.loss_sum / max(self.seen, 1)

    def samples_per_second(self, batch_size: int) -> float:
        return (self.seen - 1) * batch_size / self.timed_seconds if self.timed_seconds > 0 else 0.0


def train_loop_per_worker(loop: dict[str, Any]) -> None:
    """One Ray Train worker: a DeepSpeed engine over the teacher and this worker's shard of the training rows.
    Each epoch it trains, ranks its slice of the validation users and reports metrics with a checkpoint."""
    import ray.train

    from rdistill.storage import open_root

    config = Config.model_validate(loop["config"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(config.teacher.torch_threads_per_worker or max(1, int(config.teacher.cpus_per_worker)))
    seed_everything(config.seed)  # same initial weights everywhere (DeepSpeed also broadcasts rank 0's)
    micro_batches = _micro_batches_per_epoch(config.teacher, loop["train_rows"], world)
    engine = _deepspeed_engine(config, loop, micro_batches)
    state = _resumed_state(engine, rank)
    node_ids = _worker_node_ids(world)
    shard = ray.train.get_dataset_shard("train")
    # on another node a URI root is opened there: the fault marker lives remotely
    worker = _Worker(config, rank, world, loop["max_len"], micro_batches, open_root(loop["artifact_root"]))
    for epoch in range(state["epoch"] + 1, config.teacher.epochs + 1):
        started = time.time()
        stats = _train_epoch(engine, shard, epoch, worker)
        valid_metrics = _validation_metrics(engine, loop["valid"], worker)
        state = _early_stopping_state(state, epoch, valid_metrics[METRIC])
        metrics = {"epoch": epoch, "global_step": engine.global_steps, "train_loss": stats.mean_loss(),
                   "epoch_seconds": time.time() - started,
                   "worker_samples_per_second": stats.samples_per_second(config.teacher.batch_size),
                   "worker_node_ids": node_ids, **valid_metrics}
        _report_with_checkpoint(engine, metrics, state)
        if state["stale"] >= config.teacher.patience:
            break


def _micro_batches_per_epoch(teacher_cfg: TeacherConfig, train_rows: int, world: int) -> int:
    """Every worker runs this many, so DeepSpeed's collectives line up (the shards may differ by a row)."""
    micro_batches = train_rows // world // teacher_cfg.batch_size
    if teacher_cfg.max_steps_per_epoch:
        micro_batches = min(micro_batches, teacher_cfg.max_steps_per_epoch * teacher_cfg.gradient_accumulation_steps)
    return micro_batches


def _deepspeed_engine(config: Config, loop: dict[str, Any], micro_batches: int):
    """The teacher in a DeepSpeed engine: AdamW with one learning rate for the backbone and one for the head,
    warm-up + cosine over the whole run."""
    import deepspeed

    from rdistill.models.lm_teacher import build_teacher

    teacher_cfg = config.teacher
    teacher, _ = build_teacher(teacher_cfg.architecture(), loop["items"], loop["max_len"],
                               torch.tensor(loop["item_text_vectors"]))  # a copy: Ray hands a read-only array
    backbone_params = [p for p in teacher.backbone.parameters() if p.requires_grad]
    backbone_ids = {id(p) for p in backbone_params}
    head_params = [p for p in teacher.parameters() if p.requires_grad and id(p) not in backbone_ids]
    optimizer = torch.optim.AdamW(
        [{"params": backbone_params, "lr": teacher_cfg.lr_backbone},
         {"params": head_params, "lr": teacher_cfg.lr_head}],
        weight_decay=teacher_cfg.weight_decay,
    )
    steps_per_epoch = max(1, micro_batches // teacher_cfg.gradient_accumulation_steps)
    total_steps = steps_per_epoch * teacher_cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_cosine(total_steps, max(1, int(teacher_cfg.warmup_ratio * total_steps))))
    engine, _, _, _ = deepspeed.initialize(model=teacher, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=loop["deepspeed"])
    return engine


def _resumed_state(engine, rank: int) -> dict[str, Any]:
    """Epoch and early-stopping state: a fresh start, or, after a restart, the latest reported checkpoint's
    (loaded into the engine, which also restores its optimizer, scheduler and step counter)."""
    import ray.train

    state = {"epoch": 0, "best": float("-inf"), "stale": 0}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            _, client_state = engine.load_checkpoint(folder)
        state.update(client_state["rdistill"])
        log.info("rank %d resumed after epoch %d at step %d", rank, state["epoch"], engine.global_steps)
    return state


def _train_epoch(engine, shard, epoch: int, worker: _Worker) -> _EpochStats:
    """One pass over this worker's shard, stopped after exactly worker.micro_batches micro-batches."""
    teacher_cfg = worker.config.teacher
    engine.train()
    stats = _EpochStats()
    all_positions = teacher_cfg.objective == "all_positions"
    batches = shard.iter_batches(batch_size=teacher_cfg.batch_size, batch_format="pyarrow", drop_last=True,
                                 local_shuffle_buffer_size=max(4 * teacher_cfg.batch_size, 1000),
                                 local_shuffle_seed=worker.config.seed + epoch)
    for micro_step, table in enumerate(batches):
        if micro_step >= worker.micro_batches:
            break  # every worker stops at the same count, or the collectives would wait forever
        history = torch.from_numpy(pad_histories(table.column("history"), worker.max_len)).to(engine.device)
        target = torch.from_numpy(table.column("target").to_numpy().astype(np.int64)).to(engine.device)
        loss = engine(history, target, all_positions=all_positions)
        engine.backward(loss)
        engine.step()
        stats.add(loss.item())
        _print_progress(stats, epoch, worker)
        _inject_failure_once(engine, worker)
    stats.stop_clock()
    return stats


def _print_progress(stats: _EpochStats, epoch: int, worker: _Worker) -> None:
    """About ten lines per epoch from rank 0 (Ray forwards worker stdout to the driver's terminal)."""
    if worker.rank == 0 and stats.seen % max(1, worker.micro_batches // 10) == 0:
        batch_size = worker.config.teacher.batch_size
        rate = (stats.seen - 1) * batch_size * worker.world / max(time.time() - stats.timed_from, 1e-9)
        print(f"teacher epoch {epoch}: {stats.seen}/{worker.micro_batches} micro-batches, mean loss "
              f"{stats.loss_sum / stats.seen:.4f}, ~{rate:.0f} samples/s over {worker.world} workers", flush=True)


def _inject_failure_once(engine, worker: _Worker) -> None:
    """teacher.fail_once_at_step: rank 0 fails at that step, once per artifact root (the marker records it), so
    that a test sees Ray restart the group and resume from the latest checkpoint."""
    fail_at = worker.config.teacher.fail_once_at_step
    if (fail_at and engine.global_steps == fail_at
            and worker.rank == 0 and not worker.root.exists(layout.TEACHER_FAULT_MARKER)):
        worker.root.write_bytes(layout.TEACHER_FAULT_MARKER, f"failed at step {engine.global_steps}\n".encode())
        raise RuntimeError(f"injected failure at global step {engine.global_steps} (teacher.fail_once_at_step)")


def _validation_metrics(engine, valid: SplitTensors, worker: _Worker) -> dict[str, float]:
    engine.eval()
    ranks = _distributed_ranks(engine.module, valid, worker.config.teacher.eval_batch_size, worker.rank,
                               worker.world, engine.device)
    return {f"valid_{key}": value for key, value in ranking_metrics(ranks, [10, 20]).items()}


def _early_stopping_state(state: dict[str, Any], epoch: int, score: float) -> dict[str, Any]:
    improved = score > state["best"]
    return {"epoch": epoch, "best": max(state["best"], score), "stale": 0 if improved else state["stale"] + 1}


def _report_with_checkpoint(engine, metrics: dict[str, Any], state: dict[str, Any]) -> None:
    """Every worker writes its DeepSpeed shards; Ray merges the workers' folders into one checkpoint."""
    import ray.train

    with tempfile.TemporaryDirectory() as folder:
        engine.save_checkpoint(folder, tag=f"epoch{state['epoch']}", client_state={"rdistill": state})
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


# ----------------------------------------------------------------------------------------- driver: run it


@dataclass
class _DriverInputs:
    """What the driver reads once, before Ray starts, and ships to every worker."""

    dataset_dir: Path
    info: DatasetInfo
    items: pa.Table
    valid: SplitTensors  # the rows the workers rank each epoch (teacher.max_eval_rows of them, when set)
    item_text_vectors: np.ndarray


def train_teacher(config: Config) -> TeacherResult:
    """Run the whole teacher stage; returns where the consolidated teacher is and its metrics."""
    from rdistill.evaluate import evaluate_scorer
    from rdistill.models.lm_teacher import save_teacher

    started = time.time()
    teacher_cfg = config.teacher
    inputs = _driver_inputs(config)
    if not teacher_cfg.use_gpu:
        prebuild_deepspeed_ops()
    root = config.storage()
    root.delete(layout.TEACHER_FAULT_MARKER)
    result = _fit(config, inputs, root)
    best_checkpoint, best_metrics = max(result.best_checkpoints, key=lambda pair: pair[1][METRIC])
    paths = layout.ArtifactLayout(root.local)
    teacher, tokenizer = _consolidated_teacher(config, inputs, best_checkpoint, paths.teacher_ds_checkpoint_dir)

    # the one look at the test split, with the weights selected on validation
    test = evaluate_scorer(teacher.scores, load_split(inputs.dataset_dir, "test", inputs.info.max_len), config.eval.ks,
                           teacher_cfg.eval_batch_size)
    valid_full = evaluate_scorer(teacher.scores, inputs.valid, config.eval.ks, teacher_cfg.eval_batch_size)
    checkpoint_dir = paths.teacher_checkpoint_dir
    save_teacher(teacher, tokenizer, checkpoint_dir)
    node_ids = list(result.metrics.get("worker_node_ids") or [])  # of the last epoch's workers
    atomic_write_json(checkpoint_dir / layout.METRICS, {
        "best_epoch": best_metrics["epoch"], "global_steps": int(result.metrics["global_step"]),
        "valid": valid_full, "test": test, "history": _reported_history(result),
        "num_parameters": teacher.num_parameters(), "worker_node_ids": node_ids,
    })
    atomic_write_json(checkpoint_dir / layout.MANIFEST,
                      _teacher_manifest(config, inputs.dataset_dir, result, teacher, node_ids, started))
    return TeacherResult(checkpoint_dir=checkpoint_dir, best_epoch=int(best_metrics["epoch"]), valid=valid_full,
                         test=test, global_steps=int(result.metrics["global_step"]), seconds=time.time() - started,
                         worker_node_ids=node_ids)


def _driver_inputs(config: Config) -> _DriverInputs:
    dataset_dir = check_teacher_inputs(config)
    info = load_dataset_info(dataset_dir)
    items = read_table(dataset_dir, "items")
    valid = load_split(dataset_dir, "valid", info.max_len)
    if config.teacher.max_eval_rows:
        valid = valid.select(torch.arange(min(len(valid), config.teacher.max_eval_rows)))
    return _DriverInputs(dataset_dir, info, items, valid, item_text_vectors(config, dataset_dir))


def _fit(config: Config, inputs: _DriverInputs, root):
    """Run the TorchTrainer to the end (Ray restarts failed workers); Ray keeps the best checkpoints by METRIC."""
    import ray.data
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    teacher_cfg = config.teacher
    # with the dashboard (when installed): Ray Train's placement-group cleaner polls the state API it serves
    ensure_ray()
    ray.data.DataContext.get_current().enable_progress_bars = False  # one line per epoch is enough in logs
    train_rows, train_row_count = _training_rows(config, inputs, root)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": config_to_dict(config),
            "items": inputs.items,
            "item_text_vectors": inputs.item_text_vectors,
            "valid": inputs.valid,
            "max_len": inputs.info.max_len,
            "train_rows": train_row_count,
            "deepspeed": deepspeed_config(config),
            "artifact_root": config.worker_artifact_root(),
        },
        scaling_config=ScalingConfig(num_workers=teacher_cfg.num_workers, use_gpu=teacher_cfg.use_gpu,
                                     resources_per_worker={"CPU": teacher_cfg.cpus_per_worker},
                                     placement_strategy=teacher_cfg.placement_strategy),
        torch_config=TorchConfig(backend="nccl" if teacher_cfg.use_gpu else "gloo"),
        datasets={"train": train_rows},
        run_config=_run_config(config, inputs.dataset_dir, root),
    )
    result = trainer.fit()
    if not result.best_checkpoints:
        raise RuntimeError(f"teacher training reported no checkpoint (error: {result.error})")
    return result


def _training_rows(config: Config, inputs: _DriverInputs, root):
    """(Ray Dataset of the training rows, its row count)."""
    import ray.data

    train_file = inputs.dataset_dir / layout.table_file("train")
    if config.teacher.objective == "all_positions":
        # a few rows per user, each read at every position (see sequence_windows): chosen here, shipped as a table
        table = pq.read_table(train_file, columns=["user_idx", "history", "target"])
        user_idx = torch.from_numpy(table.column("user_idx").to_numpy().astype(np.int64))
        rows = sequence_window_rows(user_idx, inputs.info.max_len).numpy()
        return ray.data.from_arrow(table.take(rows).select(["history", "target"])), len(rows)
    # a URI root is read by Ray Data's tasks straight from the object store, on whichever node they run
    train_path, filesystem = root.location(layout.table("train"))
    train_rows = ray.data.read_parquet(train_path, filesystem=filesystem, columns=["history", "target"])
    return train_rows, pq.ParquetFile(train_file).metadata.num_rows  # footer only


def _run_config(config: Config, dataset_dir: Path, root):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    teacher_cfg = config.teacher
    # Ray Train checkpoints go where the root lives (for a URI, the object store itself): workers on any node
    # upload them there, and a rerun on another machine finds the run by its name and resumes from its latest
    storage_path, storage_filesystem = root.location(layout.TEACHER_RAY)
    return RunConfig(
        name=run_name(config, dataset_dir),
        storage_path=storage_path, storage_filesystem=storage_filesystem,
        checkpoint_config=CheckpointConfig(num_to_keep=teacher_cfg.keep_checkpoints,
                                           checkpoint_score_attribute=METRIC, checkpoint_score_order="max"),
        failure_config=FailureConfig(max_failures=teacher_cfg.max_failures),
    )


def run_name(config: Config, dataset_dir: Path) -> str:
    """Ray restores a run found under the same name, so the name is a hash of what the run depends on: the same
    config on the same data continues (e.g. after the driver was killed), anything else starts afresh."""
    import hashlib
    import json

    relevant = {"seed": config.seed, "teacher": config.teacher.model_dump(mode="json", exclude={"fail_once_at_step"}),
                "items": file_sha256(dataset_dir / layout.table_file("items")),
                "train": file_sha256(dataset_dir / layout.table_file("train"))}
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]
    return f"teacher-train-{digest}"


def _consolidated_teacher(config: Config, inputs: _DriverInputs, checkpoint, ds_checkpoint_dir: Path):
    """(teacher in eval mode, tokenizer) with the checkpoint's weights merged into fp32; the checkpoint's
    DeepSpeed shards are kept in ds_checkpoint_dir."""
    from rdistill.models.lm_teacher import build_teacher

    teacher, tokenizer = build_teacher(config.teacher.architecture(), inputs.items, inputs.info.max_len,
                                       torch.from_numpy(inputs.item_text_vectors))
    with checkpoint.as_directory() as folder:
        state = _consolidated_state_dict(Path(folder), config.teacher.zero_stage)
        missing, unexpected = teacher.load_state_dict(state, strict=False)
        # frozen weights (items mode: the unused token embeddings) keep their pre-trained values
        frozen = {name for name, param in teacher.named_parameters() if not param.requires_grad}
        if unexpected or set(missing) - {"item_text_vectors"} - frozen:
            raise RuntimeError(f"checkpoint does not match the teacher: missing {missing}, unexpected {unexpected}")
        shutil.rmtree(ds_checkpoint_dir, ignore_errors=True)
        shutil.copytree(folder, ds_checkpoint_dir)
    return teacher.eval(), tokenizer


def _consolidated_state_dict(checkpoint_dir: Path, zero_stage: int) -> dict[str, torch.Tensor]:
    """fp32 weights from a DeepSpeed checkpoint folder (ZeRO shards merged), on the CPU, without workers."""
    tag = (checkpoint_dir / layout.TEACHER_DS_MARKER).read_text().strip()
    if zero_stage == 0:
        states = torch.load(checkpoint_dir / tag / DS_MODEL_STATES, map_location="cpu", weights_only=False)
        return states["module"]
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)


def _teacher_manifest(config: Config, dataset_dir: Path, result, teacher, node_ids: list[str],
                      started: float) -> dict[str, Any]:
    return build_manifest(
        stage="teacher-train", config=config_to_dict(config),
        inputs={name: dataset_dir / layout.table_file(name) for name in ("items", *SPLITS)},
        counts={"epochs_run": int(result.metrics["epoch"]), "global_steps": int(result.metrics["global_step"]),
                "num_parameters": teacher.num_parameters(), "workers": config.teacher.num_workers,
                "worker_nodes": len(set(node_ids))},
        started_at=started,
        extra={"deepspeed": deepspeed_config(config)},
    )


def _reported_history(result) -> list[dict[str, Any]]:
    try:
        frame = result.metrics_dataframe
    except Exception:  # not every Ray Train version keeps it
        return []
    if frame is None:
        return []
    keep = [c for c in frame.columns if c in ("epoch", "global_step", "train_loss", "epoch_seconds",
                                              "worker_samples_per_second")
            or c.startswith("valid_")]
    return frame[keep].to_dict(orient="records")
