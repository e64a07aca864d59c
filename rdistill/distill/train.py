"""One student training run, with no Ray in it: the core that the CLI, the tests and Ray Tune trials all call.

Seeded, Adam, full-softmax cross-entropy, early stopping on a validation metric with patience; the best weights
are kept, saved as safetensors with their model config, and the test split is evaluated exactly once, at the end,
with those weights.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rdistill.artifacts import MANIFEST_NAME, ArtifactLayout, atomic_write_bytes, atomic_write_json, build_manifest
from rdistill.config import Config, config_to_dict
from rdistill.errors import ConfigError
from rdistill.data.dataset import SplitTensors, load_dataset_info, load_split, sequence_windows
from rdistill.evaluate import evaluate_model
from rdistill.models import SequentialRecommender, build_student, save_student
from rdistill.seeding import seed_everything  # noqa: F401  (also imported from here by older callers)

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
TRAIN_STATE_FILE = "train_state.pt"


@dataclass
class TrainState:
    """Where a run stands after an epoch, all a later process needs to go on exactly as if it had not stopped:
    weights, optimizer, the best epoch so far (for early stopping and the final weights), and the random state."""

    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    best_metric: float
    best_epoch: int
    best_valid: dict[str, float]
    best_model: dict[str, torch.Tensor] | None  # None when the best epoch is this one: `model` holds its weights
    history: list[dict[str, Any]]
    epoch_seconds: list[float]
    rng: dict[str, Any]

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        torch.save(dataclasses.asdict(self), buffer)
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> TrainState:
        return cls(**torch.load(path, weights_only=True))  # tensors, numbers and lists only: nothing to execute


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {"generator": generator.get_state(), "torch": torch.get_rng_state(), "random": random.getstate(),
            "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]]}


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    random.setstate(state["random"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))


@dataclass
class EpochReport:
    """What the per-epoch callback sees: validation metrics, the model (to checkpoint it), and the run's state."""

    epoch: int
    metrics: dict[str, float]  # train_loss (+ its parts) and the validation metrics of this epoch
    improved: bool  # the selection metric is the best so far
    model: SequentialRecommender
    state: Callable[[], TrainState]  # built on request: a copy of everything needed to resume after this epoch


# Called after every epoch; returning True stops training (e.g. a Ray Tune scheduler stopped the trial).
EpochCallback = Callable[[EpochReport], bool | None]


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    valid: dict[str, float]  # validation metrics of the selected (best) epoch
    test: dict[str, float] | None  # None when evaluate_test=False
    epochs_run: int
    seconds_per_epoch: float
    num_parameters: int


def default_run_name(config: Config) -> str:
    return config.train.run_name or f"{config.student.name}-seed{config.seed}"


