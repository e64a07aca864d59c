"""The search over distillation weights (`rdistill tune`): Ray Tune + Optuna TPE + ASHA, winner exported.

Each trial is one distillation run (rdistill.distill.train.train_student) with the trial's settings applied to
the experiment config. After every epoch it reports the validation metrics to Tune (so ASHA can stop it) with a
checkpoint: the student's weights and the run's state (optimizer, best epoch so far, random state); Tune keeps
the best one by the validation metric and the latest. Only validation metrics drive
the search and the choice of the winner; the winner's test metrics are computed once, after the search, and
the winner is exported to serving/model/ (rdistill/export.py).

The campaign lives under <artifact_root>/tune/<tune.name>/. Running the same command again after an
interruption restores it with Tuner.restore: finished trials are kept, and an unfinished trial goes on after the
last epoch it checkpointed, as if it had not stopped. ASHA counts the reported epochs, not Tune's reports, so a
trial that repeats an epoch (cut short between training it and checkpointing it) meets the same milestones.

With tune.objective=quality_latency every trial also reports its per-request scoring latency and Optuna's TPE
searches both objectives; the Pareto front goes to pareto.json and the winner is the best on validation within
tune.latency_budget_ms. A finished campaign can be re-run with another budget: only the winner changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdistill import layout
from rdistill.artifacts import ArtifactLayout, atomic_write_json, file_sha256, lineage
from rdistill.config import Config, SearchDimension, config_to_dict, set_dotted
from rdistill.errors import ConfigError, RdistillError
from rdistill.ray_runtime import ensure_ray

log = logging.getLogger(__name__)

CAMPAIGN_FILE = layout.TUNE_CAMPAIGN_FILE  # what the campaign was started with; a restore must match it
SUMMARY_FILE = layout.TUNE_SUMMARY_FILE
PARETO_FILE = "pareto.json"  # tune.objective=quality_latency: the trials no other beats on quality and latency
LATENCY_METRIC = "latency_ms"  # per-request scoring latency (rdistill/tradeoff.py), reported by every epoch


class CampaignInterrupted(RdistillError):
    """The search stopped before every trial finished (e.g. Ctrl-C); its state is saved for a resume."""


@dataclass
class TuneResult:
    campaign_dir: Path
    best_params: dict[str, Any]
    best_valid: dict[str, float]
    test: dict[str, float]
    serving_dir: Path | None
    trials: list[dict[str, Any]]
    restored: bool
    winner_checkpoint: str  # the winning trial's checkpoint (where Tune keeps it)


def metric_name(config: Config) -> str:
    return f"valid_{config.eval.select_metric}"


def trial_config(base: dict[str, Any], params: dict[str, Any]) -> Config:
    """The experiment config with a trial's settings (dotted keys) applied."""
    raw = json.loads(json.dumps(base))
    for key, value in params.items():
        set_dotted(raw, key, value)
    return Config.model_validate(raw)


def _tune_dimension(dimension: SearchDimension):
    from ray import tune

    if dimension.type == "uniform":
        return tune.uniform(dimension.low, dimension.high)
    if dimension.type == "loguniform":
        return tune.loguniform(dimension.low, dimension.high)
    if dimension.type == "int":
        return tune.randint(int(dimension.low), int(dimension.high) + 1)
    return tune.choice(dimension.values)


