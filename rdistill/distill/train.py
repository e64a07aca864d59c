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
from tqdm.auto import tqdm

from rdistill import layout
from rdistill.artifacts import MANIFEST_NAME, ArtifactLayout, atomic_write_bytes, atomic_write_json, build_manifest
from rdistill.config import Config, config_to_dict
from rdistill.errors import ConfigError
from rdistill.data.dataset import DatasetInfo, SplitTensors, load_dataset_info, load_split, sequence_windows
from rdistill.evaluate import evaluate_model
from rdistill.distill.terms import HIDDEN, TEACHER_CHECKPOINT, DistillBatch, DistillTerm, active_terms
from rdistill.models import SequentialRecommender, build_student, save_student
from rdistill.seeding import seed_everything  # noqa: F401  (also imported from here by older callers)

log = logging.getLogger(__name__)

METRICS_FILE = layout.METRICS
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
    # trainable parameters of distillation terms that are not part of the student, by term (absent before v0.2)
    terms: dict[str, dict[str, torch.Tensor]] = dataclasses.field(default_factory=dict)

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
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    generator = seed_everything(config.seed)

    # what the run reads is in the local mirror: the stage runner (or a Tune trial) pulled it
    artifacts = ArtifactLayout(config.artifact_path())
    run_dir = Path(run_dir) if run_dir is not None else artifacts.student_dir(default_run_name(config))

    run = _set_up_run(config, artifacts, generator)
    progress = _Progress.start(run, resume, config)
    _train_epochs(run, progress, config, on_epoch_end)
    result = _select_and_test(run, progress, config, artifacts, run_dir, evaluate_test)
    _write_run(run.model, result, progress.history, config, artifacts, started)
    return result


@dataclass
class _Run:
    """Everything one training run works with, built once before the first epoch."""

    model: SequentialRecommender
    loss_fn: DistillationObjective
    optimizer: torch.optim.Optimizer
    parameters: list[torch.nn.Parameter]  # the student's and its distillation terms': optimised and clipped
    train: SplitTensors
    valid: SplitTensors
    info: DatasetInfo
    generator: torch.Generator


def _set_up_run(config: Config, artifacts: ArtifactLayout, generator: torch.Generator) -> _Run:
    """The student, its training loss (with the enabled distillation terms), the optimizer and the splits."""
    train_cfg = config.train
    info = load_dataset_info(artifacts.dataset_dir)
    train = load_split(artifacts.dataset_dir, "train", info.max_len)
    valid = load_split(artifacts.dataset_dir, "valid", info.max_len)
    model = _build_model(config, artifacts, info)
    objective = resolve_objective(train_cfg.objective, model)
    signals = load_train_signals(config, train, info) if config.distill.uses_teacher() else None
    loss_fn = DistillationObjective(model, objective, config.distill, signals, generator, train_cfg.loss)
    if objective == "all_positions":
        train = sequence_windows(train)
        if config.train.batch_balance == "rows":  # the earlier scheme: a target's weight depends on its batch
            train.supervised = None
    parameters = trainable_parameters(model, loss_fn)
    optimizer = torch.optim.Adam(parameters, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    terms = ", distilled (" + ", ".join(loss_fn.terms) + ")" if signals is not None else ""
    log.info("training %s (%d parameters, %s objective%s) on %d rows, %d items", model.name, model.num_parameters(),
             objective, terms, len(train), info.n_items)
    return _Run(model, loss_fn, optimizer, parameters, train, valid, info, generator)


def trainable_parameters(model: SequentialRecommender, loss_fn: DistillationObjective) -> list[torch.nn.Parameter]:
    """The student's parameters, then those of its distillation terms that are not already part of it (the
    embedding term's offset hangs on the student; a term's own module may not)."""
    parameters = list(model.parameters())
    seen = {id(parameter) for parameter in parameters}
    for module in loss_fn.trainable_modules().values():
        parameters += [parameter for parameter in module.parameters() if id(parameter) not in seen]
    return parameters


@dataclass
class _Progress:
    """Where training stands: the best epoch so far (for early stopping and the final weights) and the history."""

    best_metric: float = float("-inf")
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_valid: dict[str, float] = dataclasses.field(default_factory=dict)
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)
    first_epoch: int = 1

    @classmethod
    def start(cls, run: _Run, resume: TrainState | None, config: Config) -> _Progress:
        """A fresh start, or the state of `resume` restored into the run (weights, optimizer, random state)."""
        if resume is None:
            return cls()
        run.model.load_state_dict(resume.model)
        run.loss_fn.load_term_state(resume.terms)
        run.optimizer.load_state_dict(resume.optimizer)
        _set_rng_state(resume.rng, run.generator)
        # a run whose patience ran out at its last epoch had ended: nothing is left to train
        ended = resume.epoch - resume.best_epoch >= config.train.patience
        progress = cls(resume.best_metric, resume.best_epoch,
                       resume.best_model if resume.best_model is not None else resume.model,  # loaded by copy above
                       resume.best_valid, resume.history, resume.epoch_seconds,
                       config.train.epochs + 1 if ended else resume.epoch + 1)
        log.info("resuming after epoch %d (best so far: epoch %d, %s %.4f)", resume.epoch, progress.best_epoch,
                 config.eval.select_metric, progress.best_metric)
        return progress

    def record(self, epoch: int, metric: float, valid_metrics: dict[str, float], model: SequentialRecommender) -> bool:
        """Keep the epoch if it is the best so far; True when it is."""
        if not metric > self.best_metric:  # NaN never improves
            return False
        self.best_metric, self.best_epoch, self.best_valid = metric, epoch, valid_metrics
        self.best_state = copy.deepcopy(model.state_dict())
        return True

    def snapshot(self, run: _Run, epoch: int) -> Callable[[], TrainState]:
        return lambda: TrainState(epoch, copy.deepcopy(run.model.state_dict()),
                                  copy.deepcopy(run.optimizer.state_dict()), self.best_metric, self.best_epoch,
                                  dict(self.best_valid),
                                  None if self.best_epoch == epoch else copy.deepcopy(self.best_state),
                                  copy.deepcopy(self.history), list(self.epoch_seconds), _rng_state(run.generator),
                                  run.loss_fn.term_state())


