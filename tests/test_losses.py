"""Distillation losses against values worked out by hand, and the distillation training run on fixture signals."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from rdistill.data.dataset import load_dataset_info, load_split, sequence_windows
from rdistill.distill.losses import (
    ItemEmbeddingOffset,
    feature_loss,
    kd_loss,
    rank_loss,
    ranking_weights,
    recommendation_loss,
    teacher_initialised_table,
)
from rdistill.distill.train import DistillationObjective, load_train_signals, train_student
from rdistill.errors import ArtifactError, ConfigError
from rdistill.models import build_student, load_student, save_student

from tiny_data import tiny_config, write_signals


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


class TestKnowledgeDistillation:
    def test_value_by_hand(self):
        # teacher uniform over 2 candidates, student logits (1, 0): KL = log .5 - .5 * (log p1 + log p2)
        z = math.log(1 + math.e)
        expected = math.log(0.5) - 0.5 * ((1 - z) + (0 - z))
        assert kd_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), 1.0).item() == pytest.approx(expected)

    def test_temperature_softens_and_scales_by_t_squared(self):
        z = math.log(1 + math.exp(0.5))
        kl = math.log(0.5) - 0.5 * ((0.5 - z) + (0 - z))
        assert kd_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), 2.0).item() == pytest.approx(4 * kl)

    def test_zero_when_student_matches_and_gradient_reaches_the_student_only(self):
        teacher = torch.tensor([[3.0, 1.0, -2.0]], requires_grad=True)
        same = teacher.detach().clone().requires_grad_(True)
        assert kd_loss(same, teacher, 1.5).item() == pytest.approx(0.0, abs=1e-7)
        student = torch.tensor([[0.0, 0.0, 0.0]], requires_grad=True)
        kd_loss(student, teacher.detach(), 1.0).backward()
        # d KL / d s = softmax(s) - p_teacher: pushes the teacher's favourite up
        p = torch.softmax(teacher.detach(), 1)
        torch.testing.assert_close(student.grad, torch.full((1, 3), 1 / 3) - p)


class TestRecommendationLoss:
    def test_softmax_is_cross_entropy_over_the_catalogue(self):
        logits = torch.tensor([[float("-inf"), 2.0, 0.0, -1.0]])
        expected = -(2.0 - math.log(math.exp(2.0) + 1.0 + math.exp(-1.0)))
        assert recommendation_loss(logits, torch.tensor([1]), "softmax").item() == pytest.approx(expected)

    def test_bce_by_hand(self):
        # two items: the only negative for target 1 is item 2, so -log sigma(1) - log sigma(2)
        logits = torch.tensor([[float("-inf"), 1.0, -2.0]], requires_grad=True)
        loss = recommendation_loss(logits, torch.tensor([1]), "bce", torch.Generator().manual_seed(0))
        assert loss.item() == pytest.approx(-log_sigmoid(1.0) - log_sigmoid(2.0))
        loss.backward()
        # d/ds_pos = sigma(s_pos) - 1, d/ds_neg = sigma(s_neg); nothing reaches the padding column
        sigma = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
        torch.testing.assert_close(logits.grad, torch.tensor([[0.0, sigma(1.0) - 1, sigma(-2.0)]]))

    def test_bce_negatives_are_uniform_over_every_item_but_the_target(self):
        n_items, draws = 5, 20000
        targets = torch.full((draws,), 3)
        logits = torch.zeros(draws, n_items + 1, requires_grad=True)
        recommendation_loss(logits, targets, "bce", torch.Generator().manual_seed(1)).backward()
        drawn = (logits.grad[:, [1, 2, 4, 5]] > 0).sum(0).float() / draws  # a negative's gradient is positive
        assert (logits.grad[:, 0] == 0).all() and (logits.grad[:, 3] < 0).all()
        torch.testing.assert_close(drawn, torch.full((4,), 0.25), atol=0.02, rtol=0)

    def test_unknown_kind(self):
        with pytest.raises(ValueError, match="unknown recommendation loss 'hinge'"):
            recommendation_loss(torch.zeros(1, 3), torch.tensor([1]), "hinge")


class TestRankingDistillation:
    def test_position_weights(self):
        weights = ranking_weights(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool), 1.0, 1.0, 0.0, 0.0)
        raw = [1, math.exp(-1), math.exp(-2)]
        torch.testing.assert_close(weights, torch.tensor([[r / sum(raw) for r in raw]]))

    def test_confidence_weights_are_the_softmax_of_teacher_scores(self):
        scores = torch.tensor([[2.0, 1.0, 0.0]])
        weights = ranking_weights(scores, torch.zeros(1, 3, dtype=torch.bool), 1.0, 0.0, 1.0, 0.0)
        torch.testing.assert_close(weights, torch.softmax(scores, 1))

    def test_consistency_and_the_combination(self):
        in_student = torch.tensor([[True, False, True]])
        only = ranking_weights(torch.zeros(1, 3), in_student, 1.0, 0.0, 0.0, 1.0)
        torch.testing.assert_close(only, torch.tensor([[0.5, 0.0, 0.5]]))
        # gamma 0.5 position + 0.5 consistency, renormalised (each part already sums to 1)
        raw = torch.tensor([1, math.exp(-1), math.exp(-2)])
        expected = 0.5 * raw / raw.sum() + 0.5 * torch.tensor([0.5, 0.0, 0.5])
        combined = ranking_weights(torch.zeros(1, 3), in_student, 1.0, 0.5, 0.0, 0.5)
        torch.testing.assert_close(combined, (expected / expected.sum())[None])
        assert combined.sum().item() == pytest.approx(1.0)

    def test_no_gradient_through_the_weights(self):
        scores = torch.tensor([[1.0, 0.5]], requires_grad=True)
        weights = ranking_weights(scores, torch.tensor([[True, True]]), 2.0, 0.3, 0.4, 0.3)
        assert not weights.requires_grad

    def test_rank_loss_by_hand(self):
        # weights .5/.5 on two candidates scored 0, negatives scored 0: 2 * log 2
        value = rank_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[0.5, 0.5]]))
        assert value.item() == pytest.approx(2 * math.log(2))
        # the standard negative term: -log sigma(2) - log sigma(-(-1))
        value = rank_loss(torch.tensor([[2.0]]), torch.tensor([[-1.0]]), torch.tensor([[1.0]]))
        assert value.item() == pytest.approx(-log_sigmoid(2.0) - log_sigmoid(1.0))

    def test_rank_loss_gradients_push_candidates_up_and_negatives_down(self):
        candidates = torch.tensor([[0.0, 0.0]], requires_grad=True)
        negatives = torch.tensor([[0.0, 0.0]], requires_grad=True)
        weights = torch.tensor([[0.75, 0.25]], requires_grad=True)
        rank_loss(candidates, negatives, weights).backward()
        torch.testing.assert_close(candidates.grad, torch.tensor([[-0.375, -0.125]]))  # -w * sigma(-0)
        torch.testing.assert_close(negatives.grad, torch.tensor([[0.375, 0.125]]))
        assert weights.grad is None


class TestFeatureDistillation:
    def test_value_by_hand(self):
        student, teacher = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        assert feature_loss(student, teacher, 2.0).item() == pytest.approx(2.0 * 1 + 0.1 * math.sqrt(2))
        assert feature_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)

    def test_gradient_only_to_the_student(self):
        student = torch.tensor([[1.0, 2.0]], requires_grad=True)
        teacher = torch.tensor([[2.0, 1.0]], requires_grad=True)
        feature_loss(student, teacher, 1.0).backward()
        assert student.grad is not None and teacher.grad is None


class TestEmbeddingDistillation:
    def test_offset_is_added_padding_stays_zero_and_folds_into_a_plain_student(self, tmp_path):
        torch.manual_seed(0)
        model = build_student("sasrec", 6, 4, {"hidden_size": 8, "dropout": 0.0}).eval()
        teacher_items = torch.cat([torch.zeros(1, 5), torch.randn(6, 5)])
        model.item_offset = ItemEmbeddingOffset(teacher_items, 8, omega=0.5)
        offset = model.item_offset()
        assert torch.all(offset[0] == 0)
        expected = model.item_embedding.weight + 0.5 * model.item_offset.projection(teacher_items) * \
            torch.tensor([[0.0]] + [[1.0]] * 6)
        torch.testing.assert_close(model.item_embeddings(), expected)
        history = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 1]])
        before = model.scores(history)
        save_student(model, tmp_path / "saved")  # saves the folded table
        loaded = load_student(tmp_path / "saved")
        torch.testing.assert_close(loaded.scores(history), before)
        model.fold_item_embeddings()
        assert model.item_offset is None
        torch.testing.assert_close(model.scores(history), before)

    def test_teacher_initialised_table(self):
        rng = np.random.default_rng(0)
        table = np.concatenate([np.zeros((1, 12)), rng.normal(size=(30, 12))]).astype(np.float32)
        init = teacher_initialised_table(table, 4, std=0.02)
        assert init.shape == (31, 4) and torch.all(init[0] == 0)
        assert init[1:].std(correction=0).item() == pytest.approx(0.02, rel=1e-3)
        # PCA keeps the directions of largest variance: the first component explains the most
        variances = init[1:].var(dim=0)
        assert torch.all(variances[:-1] >= variances[1:])


# ------------------------------------------------------------------------------------- training on signals


@pytest.fixture
def shifted_teacher(tiny_root, tmp_path):
    """A 'teacher' whose favourite next item is always target + 5 (cyclic over the 40 items), then the target:
    a consistent preference that plain training never learns, so its effect on a student is measurable."""
    shutil.copytree(tiny_root / "artifacts" / "dataset", tmp_path / "dataset")
    train = load_split(tmp_path / "dataset", "train", 8)
    target = train.target.numpy()
    shifted = (target - 1 + 5) % 40 + 1
    others = np.stack([(target - 1 + offset) % 40 + 1 for offset in (7, 11)], axis=1)
    topk = np.concatenate([shifted[:, None], target[:, None], others], axis=1)
    scores = np.tile(np.array([[6.0, 3.0, 0.0, -1.0]], np.float32), (len(target), 1))
    item_emb = np.random.default_rng(0).normal(size=(41, 12)).astype(np.float32)
    item_emb[0] = 0
    write_signals(tmp_path, topk, scores, item_emb)
    return tmp_path


def test_every_position_maps_to_the_train_row_that_ends_there(shifted_teacher, tiny_root):
    config = tiny_config(tiny_root, f"artifact_root={shifted_teacher}", "distill.kd.weight=1")
    info = load_dataset_info(shifted_teacher / "dataset")
    train = load_split(shifted_teacher / "dataset", "train", info.max_len)
    model = build_student("sasrec", info.n_items, info.max_len, {"hidden_size": 8})
    objective = DistillationObjective(model, "all_positions", config.distill, load_train_signals(config, train, info),
                         torch.Generator().manual_seed(0))
    windows = sequence_windows(train)
    logits, next_items, steps_back = model.position_logits(windows.history, windows.target)
    rows = windows.row_id.repeat_interleave((windows.history != 0).sum(1)) - steps_back
    # the row a position is mapped to has exactly that position's next item as its target
    assert torch.equal(train.target[rows], next_items)
    assert len(rows) == len(train)  # the windows cover every train row once
    assert sorted(rows.tolist()) == list(range(len(train)))
    loss, parts = objective(windows.history[:16], windows.target[:16], windows.row_id[:16])
    assert set(parts) == {"loss_ce", "loss_kd"} and loss.item() > parts["loss_ce"]


@pytest.mark.parametrize("student, term, protocol", [
    ("sasrec", "kd", ()), ("sasrec", "rank", ()), ("caser", "kd", ()),
    ("caser", "rank", ()), ("sasrec", "rank", ("train.loss=bce", "train.objective=last_position"))],
    ids=["sasrec-kd", "sasrec-rank", "caser-kd", "caser-rank", "sasrec-rank-dllm2rec_protocol"])
def test_distillation_moves_the_student_towards_the_teacher(shifted_teacher, tiny_root, student, term, protocol):
    """sasrec is distilled at every position (all_positions), caser at each row's last one; the last case trains
    with BCE at the last position, as DLLM2Rec's code does."""
    def rank_of_teacher_favourite(run_name: str, *overrides: str):
        config = tiny_config(tiny_root, f"artifact_root={shifted_teacher}", f"student.name={student}",
                             "train.epochs=10", "train.patience=10", f"train.run_name={run_name}", "train.lr=0.003",
                             *protocol, *overrides)
        result = train_student(config)
        model = load_student(result.run_dir)
        valid = load_split(shifted_teacher / "dataset", "valid", 8)
        with torch.no_grad():
            scores = model.scores(valid.history)
        favourite = (valid.target - 1 + 5) % 40 + 1
        return (scores > scores.gather(1, favourite[:, None])).sum(1).float().mean().item(), result

    plain, _ = rank_of_teacher_favourite("plain")
    distilled, result = rank_of_teacher_favourite(term, f"distill.{term}.weight=5")
    # the plain student ranks the teacher's favourite about as a random item (~20th of 40); distilled, near the top
    assert plain > 12 and distilled < plain / 3, (plain, distilled)
    history = json.loads((result.run_dir / "metrics.json").read_text())["history"]
    part = f"loss_{term}"
    assert {"loss_bce" if protocol else "loss_ce", part} <= set(history[0])
    assert history[-1][part] < history[0][part]


