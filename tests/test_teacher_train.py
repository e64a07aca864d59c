"""Teacher fine-tuning on a real local Ray with real DeepSpeed (gloo, CPU) and a tiny random BERT."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from rdistill.config import Config
from rdistill.data.dataset import load_dataset_info, load_split, sequence_window_rows
from rdistill.errors import ArtifactError, ConfigError
from rdistill.evaluate import evaluate_scorer
from rdistill.models.lm_teacher import load_teacher
from rdistill.teacher.train import FAULT_MARKER, check_teacher_inputs, train_teacher

from tiny_data import tiny_config

pytestmark = pytest.mark.integration


def teacher_config(tiny_root, tmp_path, backbone, *overrides: str) -> Config:
    """The prepared tiny dataset copied under tmp_path, so each run has its own teacher/ folder."""
    shutil.copytree(tiny_root / "artifacts" / "dataset", tmp_path / "dataset")
    return tiny_config(tiny_root, f"artifact_root={tmp_path}", f"teacher.model={backbone}", "teacher.batch_size=16",
                       "teacher.lr_backbone=0.001", "teacher.lr_head=0.01", "teacher.dropout=0.0", *overrides)


def test_zero2_two_workers_learn_checkpoint_and_consolidate(ray_cluster, tiny_root, tiny_backbone, tmp_path):
    config = teacher_config(tiny_root, tmp_path, tiny_backbone, "teacher.epochs=2", "teacher.zero_stage=2",
                            "teacher.patience=2")
    result = train_teacher(config)
    metrics = json.loads((result.checkpoint_dir / "metrics.json").read_text())
    history = metrics["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # 816 train rows, 2 workers, micro-batches of 16: 25 optimizer steps per epoch
    assert [row["global_step"] for row in history] == [25, 50]

    # the consolidated fp32 teacher reproduces exactly what the workers measured on validation
    best = max(history, key=lambda row: row["valid_ndcg_at_10"])
    assert metrics["valid"]["ndcg_at_10"] == pytest.approx(best["valid_ndcg_at_10"], abs=1e-9)
    teacher, _ = load_teacher(result.checkpoint_dir)
    dataset_dir = tmp_path / "dataset"
    info = load_dataset_info(dataset_dir)
    valid = load_split(dataset_dir, "valid", info.max_len)
    assert evaluate_scorer(teacher.scores, valid, [10])["ndcg_at_10"] == pytest.approx(best["valid_ndcg_at_10"],
                                                                                     abs=1e-9)
    assert (tmp_path / "teacher" / "ds_checkpoint" / "latest").is_file()
    assert json.loads((result.checkpoint_dir / "manifest.json").read_text())["counts"]["workers"] == 2


def test_a_failed_worker_resumes_from_the_last_checkpoint(ray_cluster, tiny_root, tiny_backbone, tmp_path):
    # fails once at step 30, in epoch 2, after epoch 1 (steps 1-25) was checkpointed
    config = teacher_config(tiny_root, tmp_path, tiny_backbone, "teacher.epochs=2", "teacher.patience=2",
                            "teacher.fail_once_at_step=30", "teacher.max_failures=1")
    result = train_teacher(config)
    assert (tmp_path / "teacher" / FAULT_MARKER).read_text().startswith("failed at step 30")
    metrics = json.loads((result.checkpoint_dir / "metrics.json").read_text())
    # the step counter continued from the checkpoint (25) rather than restarting from 0
    assert result.global_steps == 50
    assert [row["global_step"] for row in metrics["history"]][-1] == 50


def test_zero3_runs_and_consolidates(ray_cluster, tiny_root, tiny_backbone, tmp_path):
    config = teacher_config(tiny_root, tmp_path, tiny_backbone, "teacher.epochs=1", "teacher.zero_stage=3",
                            "teacher.max_steps_per_epoch=10")
    result = train_teacher(config)
    assert result.global_steps == 10
    teacher, _ = load_teacher(result.checkpoint_dir)
    assert torch.isfinite(teacher.scores(torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6]]))[:, 1:]).all()
    metrics = json.loads((result.checkpoint_dir / "metrics.json").read_text())
    assert metrics["valid"]["ndcg_at_10"] == pytest.approx(metrics["history"][-1]["valid_ndcg_at_10"], abs=1e-9)


def test_a_causal_teacher_trains_on_every_position_of_fewer_rows(ray_cluster, tiny_root, tiny_backbone, tmp_path):
    config = teacher_config(tiny_root, tmp_path, tiny_backbone, "teacher.epochs=2", "teacher.patience=2",
                            "teacher.causal=true", "teacher.objective=all_positions")
    dataset_dir = tmp_path / "dataset"
    info = load_dataset_info(dataset_dir)
    train = load_split(dataset_dir, "train", info.max_len)
    windows = len(sequence_window_rows(train.user_idx, info.max_len))
    assert windows < len(train) / 3  # each window row is read at every position: far fewer rows than prefixes
    result = train_teacher(config)
    metrics = json.loads((result.checkpoint_dir / "metrics.json").read_text())
    history = metrics["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert [row["global_step"] for row in history] == [windows // 2 // 16, 2 * (windows // 2 // 16)]
    teacher, _ = load_teacher(result.checkpoint_dir)
    assert teacher.causal_mask
    best = max(history, key=lambda row: row["valid_ndcg_at_10"])
    valid = load_split(dataset_dir, "valid", info.max_len)
    assert evaluate_scorer(teacher.scores, valid, [10])["ndcg_at_10"] == pytest.approx(best["valid_ndcg_at_10"],
                                                                                     abs=1e-9)


class TestBadInputStopsBeforeWorkers:
    def test_all_positions_on_a_bidirectional_encoder(self, tiny_root, tiny_backbone):
        config = tiny_config(tiny_root, f"teacher.model={tiny_backbone}", "teacher.objective=all_positions")
        with pytest.raises(ConfigError, match="needs a causal teacher.*set teacher.causal=true"):
            check_teacher_inputs(config)

    def test_missing_tables(self, tmp_path, tiny_backbone):
        config = tiny_config(tmp_path, f"teacher.model={tiny_backbone}")
        with pytest.raises(ArtifactError, match="dataset/items.parquet is missing"):
            check_teacher_inputs(config)

    def test_not_a_checkpoint(self, tiny_root, tmp_path):
        config = tiny_config(tiny_root, f"teacher.model={tmp_path}")
        with pytest.raises(ConfigError, match="is not a Hugging Face checkpoint folder"):
            check_teacher_inputs(config)

    def test_fp16_on_cpu(self, tiny_root, tiny_backbone):
        config = tiny_config(tiny_root, f"teacher.model={tiny_backbone}", "teacher.deepspeed={fp16: {enabled: true}}")
        with pytest.raises(ConfigError, match="fp16.enabled=true needs GPUs"):
            check_teacher_inputs(config)