def _train_epochs(run: _Run, progress: _Progress, config: Config, on_epoch_end: EpochCallback | None) -> None:
    """Train and validate epoch by epoch until train.epochs, patience or the callback ends it."""
    train_cfg, eval_cfg = config.train, config.eval
    for epoch in range(progress.first_epoch, train_cfg.epochs + 1):
        epoch_start = time.time()
        losses = _train_one_epoch(run, train_cfg.batch_size, train_cfg.grad_clip, progress=train_cfg.progress,
                                  description=f"epoch {epoch}")
        progress.epoch_seconds.append(time.time() - epoch_start)
        valid_metrics = evaluate_model(run.model, run.valid, eval_cfg.ks, train_cfg.eval_batch_size,
                                       eval_cfg.exclude_history)
        progress.history.append({"epoch": epoch, **losses, "seconds": progress.epoch_seconds[-1], **valid_metrics})
        metric = valid_metrics[eval_cfg.select_metric]
        improved = progress.record(epoch, metric, valid_metrics, run.model)
        log.info("epoch %d: loss %.4f, valid %s %.4f%s", epoch, losses["train_loss"], eval_cfg.select_metric, metric,
                 " (best)" if improved else "")
        stop_requested = on_epoch_end(EpochReport(epoch, {**losses, **valid_metrics}, improved, run.model,
                                                  progress.snapshot(run, epoch))) if on_epoch_end else False
        if stop_requested or epoch - progress.best_epoch >= train_cfg.patience:
            break


def _select_and_test(run: _Run, progress: _Progress, config: Config, artifacts: ArtifactLayout, run_dir: Path,
                     evaluate_test: bool) -> TrainResult:
    """Restore the best epoch's weights and, when asked, evaluate the test split: its one and only look."""
    run.model.load_state_dict(progress.best_state)
    test_metrics = None
    if evaluate_test:
        test = load_split(artifacts.dataset_dir, "test", run.info.max_len)
        test_metrics = evaluate_model(run.model, test, config.eval.ks, config.train.eval_batch_size,
                                      config.eval.exclude_history)
    return TrainResult(
        run_dir=run_dir,
        best_epoch=progress.best_epoch,
        valid=progress.best_valid,
        test=test_metrics,
        epochs_run=len(progress.history),
        seconds_per_epoch=float(np.mean(progress.epoch_seconds)),
        num_parameters=run.model.num_parameters(),
    )


def _build_model(config: Config, artifacts: ArtifactLayout, info) -> SequentialRecommender:
    """The student; one cut from the teacher (slm) gets its architecture and first weights from
    teacher/checkpoint/ through the params_from_teacher / load_teacher_weights hooks."""
    from rdistill.models import student_class

    cls = student_class(config.student.name)
    params = config.student.model_params()
    if hasattr(cls, "params_from_teacher"):
        params = cls.params_from_teacher(params, artifacts.teacher_checkpoint_dir)
    model = build_student(config.student.name, info.n_items, info.max_len, params)
    if hasattr(model, "load_teacher_weights"):
        model.load_teacher_weights(artifacts.teacher_checkpoint_dir)
    return model


def resolve_objective(objective: str, model: SequentialRecommender) -> str:
    if objective == "auto":
        return "all_positions" if model.causal else "last_position"
    if objective == "all_positions" and not model.causal:
        raise ConfigError(f"train.objective=all_positions needs a causal student; {model.name} is not causal")
    return objective


