"""The distillation search on a real local Ray: Optuna TPE + ASHA, winner export, interruption and resume."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from rdistill.data.dataset import load_split
from rdistill.errors import ConfigError
from rdistill.export import load_exported
from rdistill.models import load_student
from rdistill.tune import latest_per_epoch, tune_students

from tiny_data import REPO_ROOT, dataset_with_signals, tiny_config

pytestmark = pytest.mark.integration

SPACE = ("tune.space={train.lr: {type: loguniform, low: 0.00001, high: 0.01}, "
         "distill.kd_weight: {type: uniform, low: 0.0, high: 1.0}, "
         "distill.top_k: {type: choice, values: [2, 4]}}")


@pytest.fixture
def campaign_root(tiny_root, tmp_path):
    """The tiny dataset with fixture signals: the teacher's favourite is the true next item."""
    return dataset_with_signals(tiny_root, tmp_path)


class WarningsOf(logging.Handler):
    """Collects the warnings one logger emits inside a with block (Ray's loggers do not propagate to caplog)."""

    def __init__(self, name: str):
        super().__init__(logging.WARNING)
        self.logger, self.messages = logging.getLogger(name), []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self):
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc_info):
        self.logger.removeHandler(self)


def campaign_config(tiny_root, root, *overrides):
    return tiny_config(tiny_root, f"artifact_root={root}", "student.name=gru4rec", "train.patience=20",
                       "tune.max_epochs=4", "tune.grace_period=1", "tune.reduction_factor=2", "tune.num_samples=4",
                       "tune.max_concurrent=2", SPACE, *overrides)


def test_search_stops_weak_trials_and_exports_the_validation_winner(ray_cluster, tiny_root, campaign_root,
                                                                    monkeypatch):
    monkeypatch.chdir(campaign_root.parent)  # a relative artifact root, as users write it; trials run elsewhere
    config = campaign_config(tiny_root, campaign_root.name)
    # unset, as in a fresh process (an earlier campaign in this process has set it)
    monkeypatch.delenv("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", raising=False)
    tune_warnings = WarningsOf("ray.tune.execution.experiment_state")
    with tune_warnings:
        result = tune_students(config)

    assert len(result.trials) == 4 and not any(trial["error"] for trial in result.trials)
    # epochs this short checkpoint many times a second; Tune's warning about the snapshots that follow is silenced
    assert not [message for message in tune_warnings.messages if "snapshotting" in message]
    # patience (20) never ends a trial before max_epochs (4): a shorter trial was stopped by ASHA
    assert any(trial["epochs"] < 4 for trial in result.trials), [t["epochs"] for t in result.trials]
    assert max(trial["epochs"] for trial in result.trials) == 4
    # the winner is the trial with the best validation metric, over every trial and epoch
    best = max(result.trials, key=lambda trial: trial["best"])
    assert result.best_valid["ndcg_at_10"] == pytest.approx(best["best"])
    assert set(result.best_params) == {"train.lr", "distill.kd_weight", "distill.top_k"}

    # the exported model is the winning trial's checkpoint, scoring identically
    served = load_exported(result.serving_dir)
    trial_model = load_student(result.winner_checkpoint)
    history = load_split(campaign_root / "dataset", "valid", 8).history
    with torch.no_grad():
        torch.testing.assert_close(served.model.scores(history), trial_model.scores(history))
    assert served.metrics["test"] == result.test and served.metrics["valid"] == result.best_valid
    assert served.manifest["lineage"]["trial_id"] == best["trial_id"]
    assert served.manifest["config"]["train"]["lr"] == pytest.approx(result.best_params["train.lr"])
    summary = json.loads((result.campaign_dir / "summary.json").read_text())
    assert summary["winner"]["test"] == result.test and summary["seed"] == config.seed