class TestSignalsMustMatchTheDataset:
    def test_missing_signals(self, tiny_root, tmp_path):
        shutil.copytree(tiny_root / "artifacts" / "dataset", tmp_path / "dataset")
        with pytest.raises(ArtifactError, match="run `rdistill teacher-infer` first"):
            train_student(tiny_config(tiny_root, f"artifact_root={tmp_path}", "distill.kd.weight=1"))

    def test_row_count_catalogue_and_top_k(self, shifted_teacher, tiny_root):
        def config(*overrides):
            return tiny_config(tiny_root, f"artifact_root={shifted_teacher}", "distill.kd.weight=1", *overrides)

        with pytest.raises(ConfigError, match=r"distill.top_k=9 but .* only the teacher's top 4"):
            train_student(config("distill.top_k=9"))
        manifest = shifted_teacher / "signals" / "manifest.json"
        good = manifest.read_text()
        manifest.write_text(json.dumps({"counts": {"rows": {"train": 5}, "items": 40}}))
        with pytest.raises(ArtifactError, match="signals for 5 train rows but the dataset has 816"):
            train_student(config())
        manifest.write_text(json.dumps({"counts": {"rows": {"train": 816}, "items": 41}}))
        with pytest.raises(ArtifactError, match="computed for 41 items but the dataset has 40"):
            train_student(config())
        manifest.write_text(good)