def _train_one_epoch(run: _Run, batch_size: int, grad_clip: float | None, progress: bool,
                     description: str) -> dict[str, float]:
    """One pass over the training rows; returns the row-weighted mean of the loss and of each of its parts."""
    run.model.train()
    totals: dict[str, float] = {}
    total_rows = 0
    train = run.train
    batches = train.batch_indices(batch_size, shuffle=True, generator=run.generator, group_by_length=True)
    bar = tqdm(batches, total=-(-len(train) // batch_size), desc=description, disable=not progress, leave=False)
    for index in bar:
        loss, parts = run.loss_fn(train.history[index], train.target[index], train.row_id[index])
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(run.parameters, grad_clip)
        run.optimizer.step()
        rows = len(index)
        for name, value in {"train_loss": loss.item(), **parts}.items():
            totals[name] = totals.get(name, 0.0) + value * rows
        total_rows += rows
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return {name: value / max(total_rows, 1) for name, value in totals.items()}


# ------------------------------------------------------------------------------------------ distillation


@dataclass
class TrainSignals:
    """The teacher's signals for the train split, indexed by train row_id: everything a term may need."""

    topk_items: torch.Tensor  # [R, K] long: the teacher's top-K items, best first (K = distill.top_k)
    topk_scores: torch.Tensor  # [R, K] float: its logits of them
    user_emb: torch.Tensor  # [R, d_teacher] float: its user vector of each row
    item_emb: np.ndarray  # [N + 1, d_teacher]: its item table (row 0 padding)
    hidden: dict[int, torch.Tensor]  # layer -> [R, width]: loaded only when an enabled term needs them
    teacher_checkpoint: Path | None = None  # teacher/checkpoint/, pulled only when an enabled term needs it


def load_train_signals(config: Config, train: SplitTensors, info) -> TrainSignals:
    """Read signals/ and check it against the dataset before any training (row ids, catalogue, dimensions)."""
    from rdistill.artifacts import read_json
    from rdistill.errors import ArtifactError
    from rdistill.teacher.signals import load_signals

    signals_dir = ArtifactLayout(config.artifact_path()).signals_dir
    manifest_path = signals_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ArtifactError(f"{manifest_path} is missing: the distill.* settings need the teacher's signals; run "
                            "`rdistill teacher-infer` first (or set every distill weight to 0)")
    counts = read_json(manifest_path)["counts"]
    if counts["items"] != info.n_items:
        raise ArtifactError(f"{signals_dir} was computed for {counts['items']} items but the dataset has "
                            f"{info.n_items}: rerun `rdistill teacher-infer`")
    if counts["rows"].get("train") != len(train):
        raise ArtifactError(f"{signals_dir} has teacher signals for {counts['rows'].get('train')} train rows but the "
                            f"dataset has {len(train)}: rerun `rdistill teacher-infer`")
    needs = {signal for term in active_terms(config.distill).values() for signal in term.needs}
    signals = load_signals(signals_dir, "train", hidden=HIDDEN in needs)
    if not torch.equal(train.row_id, torch.arange(len(train))):
        raise ArtifactError("train.parquet row_id must number the rows 0..R-1 in order (as `rdistill prepare` "
                            "writes them); teacher signals are looked up by row_id")
    signals = signals.aligned_to(train.row_id.numpy(), str(signals_dir / layout.signals_topk_file("train")))
    if signals.item_emb.shape[0] != info.n_items + 1:
        raise ArtifactError(f"{signals_dir / layout.SIGNALS_ITEM_EMB_FILE} has {signals.item_emb.shape[0] - 1} items, "
                            f"expected {info.n_items}")
    top_k = _checked_top_k(config.distill.top_k, signals.topk_items.shape[1], signals_dir)
    return TrainSignals(topk_items=torch.from_numpy(signals.topk_items[:, :top_k]),
                        topk_scores=torch.from_numpy(signals.topk_scores[:, :top_k]),
                        user_emb=torch.from_numpy(signals.user_emb),
                        item_emb=signals.item_emb,
                        hidden={layer: torch.from_numpy(states) for layer, states in signals.hidden.items()},
                        teacher_checkpoint=_teacher_checkpoint(config) if TEACHER_CHECKPOINT in needs else None)


def _checked_top_k(top_k: int | None, available: int, signals_dir: Path) -> int:
    top_k = top_k or available
    if top_k > available:
        raise ConfigError(f"distill.top_k={top_k} but {signals_dir} holds only the teacher's top {available} "
                          f"(infer.top_k): lower distill.top_k or rerun `rdistill teacher-infer infer.top_k={top_k}`")
    return top_k


def _teacher_checkpoint(config: Config) -> Path:
    from rdistill.errors import ArtifactError

    checkpoint = ArtifactLayout(config.artifact_path()).teacher_checkpoint_dir
    if not checkpoint.is_dir():
        raise ArtifactError(f"{checkpoint} is missing: an enabled distill term needs the trained teacher; run "
                            "`rdistill teacher-train` first")
    return checkpoint


class DistillationObjective:
    """The training loss of one batch: the recommendation loss, plus every registered distillation term that
    distill.<term>.weight switches on (rdistill/distill/terms.py), in registration order.

    For a causal student trained on all positions, position j of train row r is the prefix that train row
    r - steps_back(j) ends with (a user's prefix rows are consecutive), so every position is distilled towards
    the teacher's signals of that row."""

    def __init__(self, model: SequentialRecommender, objective: str, distill, signals: TrainSignals | None,
                 generator: torch.Generator, recommendation: str = "softmax"):
        from rdistill.distill.losses import teacher_initialised_table

        self.model, self.objective, self.distill, self.signals = model, objective, distill, signals
        self.generator, self.recommendation = generator, recommendation
        self.terms: dict[str, DistillTerm] = {}
        if signals is not None:
            if distill.init_item_embeddings == "teacher":
                with torch.no_grad():
                    std = float(model.item_embedding.weight[1:].std())
                    model.item_embedding.weight.copy_(teacher_initialised_table(
                        signals.item_emb, model.item_embedding.weight.shape[1], std))
            blocks = distill.term_configs()
            self.terms = {name: term(blocks[name], model, signals) for name, term in active_terms(distill).items()}
        self.loss_terms = {name: term for name, term in self.terms.items() if term.adds_loss}
        self.uses_blocks = any(term.student_blocks for term in self.loss_terms.values())

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        """The enabled terms' trainable parameters, by term: the optimizer trains them with the student."""
        modules = {name: term.trainable() for name, term in self.terms.items()}
        return {name: module for name, module in modules.items() if module is not None}

    def term_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """The weights of the terms' modules that are not part of the student (a resumable state needs them)."""
        inside = {id(module) for module in self.model.modules()}
        return {name: copy.deepcopy(module.state_dict()) for name, module in self.trainable_modules().items()
                if id(module) not in inside}

    def load_term_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        modules = self.trainable_modules()
        for name, weights in state.items():
            modules[name].load_state_dict(weights)

    def __call__(self, history: torch.Tensor, target: torch.Tensor, row_id: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        from rdistill.distill.losses import recommendation_loss

        model = self.model
        if self.recommendation == "softmax" and not self.loss_terms:  # the student's own (possibly fused) loss
            loss_fn = model.all_positions_loss if self.objective == "all_positions" else model.loss
            loss = loss_fn(history, target)
            return loss, ({"loss_ce": loss.item()} if self.signals is not None else {})
        batch = self._student_outputs(history, target, row_id)
        ce = recommendation_loss(batch.logits, batch.targets, self.recommendation, self.generator)
        loss, parts = ce, {"loss_ce" if self.recommendation == "softmax" else "loss_bce": ce.item()}
        for name, term in self.loss_terms.items():
            value = term.loss(batch)
            if value is not None:
                loss = loss + term.weighted(value)
                parts[f"loss_{name}"] = value.item()
        return loss, parts

    def _student_outputs(self, history: torch.Tensor, target: torch.Tensor, row_id: torch.Tensor) -> DistillBatch:
        """The student's logits at each supervised position, and the train row whose signals each one gets."""
        model, blocks = self.model, []
        if self.objective == "all_positions":
            logits, targets, steps_back = model.position_logits(history, target)
            real_per_row = (history != 0).sum(dim=1)
            signal_rows = row_id.repeat_interleave(real_per_row) - steps_back
        elif self.uses_blocks:
            user, blocks = model.encode(history)
            logits, targets, signal_rows = model.catalogue_logits(user), target, row_id
        else:
            logits, targets, signal_rows = model.scores(history), target, row_id
        return DistillBatch(history, target, model, logits, targets, signal_rows, self.signals, self.generator,
                            blocks=blocks)


def _write_run(model: SequentialRecommender, result: TrainResult, history: list[dict[str, Any]], config: Config,
               artifacts: ArtifactLayout, started: float) -> None:
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
    dataset_manifest = artifacts.dataset_dir / MANIFEST_NAME
    manifest = build_manifest(
        stage="train-student",
        config=config_to_dict(config),
        inputs={"dataset_manifest": dataset_manifest} if dataset_manifest.is_file() else {},
        counts={"epochs_run": result.epochs_run, "num_parameters": result.num_parameters},
        started_at=started,
    )
    atomic_write_json(result.run_dir / MANIFEST_NAME, manifest)
