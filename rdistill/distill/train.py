"""One student training run, with no Ray in it: the core that the CLI, the tests and Ray Tune trials all call.

Seeded, Adam, full-softmax cross-entropy, early stopping on a validation metric with patience; the best weights
are kept, saved as safetensors with their model config, and the test split is evaluated exactly once, at the end,
with those weights.
"""

from __future__ import annotations

import copy
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

from rdistill.artifacts import MANIFEST_NAME, ArtifactLayout, atomic_write_json, build_manifest
from rdistill.config import Config, config_to_dict
from rdistill.errors import ConfigError
from rdistill.data.dataset import SplitTensors, load_dataset_info, load_split, sequence_windows
from rdistill.evaluate import evaluate_model
from rdistill.models import SequentialRecommender, build_student, save_student

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"

# Called after every epoch with (epoch, validation metrics); returning True stops training (e.g. a Ray Tune
# scheduler that decided to stop the trial).
EpochCallback = Callable[[int, dict[str, float]], bool | None]


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    valid: dict[str, float]  # validation metrics of the selected (best) epoch
    test: dict[str, float] | None  # None when evaluate_test=False
    epochs_run: int
    seconds_per_epoch: float
    num_parameters: int


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def default_run_name(config: Config) -> str:
    return config.train.run_name or f"{config.student.name}-seed{config.seed}"


def train_student(
    config: Config,
    run_dir: Path | None = None,
    on_epoch_end: EpochCallback | None = None,
    evaluate_test: bool = True,
) -> TrainResult:
    """Train config.student on the prepared dataset under config.artifact_root; write students/<run>/."""
    started = time.time()
    train_cfg, eval_cfg = config.train, config.eval
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    generator = seed_everything(config.seed)

    layout = ArtifactLayout(config.artifact_path())
    info = load_dataset_info(layout.dataset_dir)
    train = load_split(layout.dataset_dir, "train", info.max_len)
    valid = load_split(layout.dataset_dir, "valid", info.max_len)
    run_dir = Path(run_dir) if run_dir is not None else layout.student_dir(default_run_name(config))

    model = build_student(config.student.name, info.n_items, info.max_len, config.student.model_params())
    objective = resolve_objective(train_cfg.objective, model)
    if objective == "all_positions":
        train = sequence_windows(train)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    log.info("training %s (%d parameters, %s objective) on %d rows, %d items", model.name, model.num_parameters(),
             objective, len(train), info.n_items)

    best_metric, best_epoch, best_state, best_valid = float("-inf"), 0, None, {}
    history: list[dict[str, Any]] = []
    epoch_seconds = []
    for epoch in range(1, train_cfg.epochs + 1):
        epoch_start = time.time()
        train_loss = _train_one_epoch(model, objective, optimizer, train, train_cfg.batch_size, train_cfg.grad_clip,
                                      generator, progress=train_cfg.progress, description=f"epoch {epoch}")
        epoch_seconds.append(time.time() - epoch_start)
        valid_metrics = evaluate_model(model, valid, eval_cfg.ks, train_cfg.eval_batch_size, eval_cfg.exclude_history)
        history.append({"epoch": epoch, "train_loss": train_loss, "seconds": epoch_seconds[-1], **valid_metrics})
        metric = valid_metrics[eval_cfg.select_metric]
        improved = metric > best_metric
        if improved:
            best_metric, best_epoch, best_valid = metric, epoch, valid_metrics
            best_state = copy.deepcopy(model.state_dict())
        log.info("epoch %d: loss %.4f, valid %s %.4f%s", epoch, train_loss, eval_cfg.select_metric, metric,
                 " (best)" if improved else "")
        stop_requested = on_epoch_end(epoch, {"train_loss": train_loss, **valid_metrics}) if on_epoch_end else False
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
    return result


def resolve_objective(objective: str, model: SequentialRecommender) -> str:
    if objective == "auto":
        return "all_positions" if model.causal else "last_position"
    if objective == "all_positions" and not model.causal:
        raise ConfigError(f"train.objective=all_positions needs a causal student; {model.name} is not causal")
    return objective


def _train_one_epoch(model: SequentialRecommender, objective: str, optimizer: torch.optim.Optimizer,
                     train: SplitTensors, batch_size: int, grad_clip: float | None, generator: torch.Generator,
                     progress: bool, description: str) -> float:
    loss_fn = model.all_positions_loss if objective == "all_positions" else model.loss
    model.train()
    total_loss, total_rows = 0.0, 0
    batches = train.batches(batch_size, shuffle=True, generator=generator, group_by_length=True)
    bar = tqdm(batches, total=-(-len(train) // batch_size), desc=description, disable=not progress, leave=False)
    for history, target in bar:
        loss = loss_fn(history, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        total_loss += loss.item() * len(target)
        total_rows += len(target)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return total_loss / max(total_rows, 1)


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