def train_student(
    config: Config,
    run_dir: Path | None = None,
    on_epoch_end: EpochCallback | None = None,
    evaluate_test: bool = True,
    resume: TrainState | None = None,
) -> TrainResult:
    """Train config.student on the prepared dataset under config.artifact_root; write students/<run>/.

    `resume` (a TrainState an earlier run's callback saved) continues that run after its last epoch: a Ray Tune
    trial restored after an interruption."""
    started = time.time()
    train_cfg, eval_cfg = config.train, config.eval
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    generator = seed_everything(config.seed)

    root = config.storage()
    layout = ArtifactLayout(root.local)
    root.pull(layout.dataset_dir)
    info = load_dataset_info(layout.dataset_dir)
    train = load_split(layout.dataset_dir, "train", info.max_len)
    valid = load_split(layout.dataset_dir, "valid", info.max_len)
    run_dir = Path(run_dir) if run_dir is not None else layout.student_dir(default_run_name(config))

    model = _build_model(config, layout, info)
    objective = resolve_objective(train_cfg.objective, model)
    signals = load_train_signals(config, train, info) if config.distill.uses_teacher() else None
    loss_fn = DistillationObjective(model, objective, config.distill, signals, generator, train_cfg.loss)
    if objective == "all_positions":
        train = sequence_windows(train)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    log.info("training %s (%d parameters, %s objective%s) on %d rows, %d items", model.name, model.num_parameters(),
             objective, ", distilled" if signals is not None else "", len(train), info.n_items)

    best_metric, best_epoch, best_state, best_valid = float("-inf"), 0, None, {}
    history: list[dict[str, Any]] = []
    epoch_seconds: list[float] = []
    first_epoch = 1
    if resume is not None:
        model.load_state_dict(resume.model)
        optimizer.load_state_dict(resume.optimizer)
        _set_rng_state(resume.rng, generator)
        best_metric, best_epoch, best_valid = resume.best_metric, resume.best_epoch, resume.best_valid
        best_state = resume.best_model if resume.best_model is not None else resume.model  # loaded by copy above
        history, epoch_seconds = resume.history, resume.epoch_seconds
        # a run whose patience ran out at its last epoch had ended: nothing is left to train
        first_epoch = resume.epoch + 1 if resume.epoch - best_epoch < train_cfg.patience else train_cfg.epochs + 1
        log.info("resuming after epoch %d (best so far: epoch %d, %s %.4f)", resume.epoch, best_epoch,
                 eval_cfg.select_metric, best_metric)

    def snapshot(epoch: int) -> Callable[[], TrainState]:
        return lambda: TrainState(epoch, copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()),
                                  best_metric, best_epoch, dict(best_valid),
                                  None if best_epoch == epoch else copy.deepcopy(best_state),
                                  copy.deepcopy(history), list(epoch_seconds), _rng_state(generator))

    for epoch in range(first_epoch, train_cfg.epochs + 1):
        epoch_start = time.time()
        losses = _train_one_epoch(model, loss_fn, optimizer, train, train_cfg.batch_size, train_cfg.grad_clip,
                                  generator, progress=train_cfg.progress, description=f"epoch {epoch}")
        train_loss = losses["train_loss"]
        epoch_seconds.append(time.time() - epoch_start)
        valid_metrics = evaluate_model(model, valid, eval_cfg.ks, train_cfg.eval_batch_size, eval_cfg.exclude_history)
        history.append({"epoch": epoch, **losses, "seconds": epoch_seconds[-1], **valid_metrics})
        metric = valid_metrics[eval_cfg.select_metric]
        improved = metric > best_metric
        if improved:
            best_metric, best_epoch, best_valid = metric, epoch, valid_metrics
            best_state = copy.deepcopy(model.state_dict())
        log.info("epoch %d: loss %.4f, valid %s %.4f%s", epoch, train_loss, eval_cfg.select_metric, metric,
                 " (best)" if improved else "")
        stop_requested = on_epoch_end(EpochReport(epoch, {**losses, **valid_metrics}, improved, model,
                                                  snapshot(epoch))) if on_epoch_end else False
        if stop_requested or epoch - best_epoch >= train_cfg.patience:
            break

    model.load_state_dict(best_state)
    test_metrics = None
    if evaluate_test:  # the one and only look at the test split, with the weights selected on validation
        test = load_split(layout.dataset_dir, "test", info.max_len)
        test_metrics = evaluate_model(model, test, eval_cfg.ks, train_cfg.eval_batch_size, eval_cfg.exclude_history)

    result = TrainResult(
        run_dir=run_dir,
        best_epoch=best_epoch,
        valid=best_valid,
        test=test_metrics,
        epochs_run=len(history),
        seconds_per_epoch=float(np.mean(epoch_seconds)),
        num_parameters=model.num_parameters(),
    )
    _write_run(model, result, history, config, layout, started)
    if root.relative(run_dir) is not None:  # not a run written elsewhere (a Tune trial's own folder)
        root.push(run_dir)
    return result


def _build_model(config: Config, layout: ArtifactLayout, info) -> SequentialRecommender:
    """The student; one cut from the teacher (slm) gets its architecture and first weights from
    teacher/checkpoint/ through the params_from_teacher / load_teacher_weights hooks."""
    from rdistill.models import student_class

    cls = student_class(config.student.name)
    params = config.student.model_params()
    if hasattr(cls, "params_from_teacher") or hasattr(cls, "load_teacher_weights"):
        config.storage().pull(layout.teacher_checkpoint_dir)
    if hasattr(cls, "params_from_teacher"):
        params = cls.params_from_teacher(params, layout.teacher_checkpoint_dir)
    model = build_student(config.student.name, info.n_items, info.max_len, params)
    if hasattr(model, "load_teacher_weights"):
        model.load_teacher_weights(layout.teacher_checkpoint_dir)
    return model


def resolve_objective(objective: str, model: SequentialRecommender) -> str:
    if objective == "auto":
        return "all_positions" if model.causal else "last_position"
    if objective == "all_positions" and not model.causal:
        raise ConfigError(f"train.objective=all_positions needs a causal student; {model.name} is not causal")
    return objective