def run_trial(trial_params: dict[str, Any], base: dict[str, Any]) -> None:
    """The Tune trainable: one distillation run, reporting every epoch with a checkpoint of the student and of the
    run's state, so that a trial restored after an interruption goes on from its last epoch."""
    import tempfile

    import ray
    from ray import tune

    from rdistill.distill.train import TRAIN_STATE_FILE, EpochReport, TrainState, train_student
    from rdistill.models import save_student
    from rdistill.stages.registry import pull_addresses
    from rdistill.stages.train_student import student_inputs
    from rdistill.tradeoff import sample_history, served_latency_ms

    config = trial_config(base, trial_params)
    # a trial runs on any node: it pulls what its run reads into that node's mirror (a no-op for a local root)
    pull_addresses(config.storage(), student_inputs(config))
    metric_prefix = "valid_"
    node_id = ray.get_runtime_context().get_node_id()  # where the trial ran: summary.json shows how trials spread
    latency: dict[str, float] = {}
    resume = None
    checkpoint = tune.get_checkpoint()  # set when Tuner.restore resumes this trial
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            if (Path(folder) / TRAIN_STATE_FILE).is_file():
                resume = TrainState.load(Path(folder) / TRAIN_STATE_FILE)

    def report(epoch_report: EpochReport) -> None:
        model = epoch_report.model
        if config.tune.objective == "quality_latency" and not latency:  # the architecture's cost: timed once
            history = sample_history(ArtifactLayout(config.artifact_path()).table("valid"), model.n_items,
                                     model.max_len)
            latency[LATENCY_METRIC], _ = served_latency_ms(model, history)  # as the endpoint would score it
        metrics = {"epoch": epoch_report.epoch, "node_id": node_id, **latency,
                   **{(key if key.startswith(("train_loss", "loss_")) else metric_prefix + key): value
                      for key, value in epoch_report.metrics.items()}}
        # Tune keeps the best checkpoint by the validation metric (the winner's weights) and the latest (to resume)
        with tempfile.TemporaryDirectory() as folder:
            save_student(model, Path(folder))
            epoch_report.state().save(Path(folder) / TRAIN_STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    train_student(config, run_dir=Path(tune.get_context().get_trial_dir()) / "final", on_epoch_end=report,
                  evaluate_test=False, resume=resume)


def check_tune_inputs(config: Config) -> None:
    """Signals against the dataset, and the search space against the signals, before any trial starts."""
    from rdistill.data.dataset import load_dataset_info, load_split
    from rdistill.distill.train import load_train_signals

    dataset_dir = ArtifactLayout(config.artifact_path()).dataset_dir  # pulled by the stage runner
    info = load_dataset_info(dataset_dir)
    space = config.tune.search_space(config.student.name)
    searched_distill = any(key.startswith("distill.") for key in space)
    if searched_distill or config.distill.uses_teacher():
        probe = trial_config(config_to_dict(config), {"distill.kd.weight": 1.0})
        signals = load_train_signals(probe, load_split(dataset_dir, "train", info.max_len), info)
        available = signals.topk_items.shape[1]
        top_k = space.get("distill.top_k")
        if top_k is not None:
            largest = max(top_k.values or [top_k.high])
            if largest > available:
                raise ConfigError(f"tune.space.distill.top_k reaches {largest} but the signals hold the teacher's "
                                  f"top {available} (infer.top_k): narrow the space or rerun teacher infer")


def _campaign_key(config: Config) -> str:
    """What a restored campaign must share with the original: config (minus tune bookkeeping) and inputs."""
    root = config.storage()
    relevant = config_to_dict(config)
    for choice_only in ("export", "latency_budget_ms"):  # they change what is done with the trials, not the trials
        relevant["tune"].pop(choice_only, None)
    inputs = {"train": file_sha256(ArtifactLayout(root.local).table("train"))}
    signals_manifest = root.read_bytes(layout.manifest_of(layout.SIGNALS))
    if signals_manifest is not None:
        inputs["signals"] = json.loads(signals_manifest).get("fingerprint")
    return hashlib.sha256(json.dumps({"config": relevant, "inputs": inputs}, sort_keys=True).encode()).hexdigest()


def _tuner(config: Config, restore: bool):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    tune_cfg = config.tune
    metric = metric_name(config)
    trainable = tune.with_parameters(run_trial, base=config_to_dict(config))
    trainable = tune.with_resources(trainable, {"cpu": tune_cfg.cpus_per_trial, "gpu": tune_cfg.gpus_per_trial})
    storage_path, filesystem = campaign_storage(config)
    if restore:
        return tune.Tuner.restore(storage_path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                  storage_filesystem=filesystem)
    space = {key: _tune_dimension(dimension) for key, dimension in tune_cfg.search_space(config.student.name).items()}
    latency_too = tune_cfg.objective == "quality_latency"
    # ASHA always stops trials on the validation metric; with two objectives only the searcher sees latency,
    # and Tune's own metric stays unset (it would overwrite the searcher's pair)
    on_metric = {"metric": metric, "mode": "max"}
    if tune_cfg.search == "tpe":
        objectives = {"metric": [metric, LATENCY_METRIC], "mode": ["max", "min"]} if latency_too else on_metric
        searcher = OptunaSearch(**objectives, sampler=optuna.samplers.TPESampler(seed=config.seed))
        search_alg = ConcurrencyLimiter(searcher, max_concurrent=tune_cfg.max_concurrent)
    else:
        search_alg = BasicVariantGenerator(random_state=config.seed, max_concurrent=tune_cfg.max_concurrent)
    if tune_cfg.scheduler == "asha":
        # epochs, not training_iteration: a resumed trial may report an epoch twice
        scheduler = ASHAScheduler(time_attr="epoch", max_t=tune_cfg.max_epochs,
                                  grace_period=min(tune_cfg.grace_period, tune_cfg.max_epochs),
                                  reduction_factor=tune_cfg.reduction_factor, **(on_metric if latency_too else {}))
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(**({} if latency_too else on_metric), search_alg=search_alg,
                                    scheduler=scheduler, num_samples=tune_cfg.num_samples),
        run_config=tune.RunConfig(
            name=config.tune.name, storage_path=config.storage().location(layout.TUNE)[0], storage_filesystem=filesystem,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=metric,
                                                    checkpoint_score_order="max"),
            verbose=1,
        ),
    )


