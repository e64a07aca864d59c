"""The distillation term registry (rdistill/distill/terms.py), extended from outside the package: a term with a
trainable parameter, and a student, each added in one class plus one line, trained through train_student."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import Field
from torch import nn

from rdistill.config import load_config
from rdistill.distill.terms import (
    USER_EMB,
    DistillBatch,
    DistillTerm,
    TermConfig,
    register_term,
    registered_terms,
    unregister_term,
)
from rdistill.distill.train import TRAIN_STATE_FILE, TrainState, train_student
from rdistill.errors import ConfigError
from rdistill.models import STUDENTS, load_student
from rdistill.models.base import SequentialRecommender

from tiny_data import dataset_with_signals, tiny_config


class CalibrationConfig(TermConfig):
    target: float = Field(2.0)  # the score the calibrated target logit should reach


class TargetCalibration(DistillTerm):
    """A toy term: a learned scale s makes s * (the student's logit of the true next item) reach `target`.
    It has its own trainable parameter, reads the teacher's user vectors, and counts its calls."""

    name = "calibration"
    Config = CalibrationConfig
    needs = frozenset({USER_EMB})
    instances: list[TargetCalibration] = []

    def __init__(self, config, model, signals):
        super().__init__(config, model, signals)
        self.scale = nn.Linear(1, 1, bias=False)  # a module of its own, not hung on the student
        nn.init.ones_(self.scale.weight)
        self.calls = 0
        TargetCalibration.instances.append(self)

    def trainable(self) -> nn.Module:
        return self.scale

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        assert batch.user_emb.shape[0] == batch.logits.shape[0]  # one teacher user vector per position
        self.calls += 1
        target_logits = batch.logits.gather(1, batch.targets[:, None])
        return (self.scale(target_logits) - self.config.target).pow(2).mean()


@pytest.fixture
def calibration_term():
    TargetCalibration.instances.clear()
    register_term(TargetCalibration)  # the one line that makes a term known
    yield TargetCalibration
    unregister_term(TargetCalibration.name)


def test_a_term_registered_from_outside_trains_with_its_own_parameter(calibration_term, tiny_root, tmp_path):
    root = dataset_with_signals(tiny_root, tmp_path / "root")
    config = tiny_config(tiny_root, f"artifact_root={root}", "train.epochs=2", "train.patience=5",
                         "train.run_name=calibrated", "distill.calibration.weight=1.5",
                         "distill.calibration.target=3.0")
    assert config.distill.calibration.target == 3.0 and config.distill.uses_teacher()
    states = []
    result = train_student(config, on_epoch_end=lambda report: states.append(report.state()))

    term = calibration_term.instances[-1]
    assert term.calls > 0
    history = json.loads((result.run_dir / "metrics.json").read_text())["history"]
    assert all("loss_calibration" in epoch for epoch in history)
    assert history[0]["train_loss"] > history[0]["loss_ce"]  # its weighted loss is part of the training loss
    scale = term.scale.weight.item()
    assert scale != 1.0  # the optimizer trained the term's parameter
    # a resumable state carries the term's parameter, which is not part of the student
    assert states[-1].terms["calibration"]["weight"].item() == scale
    state_path = tmp_path / TRAIN_STATE_FILE
    states[0].save(state_path)
    resumed = train_student(config, run_dir=tmp_path / "resumed", resume=TrainState.load(state_path))
    assert resumed.valid == result.valid
    assert calibration_term.instances[-1].scale.weight.item() == scale
    # the saved student is a plain student: nothing of the term is in it
    assert not any("scale" in key for key in load_student(result.run_dir).state_dict())


def test_a_term_switched_off_is_not_built_and_config_keys_are_checked(calibration_term, tiny_root):
    config = tiny_config(tiny_root, "train.epochs=1", "train.run_name=switched-off")
    assert config.distill.calibration.weight == 0 and not config.distill.uses_teacher()
    train_student(config, evaluate_test=False)
    assert calibration_term.instances == []
    with pytest.raises(ConfigError, match="distill.calibration.targte: unknown key"):
        tiny_config(tiny_root, "distill.calibration.targte=1")


def test_registration_refuses_clashes_and_unknown_signals():
    assert list(registered_terms())[:5] == ["kd", "rank", "embed", "feature", "block_ce"]

    class Clash(DistillTerm):
        name = "kd"

    class Reserved(DistillTerm):
        name = "top_k"

    class UnknownSignal(DistillTerm):
        name = "unknown_signal"
        needs = frozenset({"teacher_mood"})

    for term, message in [(Clash, "'kd' already exists"), (Reserved, "'top_k' already exists"),
                          (UnknownSignal, "unknown signals")]:
        with pytest.raises(ConfigError, match=message):
            register_term(term)
    assert "unknown_signal" not in registered_terms()


# ------------------------------------------------------------------------------------- adding a student


class MeanOfItems(SequentialRecommender):
    """A toy student: the user state is the mean of the history's item vectors (no order at all)."""

    name = "mean_of_items"

    def __init__(self, n_items, max_len, params):
        super().__init__(n_items, max_len, params)
        self.init_item_embeddings(std=0.1)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        history = self.most_recent(history)
        vectors = self.embed_history(history)
        return vectors.sum(1) / (history != 0).sum(1, keepdim=True).clamp_min(1)


@pytest.mark.parametrize("distill", [[], ["distill.kd.weight=1", "distill.embed.weight=0.3"]],
                         ids=["plain", "distilled"])
def test_adding_a_student_is_one_class_and_one_registry_line(monkeypatch, tiny_root, tmp_path, distill):
    monkeypatch.setitem(STUDENTS, MeanOfItems.name, MeanOfItems)  # the one line in rdistill/models/__init__.py
    root = dataset_with_signals(tiny_root, tmp_path / "root") if distill else tiny_root / "artifacts"
    config = tiny_config(tiny_root, f"artifact_root={root}", "student.name=mean_of_items", "train.epochs=2",
                         "train.run_name=mean", *distill)
    result = train_student(config)
    assert result.epochs_run == 2 and 0 < result.valid["ndcg_at_10"] <= 1
    history = json.loads((result.run_dir / "metrics.json").read_text())["history"]
    assert ("loss_kd" in history[0]) == bool(distill)
    assert isinstance(load_student(result.run_dir), MeanOfItems)


def test_every_packaged_config_uses_the_new_distill_keys():
    from rdistill.config import packaged_configs, profile_overrides

    for profile in ("quick", "full"):
        config = load_config(None, profile_overrides(profile))
        for key in config.tune.space:
            assert not key.startswith("distill.") or key == "distill.top_k" or key.count(".") == 2, key
    for entry in packaged_configs().iterdir():
        if entry.name.endswith(".yaml"):
            assert "_weight" not in entry.read_text(), entry.name