def _train_one_epoch(model: SequentialRecommender, loss_fn: DistillationObjective, optimizer: torch.optim.Optimizer,
                     train: SplitTensors, batch_size: int, grad_clip: float | None, generator: torch.Generator,
                     progress: bool, description: str) -> dict[str, float]:
    """One pass over the training rows; returns the row-weighted mean of the loss and of each of its parts."""
    model.train()
    totals: dict[str, float] = {}
    total_rows = 0
    batches = train.batch_indices(batch_size, shuffle=True, generator=generator, group_by_length=True)
    bar = tqdm(batches, total=-(-len(train) // batch_size), desc=description, disable=not progress, leave=False)
    for index in bar:
        loss, parts = loss_fn(train.history[index], train.target[index], train.row_id[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        rows = len(index)
        for name, value in {"train_loss": loss.item(), **parts}.items():
            totals[name] = totals.get(name, 0.0) + value * rows
        total_rows += rows
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return {name: value / max(total_rows, 1) for name, value in totals.items()}


# ------------------------------------------------------------------------------------------ distillation


@dataclass
class TrainSignals:
    """The teacher's signals for the train split, indexed by train row_id."""

    topk_items: torch.Tensor  # [R, K] long
    topk_scores: torch.Tensor  # [R, K] float
    item_emb: np.ndarray  # [N + 1, d_teacher]
    hidden: dict[int, torch.Tensor]  # layer -> [R, width]


def load_train_signals(config: Config, train: SplitTensors, info) -> TrainSignals:
    """Read signals/ and check it against the dataset before any training (row ids, catalogue, dimensions)."""
    from rdistill.artifacts import read_json
    from rdistill.errors import ArtifactError
    from rdistill.teacher.signals import load_signals

    root = config.storage()
    signals_dir = ArtifactLayout(root.local).signals_dir
    root.pull(signals_dir)
    manifest_path = signals_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ArtifactError(f"{manifest_path} is missing: the distill.* settings need the teacher's signals; run "
                            "`rdistill teacher infer` first (or set every distill weight to 0)")
    counts = read_json(manifest_path)["counts"]
    if counts["items"] != info.n_items:
        raise ArtifactError(f"{signals_dir} was computed for {counts['items']} items but the dataset has "
                            f"{info.n_items}: rerun `rdistill teacher infer`")
    if counts["rows"].get("train") != len(train):
        raise ArtifactError(f"{signals_dir} has teacher signals for {counts['rows'].get('train')} train rows but the "
                            f"dataset has {len(train)}: rerun `rdistill teacher infer`")
    distill = config.distill
    signals = load_signals(signals_dir, "train", hidden=distill.feature_weight > 0)
    if not torch.equal(train.row_id, torch.arange(len(train))):
        raise ArtifactError("train.parquet row_id must number the rows 0..R-1 in order (as `rdistill prepare` "
                            "writes them); teacher signals are looked up by row_id")
    signals = signals.aligned_to(train.row_id.numpy(), str(signals_dir / "topk.parquet"))
    if signals.item_emb.shape[0] != info.n_items + 1:
        raise ArtifactError(f"{signals_dir / 'item_emb.parquet'} has {signals.item_emb.shape[0] - 1} items, "
                            f"expected {info.n_items}")
    available = signals.topk_items.shape[1]
    top_k = distill.top_k or available
    if top_k > available:
        raise ConfigError(f"distill.top_k={top_k} but {signals_dir} holds only the teacher's top {available} "
                          f"(infer.top_k): lower distill.top_k or rerun `rdistill teacher infer infer.top_k={top_k}`")
    return TrainSignals(topk_items=torch.from_numpy(signals.topk_items[:, :top_k]),
                        topk_scores=torch.from_numpy(signals.topk_scores[:, :top_k]),
                        item_emb=signals.item_emb,
                        hidden={layer: torch.from_numpy(states) for layer, states in signals.hidden.items()})


class DistillationObjective:
    """The training loss of one batch: cross-entropy, plus the distillation terms that distill.* switches on.

    For a causal student trained on all positions, position j of train row r is the prefix that train row
    r - steps_back(j) ends with (a user's prefix rows are consecutive), so every position is distilled towards
    the teacher's signals of that row."""

    def __init__(self, model: SequentialRecommender, objective: str, distill, signals: TrainSignals | None,
                 generator: torch.Generator, recommendation: str = "softmax"):
        from rdistill.distill.losses import ItemEmbeddingOffset, teacher_initialised_table

        self.model, self.objective, self.distill, self.signals = model, objective, distill, signals
        self.generator, self.recommendation = generator, recommendation
        self.uses_blocks = distill.feature_weight > 0 or distill.block_ce_weight > 0
        if signals is None:
            return
        if self.uses_blocks:
            if not hasattr(model, "aligned_layers"):
                raise ConfigError(f"distill.feature_weight / distill.block_ce_weight need the slm student, not "
                                  f"{model.name}")
            needed = sorted({teacher for _, teacher in model.aligned_layers()})
            if distill.feature_weight > 0 and not set(needed) <= set(signals.hidden):
                raise ConfigError(f"the slm student aligns to teacher layers {needed} but the signals hold hidden "
                                  f"states for {sorted(signals.hidden)}: rerun `rdistill teacher infer "
                                  f"infer.hidden_layers={needed}`")
        if distill.init_item_embeddings == "teacher":
            with torch.no_grad():
                std = float(model.item_embedding.weight[1:].std())
                model.item_embedding.weight.copy_(teacher_initialised_table(
                    signals.item_emb, model.item_embedding.weight.shape[1], std))
        if distill.embed_weight > 0:
            model.item_offset = ItemEmbeddingOffset(torch.from_numpy(signals.item_emb),
                                                    model.item_embedding.weight.shape[1], distill.embed_weight)

    def __call__(self, history: torch.Tensor, target: torch.Tensor, row_id: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        from rdistill.distill.losses import (feature_loss, kd_loss, rank_loss, ranking_weights, recommendation_loss,
                                             sample_negatives)

        model, distill = self.model, self.distill
        blocks: list[torch.Tensor] = []
        if self.recommendation == "softmax" and (self.signals is None
                                                 or not (distill.uses_candidates() or self.uses_blocks)):
            loss_fn = model.all_positions_loss if self.objective == "all_positions" else model.loss
            loss = loss_fn(history, target)
            return loss, ({"loss_ce": loss.item()} if self.signals is not None else {})
        if self.objective == "all_positions":
            logits, targets, steps_back = model.position_logits(history, target)
            real_per_row = (history != 0).sum(dim=1)
            signal_rows = row_id.repeat_interleave(real_per_row) - steps_back
        elif self.uses_blocks:
            user, blocks = model.encode(history)
            logits, targets, signal_rows = model.catalogue_logits(user), target, row_id
        else:
            logits, targets, signal_rows = model.scores(history), target, row_id
        ce = recommendation_loss(logits, targets, self.recommendation, self.generator)
        loss, parts = ce, {"loss_ce" if self.recommendation == "softmax" else "loss_bce": ce.item()}
        if distill.uses_candidates():
            candidates = self.signals.topk_items[signal_rows]
            teacher_scores = self.signals.topk_scores[signal_rows]
            candidate_logits = logits.gather(1, candidates)
        if distill.kd_weight > 0:
            kd = kd_loss(candidate_logits, teacher_scores, distill.temperature)
            loss = loss + distill.kd_weight * kd
            parts["loss_kd"] = kd.item()
        if distill.rank_weight > 0:
            k = candidates.shape[1]
            with torch.no_grad():
                student_top = torch.zeros_like(logits, dtype=torch.bool)
                student_top.scatter_(1, logits.topk(k, dim=1).indices, True)
                weights = ranking_weights(teacher_scores, student_top.gather(1, candidates), distill.position_lambda,
                                          distill.gamma_position, distill.gamma_confidence,
                                          distill.gamma_consistency)
            negatives = sample_negatives(tuple(candidates.shape), model.n_items, self.generator)
            rank = rank_loss(candidate_logits, logits.gather(1, negatives), weights)
            loss = loss + distill.rank_weight * rank
            parts["loss_rank"] = rank.item()
        if distill.feature_weight > 0:
            feature = sum(feature_loss(state, self.signals.hidden[teacher_layer][signal_rows], distill.feature_weight,
                                       distill.feature_l2_weight)
                          for state, (_, teacher_layer) in zip(blocks, model.aligned_layers()))
            loss = loss + feature
            parts["loss_feature"] = feature.item()
        if distill.block_ce_weight > 0 and len(blocks) > 1:
            block_ce = sum(F.cross_entropy(model.block_logits(state), targets) for state in blocks[:-1])
            loss = loss + distill.block_ce_weight * block_ce
            parts["loss_block_ce"] = block_ce.item()
        return loss, parts


def _write_run(model: SequentialRecommender, result: TrainResult, history: list[dict[str, Any]], config: Config,
               layout: ArtifactLayout, started: float) -> None:
    save_student(model, result.run_dir)
    metrics = {
        "student": model.name,
        "seed": config.seed,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "select_metric": config.eval.select_metric,
        "valid": result.valid,
        "test": result.test,
        "num_parameters": result.num_parameters,
        "seconds_per_epoch": result.seconds_per_epoch,
        "history": history,
    }
    atomic_write_json(result.run_dir / METRICS_FILE, metrics)
    dataset_manifest = layout.dataset_dir / MANIFEST_NAME
    manifest = build_manifest(
        stage="train-student",
        config=config_to_dict(config),
        inputs={"dataset_manifest": dataset_manifest} if dataset_manifest.is_file() else {},
        counts={"epochs_run": result.epochs_run, "num_parameters": result.num_parameters},
        started_at=started,
    )
    atomic_write_json(result.run_dir / MANIFEST_NAME, manifest)
