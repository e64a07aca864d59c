"""The slm student: cut from the teacher, distilled on the teacher's hidden states (SLMRec)."""

from __future__ import annotations

import json

import pytest
import torch

from rdistill.data.dataset import load_split
from rdistill.distill.train import train_student
from rdistill.errors import ArtifactError, ConfigError
from rdistill.evaluate import evaluate_model
from rdistill.models import load_student
from rdistill.teacher.infer import infer_teacher
from rdistill.teacher.signals import load_signals

from test_teacher_infer import make_teacher
from tiny_data import tiny_config


def slm_overrides(*extra: str) -> list[str]:
    return ["student.name=slm", "student.params={num_layers: 2, feature_blocks: 2, dropout: 0.0}",
            "train.batch_size=64", *extra]


def test_a_full_depth_cut_is_the_teacher(tiny_root, tiny_backbone, tmp_path):
    config, teacher, info = make_teacher(tiny_root, tmp_path, tiny_backbone, *slm_overrides("train.epochs=1"))
    from rdistill.distill.train import _build_model
    from rdistill.artifacts import ArtifactLayout

    student = _build_model(config, ArtifactLayout(tmp_path), info).eval()
    history = load_split(tmp_path / "dataset", "valid", info.max_len).history
    with torch.no_grad():
        torch.testing.assert_close(student.scores(history), teacher.scores(history), rtol=1e-5, atol=1e-5)
    assert student.aligned_layers() == [(1, 1), (2, 2)]
    assert student.num_parameters() < teacher.num_parameters()  # no frozen text table, no pooler


@pytest.mark.integration
def test_feature_distillation_trains_saves_and_reloads(ray_cluster, tiny_root, tiny_backbone, tmp_path):
    student = ["student.name=slm", "student.params={num_layers: 1, feature_blocks: 1, dropout: 0.0}",
               "train.epochs=3", "train.patience=3", "train.batch_size=64", "train.lr=0.003"]
    config, teacher, info = make_teacher(tiny_root, tmp_path, tiny_backbone, "infer.hidden_layers=[1, 2]",
                                         "infer.top_k=5", *student)
    infer_teacher(config)
    signals = load_signals(tmp_path / "signals")
    train = load_split(tmp_path / "dataset", "train", info.max_len)

    def distance_to_teacher(model) -> float:
        """Mean 1 - cos between the student's block state and the teacher's layer-2 state on train rows."""
        with torch.no_grad():
            _, blocks = model.eval().encode(train.history)
        teacher_states = torch.from_numpy(signals.hidden[2])
        return (1 - torch.nn.functional.cosine_similarity(blocks[0], teacher_states, dim=1)).mean().item()

    runs = {}
    for name, weights in {"plain": [], "distilled": ["distill.feature.weight=5.0", "distill.kd.weight=0.5"]}.items():
        run_config = tiny_config(tiny_root, f"artifact_root={tmp_path}", f"teacher.model={tiny_backbone}",
                                 f"train.run_name={name}", *student, *weights)
        runs[name] = train_student(run_config)
    history = json.loads((runs["distilled"].run_dir / "metrics.json").read_text())["history"]
    assert {"loss_ce", "loss_kd", "loss_feature"} <= set(history[0])
    # feature distillation keeps the one-layer student's state closer to the teacher's last layer
    plain, distilled = (distance_to_teacher(load_student(runs[name].run_dir)) for name in ("plain", "distilled"))
    assert distilled < plain * 0.8, (plain, distilled)

    # a saved slm rebuilds on its own (no teacher needed), one layer of two, aligned to the teacher's last
    model = load_student(runs["distilled"].run_dir)
    assert model.aligned_layers() == [(1, 2)] and model.backbone.config.num_hidden_layers == 1
    valid = load_split(tmp_path / "dataset", "valid", info.max_len)
    assert evaluate_model(model, valid, [10])["ndcg_at_10"] == pytest.approx(runs["distilled"].valid["ndcg_at_10"])

    # hidden states of layers the signals do not hold: a clear error before training
    bad = tiny_config(tiny_root, f"artifact_root={tmp_path}", f"teacher.model={tiny_backbone}", "student.name=slm",
                      "student.params={num_layers: 2, feature_blocks: 2}", "distill.feature.weight=1.0")
    (tmp_path / "signals" / "hidden.parquet").unlink()
    with pytest.raises(ConfigError, match=r"aligns to teacher layers \[1, 2\] but the signals hold hidden states "
                                          r"for \[\]"):
        train_student(bad)


def test_slm_without_a_teacher_is_a_clear_error(tiny_root, tmp_path):
    import shutil

    shutil.copytree(tiny_root / "artifacts" / "dataset", tmp_path / "dataset")
    with pytest.raises(ArtifactError, match="holds no trained teacher: the slm student is cut from one"):
        train_student(tiny_config(tiny_root, f"artifact_root={tmp_path}", *slm_overrides()))