def campaign_storage(config: Config) -> tuple[str, Any]:
    """Where Ray Tune keeps the campaign: tune/<name>/ where the root lives. For a URI root that is the object
    store itself, not the mirror: trials on any node upload their checkpoints there, and Tuner.restore finds
    the campaign from any machine, so a resume works after the driver's machine is gone."""
    return config.storage().location(layout.tune_campaign(config.tune.name))


def tune_students(config: Config, fresh: bool = False) -> TuneResult:
    """Run (or resume) the campaign, pick the winner on validation, test it once, export it."""
    from ray import tune

    started = time.time()
    root = config.storage()
    # trials run train_student for at most tune.max_epochs, with one torch thread per CPU of the trial
    # trials run in their own working directory (Ray Tune's), so a relative artifact root must be made absolute;
    # a URI stays a URI and each trial pulls what it reads into its own node's mirror
    config = trial_config(config_to_dict(config), {
        "artifact_root": config.worker_artifact_root(),
        "train.epochs": config.tune.max_epochs, "train.progress": False,
        "train.num_threads": config.train.num_threads or max(1, int(config.tune.cpus_per_trial)),
    })
    check_tune_inputs(config)
    campaign = layout.tune_campaign(config.tune.name)
    campaign_dir = ArtifactLayout(root.local).tune_campaign_dir(config.tune.name).resolve()  # campaign.json and summary.json; Tune's own state is
    storage_path, filesystem = campaign_storage(config)  # here (the same folder for a local root)
    key = _campaign_key(config)
    restore = False
    if root.exists(campaign) and not fresh:
        recorded = json.loads(root.read_bytes(layout.join(campaign, CAMPAIGN_FILE)) or b"{}")
        if recorded.get("key") != key:
            raise ConfigError(f"{root.describe(campaign)} holds a campaign with a different config or inputs: "
                              "choose another tune.name, or pass --fresh to start this one over")
        restore = tune.Tuner.can_restore(storage_path, storage_filesystem=filesystem)
    if fresh:
        root.delete(campaign)
    campaign_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(campaign_dir / CAMPAIGN_FILE, {"key": key, "config": config_to_dict(config)})
    root.push(campaign_dir / CAMPAIGN_FILE)  # now, not at the end: a resume from another machine checks it

    ensure_ray()
    # each epoch checkpoints (a cut-short trial resumes from it), and with num_to_keep Tune then snapshots the
    # campaign state each time; its warning that snapshots come less than 5 s apart is about that design, not a fault
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    log.info("%s tuning campaign %s: %d trials, %s search, %s scheduler", "resuming" if restore else "starting",
             campaign_dir, config.tune.num_samples, config.tune.search, config.tune.scheduler)
    with warnings.catch_warnings():
        # a resumed trial may report an epoch to Optuna twice (see latest_per_epoch): Optuna keeps the first
        warnings.filterwarnings("ignore", message="The reported value is ignored because this `step",
                                category=UserWarning)
        results = _tuner(config, restore).fit()
    finished = _ended_trials(storage_path, filesystem)
    if finished < config.tune.num_samples:
        raise CampaignInterrupted(f"the campaign in {root.describe(campaign)} stopped with {finished} of "
                                  f"{config.tune.num_samples} trials finished: run the same command again to resume")
    return _finish(config, campaign_dir, results, started, restore)