def test_an_interrupted_campaign_resumes_without_losing_finished_trials(ray_cluster, tiny_root, campaign_root,
                                                                         tmp_path):
    # one trial at a time; 24 epochs of small batches give the last trial seconds to spare for the Ctrl-C to land in
    trial_epochs = 24
    overrides = ["tune.num_samples=4", "tune.max_concurrent=1", "tune.scheduler=fifo",
                 f"tune.max_epochs={trial_epochs}", "train.patience=100", "train.batch_size=4"]
    config_file = tmp_path / "campaign.yaml"
    config_file.write_text(json.dumps(campaign_config(tiny_root, campaign_root, *overrides).model_dump(mode="json")))
    campaign = campaign_root / "tune" / "distill"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ""}
    process = subprocess.Popen([sys.executable, "-m", "rdistill.cli", "tune", "--config", str(config_file)],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:  # Ctrl-C once the last trial has reported an epoch: with one trial at a time, the first three are then
        deadline = time.time() + 420  # recorded finished, and the last is cut short mid-run, which must not
        while time.time() < deadline and sum(bool(path.read_text().strip())  # pass for a finished campaign
                                             for path in campaign.glob("*/result.json")) < 4:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 2, output[-3000:]
    assert "run the same command again to resume" in output
    # finished as Tune recorded it: a trial can have reported its last epoch and still be cut short before that
    from ray.tune import ExperimentAnalysis

    finished_ids = {trial.trial_id for trial in ExperimentAnalysis(str(campaign)).trials
                    if trial.status == "TERMINATED"}
    finished_before = {path.parent.name: path.read_text() for path in campaign.glob("*/result.json")
                       if path.parent.name.split("_")[2] in finished_ids}
    assert 1 <= len(finished_before) == len(finished_ids) < 4
    assert all(len(lines.splitlines()) == trial_epochs for lines in finished_before.values())

    result = tune_students(campaign_config(tiny_root, campaign_root, *overrides))
    assert result.restored
    assert len(result.trials) == 4 and all(trial["epochs"] == trial_epochs for trial in result.trials), result.trials
    for path in campaign.glob("*/result.json"):  # a trial cut short went on from its checkpoint, not from epoch 1
        epochs = [json.loads(line)["epoch"] for line in path.read_text().splitlines()]
        assert epochs.count(1) == 1 and max(epochs) == trial_epochs, (path.parent.name, epochs)
    for name, lines in finished_before.items():  # finished trials were kept, not run again
        assert (campaign / name / "result.json").read_text() == lines


def test_a_resumed_trial_is_tabled_with_one_value_per_epoch_the_latest():
    assert latest_per_epoch([0.1, 0.2, 0.3], [1, 2, 3]) == [0.1, 0.2, 0.3]
    # cut short after reporting epoch 2 but before Tune recorded its checkpoint: resumed from epoch 1's
    assert latest_per_epoch([0.1, 0.2, 0.21, 0.3], [1, 2, 2, 3]) == [0.1, 0.21, 0.3]
    # no checkpoint survived: the trial ran from its first epoch again
    assert latest_per_epoch([0.1, 0.2, 0.11, 0.21, 0.3], [1, 2, 1, 2, 3]) == [0.11, 0.21, 0.3]
    assert latest_per_epoch([], []) == []


def test_a_changed_config_does_not_restore_someone_elses_campaign(ray_cluster, tiny_root, campaign_root):
    campaign = campaign_root / "tune" / "distill"
    campaign.mkdir(parents=True)
    (campaign / "campaign.json").write_text(json.dumps({"key": "another"}))
    with pytest.raises(ConfigError, match="different config or inputs: choose another tune.name, or pass --fresh"):
        tune_students(campaign_config(tiny_root, campaign_root))


def test_space_wider_than_the_signals_fails_before_any_trial(tiny_root, campaign_root):
    config = campaign_config(tiny_root, campaign_root,
                             "tune.space={distill.top_k: {type: choice, values: [2, 10]}}")
    with pytest.raises(ConfigError, match="reaches 10 but the signals hold the teacher's top 4"):
        tune_students(config)


def test_latency_objective_saves_the_pareto_front_and_picks_the_winner_within_the_budget(
        ray_cluster, tiny_root, campaign_root):
    space = ("tune.space={student.params.hidden_size: {type: choice, values: [4, 256]}, "
             "train.lr: {type: loguniform, low: 0.001, high: 0.01}}")
    overrides = [space, "tune.objective=quality_latency", "tune.scheduler=fifo", "tune.max_epochs=2"]
    result = tune_students(campaign_config(tiny_root, campaign_root, *overrides))

    pareto = json.loads((result.campaign_dir / "pareto.json").read_text())
    points = pareto["trials"]
    assert len(points) == 4 and all(point["latency_ms"] > 0 for point in points)
    front_ids = {point["trial_id"] for point in pareto["front"]}
    for point in points:  # a front trial is beaten by no trial; any other trial is beaten by a front trial
        beaten_by = [other for other in points if other["latency_ms"] <= point["latency_ms"]
                     and other["best"] >= point["best"] and other is not point
                     and (other["latency_ms"], other["best"]) != (point["latency_ms"], point["best"])]
        assert (point["trial_id"] in front_ids) == (not beaten_by), (point, beaten_by)
    summary = json.loads((result.campaign_dir / "summary.json").read_text())
    assert summary["objective"] == "quality_latency" and set(summary["pareto_front"]) == front_ids
    assert result.best_valid["ndcg_at_10"] == pytest.approx(max(point["best"] for point in points))  # no budget

    # the same finished campaign with a budget only the fastest trial meets: it becomes the winner, no new trial
    fastest = min(points, key=lambda point: (point["latency_ms"], -point["best"]))
    budgeted = tune_students(campaign_config(tiny_root, campaign_root, *overrides,
                                             f"tune.latency_budget_ms={fastest['latency_ms']}"))
    assert budgeted.restored and len(budgeted.trials) == 4
    within = [point for point in points if point["latency_ms"] <= fastest["latency_ms"]]
    assert budgeted.best_valid["ndcg_at_10"] == pytest.approx(max(point["best"] for point in within))
    served = load_exported(budgeted.serving_dir)
    assert served.manifest["lineage"]["trial_id"] in {point["trial_id"] for point in within}

    with pytest.raises(ConfigError, match=r"no trial .* scores within tune.latency_budget_ms=.* raise the budget"):
        tune_students(campaign_config(tiny_root, campaign_root, *overrides,
                                      f"tune.latency_budget_ms={fastest['latency_ms'] / 2}"))


def test_a_latency_budget_needs_the_latency_objective(tiny_root):
    with pytest.raises(ConfigError, match="latency_budget_ms needs objective: quality_latency"):
        tiny_config(tiny_root, "tune.latency_budget_ms=5")


def test_a_plain_student_search_finds_and_exports_a_winner(ray_cluster, tiny_root, tmp_path):
    import shutil

    """tune.preset=plain: the student's own hyper-parameters, no teacher signals needed (the tuned baseline)."""
    from rdistill.config import plain_search_space
    from rdistill.stages.registry import StageContext, run_stage
    from rdistill.stages.tune import tune_inputs

    shutil.copytree(tiny_root / "artifacts" / "dataset", tmp_path / "dataset")
    config = tiny_config(tiny_root, f"artifact_root={tmp_path}", "student.name=sasrec",
                         "tune.preset=plain", "tune.name=plain", "tune.num_samples=3", "tune.max_epochs=2",
                         "tune.scheduler=fifo", "tune.max_concurrent=2", "train.progress=false")
    space = config.tune.search_space("sasrec")
    assert space == plain_search_space("sasrec")
    assert {"train.lr", "train.batch_size", "student.params.num_heads", "student.params.dropout"} <= set(space)
    assert "student.params.num_heads" not in plain_search_space("gru4rec")
    assert [address.path for address in tune_inputs(config)] == ["dataset"]  # no signals for a plain search

    summary = run_stage("tune", StageContext(config))
    assert summary["trials"] == 3 and set(summary["best_params"]) == set(space)
    served = load_exported(tmp_path / "serving" / "model")
    assert served.name == "sasrec" and served.metrics["params"] == summary["best_params"]
    assert served.metrics["test"]["ndcg_at_10"] == pytest.approx(summary["test"]["ndcg_at_10"])