def _ended_trials(storage_path: str, filesystem) -> int:
    """Trials that ended (finished or failed) as the campaign's saved state records them. Not the ResultGrid's count:
    on Ctrl-C, Tune saves the state, then stops the running trials and calls them terminated there, so a campaign
    interrupted during its last trials would look complete and export a winner from trials cut short."""
    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(storage_path, storage_filesystem=filesystem).trials
    return sum(trial.status in ("TERMINATED", "ERROR") for trial in trials)


def _finish(config: Config, campaign_dir: Path, results, started: float, restored: bool) -> TuneResult:
    from rdistill.data.dataset import load_dataset_info, load_split
    from rdistill.data.schema import read_table
    from rdistill.evaluate import evaluate_model
    from rdistill.export import export_student
    from rdistill.models import load_student

    metric = metric_name(config)
    trials = trial_table(results, metric)
    scored = [result for result in results if result.metrics and result.best_checkpoints]
    if not scored:
        errors = [str(result.error) for result in results if result.error][:3]
        raise RuntimeError(f"no trial of {campaign_dir} reported a checkpoint; first errors: {errors}")
    pareto = None
    if config.tune.objective == "quality_latency":
        pareto = pareto_summary(trials, config.tune.latency_budget_ms)
        atomic_write_json(campaign_dir / PARETO_FILE, pareto)
        scored = within_latency_budget(scored, config.tune.latency_budget_ms, campaign_dir)
    best = max(scored, key=lambda result: max(m[metric] for _, m in result.best_checkpoints))
    checkpoint, best_metrics = max(best.best_checkpoints, key=lambda pair: pair[1][metric])
    params = {key: best.config[key] for key in config.tune.search_space(config.student.name)}
    winner_config = trial_config(config_to_dict(config), params)

    root = config.storage()
    artifacts = ArtifactLayout(root.local)
    info = load_dataset_info(artifacts.dataset_dir)
    with checkpoint.as_directory() as folder:
        model = load_student(Path(folder))
    # the only look at the test split in the whole campaign, with the weights chosen on validation
    eval_cfg = config.eval
    test = evaluate_model(model, load_split(artifacts.dataset_dir, "test", info.max_len), eval_cfg.ks,
                          config.train.eval_batch_size, eval_cfg.exclude_history)
    valid = {key.removeprefix("valid_"): value for key, value in best_metrics.items()
             if key.startswith("valid_")}
    serving_dir = None
    if config.tune.export:
        serving_dir = export_student(
            model, read_table(artifacts.dataset_dir, "items"), artifacts.serving_model_dir,
            metrics={"valid": valid, "test": test, "best_epoch": best_metrics.get("epoch"), "params": params},
            config=config_to_dict(winner_config),
            lineage=lineage(root, {"campaign": str(campaign_dir) if not root.is_remote else root.describe(
                layout.tune_campaign(config.tune.name)), "trial_id": best.metrics.get("trial_id")}),
        )
    summary = {"metric": metric, "winner": {"trial_id": best.metrics.get("trial_id"), "params": params,
                                            "valid": valid, "test": test, "epoch": best_metrics.get("epoch")},
               "trials": trials, "restored": restored, "seconds": round(time.time() - started, 1),
               "search": config.tune.search, "scheduler": config.tune.scheduler, "seed": config.seed,
               "objective": config.tune.objective}
    if pareto is not None:
        summary["winner"][LATENCY_METRIC] = best.metrics.get(LATENCY_METRIC)
        summary["pareto_front"] = [row["trial_id"] for row in pareto["front"]]
    atomic_write_json(campaign_dir / SUMMARY_FILE, summary)  # pushed by the stage runner with serving/model
    return TuneResult(campaign_dir, params, valid, test, serving_dir, trials, restored, checkpoint.path)


def trial_table(results, metric: str) -> list[dict[str, Any]]:
    """One row per trial: its settings, best validation metric, epochs run, status and time."""
    rows = []
    for result in results:
        frame = result.metrics_dataframe
        reported = frame[metric].tolist() if frame is not None and metric in frame else []
        history = latest_per_epoch(reported, frame["epoch"].tolist() if reported and "epoch" in frame else [])
        rows.append({
            "trial_id": (result.metrics or {}).get("trial_id"),
            "params": {key: value for key, value in (result.config or {}).items()},
            "best": max(reported) if reported else None,  # over every report, as Tune ranks the checkpoints
            "epochs": len(history),
            "history": history,
            "seconds": (result.metrics or {}).get("time_total_s"),
            "finished_at": (result.metrics or {}).get("timestamp"),  # unix time of the trial's last report
            "error": str(result.error) if result.error else None,
            "node_id": (result.metrics or {}).get("node_id"),  # the Ray node of the trial's last report
            LATENCY_METRIC: (result.metrics or {}).get(LATENCY_METRIC),  # tune.objective=quality_latency only
        })
    return rows


def latest_per_epoch(values: list[float], epochs: list[int]) -> list[float]:
    """A trial's value for each epoch of the run that counts: a resumed trial reports again from the epoch after its
    last checkpoint, which replaces what it had reported from there on (a trial whose checkpoint was lost reports
    from epoch 1 again)."""
    kept: list[tuple[int, float]] = []
    for epoch, value in zip(epochs, values):
        while kept and kept[-1][0] >= epoch:
            kept.pop()
        kept.append((epoch, value))
    return [value for _, value in kept] if epochs else values


def pareto_summary(trials: list[dict[str, Any]], budget_ms: float | None) -> dict[str, Any]:
    """pareto.json: the trials no other trial beats on both best validation metric and latency, fastest first."""
    from rdistill.tradeoff import pareto_front

    measured = [trial for trial in trials if trial["best"] is not None and trial[LATENCY_METRIC] is not None]
    front = pareto_front([(trial[LATENCY_METRIC], trial["best"]) for trial in measured])
    keep = ("trial_id", "best", LATENCY_METRIC, "params", "epochs")
    return {"quality": "best validation metric of the trial (summary.json's metric)",
            "latency": "median ms to score one validation history against the whole catalogue, CPU, one torch "
                       "thread, measured inside the trial (other trials may have been running beside it)",
            "latency_budget_ms": budget_ms,
            "front": [{key: measured[index][key] for key in keep} for index in front],
            "trials": [{key: trial[key] for key in keep} for trial in measured]}


def within_latency_budget(scored: list, budget_ms: float | None, campaign_dir: Path) -> list:
    """The trials whose measured latency fits the budget (all of them without one)."""
    if budget_ms is None:
        return scored
    fitting = [result for result in scored if result.metrics.get(LATENCY_METRIC, math.inf) <= budget_ms]
    if not fitting:
        fastest = min(result.metrics.get(LATENCY_METRIC, math.inf) for result in scored)
        raise ConfigError(f"no trial of {campaign_dir} scores within tune.latency_budget_ms={budget_ms} ms (the "
                          f"fastest took {fastest} ms; see {PARETO_FILE}): raise the budget or search smaller students")
    return fitting


def tune_summary(result: TuneResult) -> dict[str, Any]:
    finished = [trial for trial in result.trials if trial["best"] is not None]
    return {"campaign_dir": str(result.campaign_dir), "restored": result.restored, "trials": len(result.trials),
            "ended_before_max_epochs": sum(1 for trial in finished if trial["epochs"] < max(
                t["epochs"] for t in finished)),
            "best_params": result.best_params, "valid": result.best_valid, "test": result.test,
            "serving_dir": str(result.serving_dir) if result.serving_dir else None}
