"""Full-ranking metrics (rdistill.metrics) and evaluation helpers (rdistill.evaluate) on hand-built inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rdistill.data.dataset import SplitTensors, pad_history_lists
from rdistill.evaluate import (
    PopularityRecommender,
    evaluate_model,
    evaluate_scorer,
    mask_history,
    split_ranks,
)
from rdistill.metrics import hr_at_k, mrr_at_k, ndcg_at_k, ranking_metrics, target_ranks

NEG_INF = float("-inf")


def _split(histories: list[list[int]], targets: list[int], users: list[int] | None = None,
           max_len: int = 3) -> SplitTensors:
    users = list(range(len(targets))) if users is None else users
    return SplitTensors(
        row_id=torch.arange(len(targets), dtype=torch.int64),
        user_idx=torch.tensor(users, dtype=torch.int64),
        history=pad_history_lists(histories, max_len),
        target=torch.tensor(targets, dtype=torch.int64),
    )


# ------------------------------------------------------------------------------------------ target_ranks


def test_target_ranks_strictly_ordered_scores():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.3]])
    expected = {0: 0, 2: 1, 3: 2, 1: 3}
    for target, rank in expected.items():
        assert target_ranks(scores, torch.tensor([target])).tolist() == [rank]


def test_target_ranks_ties_are_pessimistic():
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.5, 0.5]])
    # three items tie at 0.5: each of them ranks behind the other two
    assert target_ranks(scores, torch.tensor([1])).tolist() == [2]
    assert target_ranks(scores, torch.tensor([3])).tolist() == [2]
    assert target_ranks(scores, torch.tensor([4])).tolist() == [2]
    assert target_ranks(scores, torch.tensor([2])).tolist() == [3]
    assert target_ranks(scores, torch.tensor([0])).tolist() == [4]


def test_target_ranks_all_equal_scores_give_worst_rank():
    scores = torch.zeros(2, 7)
    assert target_ranks(scores, torch.tensor([0, 6])).tolist() == [6, 6]


def test_target_ranks_minus_inf_columns_rank_last():
    scores = torch.tensor([[NEG_INF, 1.0, NEG_INF, 0.5, NEG_INF]])
    assert target_ranks(scores, torch.tensor([3])).tolist() == [1]
    assert target_ranks(scores, torch.tensor([1])).tolist() == [0]
    # a -inf target ties with every other -inf column and ranks behind all of them
    assert target_ranks(scores, torch.tensor([2])).tolist() == [4]


def test_target_ranks_batch_rows_are_independent():
    scores = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 1.0, 0.0]])
    assert target_ranks(scores, torch.tensor([0, 0, 0])).tolist() == [0, 2, 1]
    assert target_ranks(scores, torch.tensor([0, 0, 0])).dtype == torch.int64


# ------------------------------------------------------------------------------------------ metrics


def test_metrics_by_hand():
    ranks = np.array([0, 2, 5, 12])
    assert hr_at_k(ranks, 10) == pytest.approx(0.75)
    assert ndcg_at_k(ranks, 10) == pytest.approx((1.0 + 0.5 + 1.0 / math.log2(7) + 0.0) / 4)
    assert mrr_at_k(ranks, 10) == pytest.approx((1.0 + 1.0 / 3 + 1.0 / 6) / 4)
    assert hr_at_k(ranks, 3) == pytest.approx(0.5)
    assert ndcg_at_k(ranks, 3) == pytest.approx((1.0 + 0.5) / 4)
    assert mrr_at_k(ranks, 3) == pytest.approx((1.0 + 1.0 / 3) / 4)
    # rank k is outside the top k (ranks are 0-based)
    assert hr_at_k(np.array([3]), 3) == 0.0
    assert hr_at_k(np.array([2]), 3) == 1.0


def test_single_rank_values():
    assert ndcg_at_k(np.array([0]), 10) == 1.0
    assert ndcg_at_k(np.array([2]), 10) == pytest.approx(0.5)  # 1 / log2(4)
    assert mrr_at_k(np.array([2]), 10) == pytest.approx(1.0 / 3)
    assert mrr_at_k(np.array([0]), 1) == 1.0


def test_k_larger_than_catalogue_hits_every_row():
    scores = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    ranks = target_ranks(scores, torch.tensor([0, 1, 2, 3, 4, 0]))
    assert ranks.max().item() <= 4
    metrics = ranking_metrics(ranks, [10])
    assert metrics["hr_at_10"] == 1.0
    assert 0.0 < metrics["ndcg_at_10"] <= 1.0


def test_empty_ranks_give_zero():
    empty = np.empty(0, dtype=np.int64)
    assert hr_at_k(empty, 5) == 0.0
    assert ndcg_at_k(empty, 5) == 0.0
    assert mrr_at_k(empty, 5) == 0.0


def test_ranking_metrics_keys_and_values():
    metrics = ranking_metrics(torch.tensor([0, 2, 5, 12]), [10, 3])
    assert set(metrics) == {"hr_at_3", "ndcg_at_3", "mrr_at_3", "hr_at_10", "ndcg_at_10", "mrr_at_10"}
    assert metrics["hr_at_10"] == pytest.approx(0.75)
    assert metrics["ndcg_at_3"] == pytest.approx(0.375)
    assert metrics["mrr_at_3"] == pytest.approx(1.0 / 3)
    assert all(isinstance(v, float) for v in metrics.values())
    # numpy arrays and lists give the same answer as tensors
    assert ranking_metrics(np.array([0, 2, 5, 12]), [10, 3]) == metrics
    assert ranking_metrics([0, 2, 5, 12], (10, 3)) == metrics


# ------------------------------------------------------------------------------------------ mask_history


def test_mask_history_masks_history_and_padding_in_place():
    scores = torch.arange(12, dtype=torch.float32).view(2, 6) + 1.0
    history = torch.tensor([[0, 0, 2, 4], [0, 1, 1, 5]])
    out = mask_history(scores, history)
    assert out is scores
    expected = torch.tensor(
        [[NEG_INF, 2.0, NEG_INF, 4.0, NEG_INF, 6.0], [NEG_INF, NEG_INF, 9.0, 10.0, 11.0, NEG_INF]]
    )
    assert torch.equal(scores, expected)


def test_mask_history_masks_padding_even_without_padding_in_history():
    scores = torch.ones(1, 4)
    mask_history(scores, torch.tensor([[3]]))
    assert scores.tolist() == [[NEG_INF, 1.0, 1.0, NEG_INF]]


# ------------------------------------------------------------------------------------------ popularity


def test_popularity_fit_counts_targets_and_first_items():
    # user 0: sequence 1 2 3 4 5 -> train rows [1]->2, [1 2]->3 ; user 1: sequence 2 3 1 4 -> train row [2]->3
    train = _split([[1], [1, 2], [2]], [2, 3, 3], users=[0, 0, 1])
    model = PopularityRecommender.fit(train, n_items=5)
    # targets: 2 x1, 3 x2 ; first items: 1 (user 0), 2 (user 1)
    assert model.item_scores.tolist() == [NEG_INF, 1.0, 2.0, 2.0, 0.0, 0.0]
    scores = model.scores(torch.zeros(3, 3, dtype=torch.int64))
    assert scores.shape == (3, 6)
    assert torch.equal(scores[1], model.item_scores)
    scores[0, 1] = 100.0  # scores are a copy: the model is unchanged
    assert model.item_scores[1].item() == 1.0


def test_popularity_fit_with_one_item_histories():
    # max_len 1: every history is one item long, yet only each user's first item is counted once
    train = _split([[1], [2], [2]], [2, 3, 3], users=[0, 0, 1], max_len=1)
    model = PopularityRecommender.fit(train, n_items=5)
    assert model.item_scores.tolist() == [NEG_INF, 1.0, 2.0, 2.0, 0.0, 0.0]


def test_popularity_fit_on_empty_train():
    train = SplitTensors(torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64),
                         torch.empty(0, 3, dtype=torch.int64), torch.empty(0, dtype=torch.int64))
    model = PopularityRecommender.fit(train, n_items=3)
    assert model.item_scores.tolist() == [NEG_INF, 0.0, 0.0, 0.0]


# ------------------------------------------------------------------------------------------ evaluate


def _fixed_scorer(item_scores: list[float]):
    row = torch.tensor(item_scores)

    def scorer(history: torch.Tensor) -> torch.Tensor:
        return row.expand(history.shape[0], -1).clone()

    return scorer


def test_evaluate_scorer_with_and_without_history_exclusion():
    scorer = _fixed_scorer([0.0, 5.0, 4.0, 3.0, 2.0, 1.0])  # item 1 best, item 5 worst
    split = _split([[1, 2], [1]], [3, 4])
    # masked: row 0 ranks 3 among {3, 4, 5} -> 0 ; row 1 ranks 4 among {2, 3, 4, 5} -> 2
    metrics = evaluate_scorer(scorer, split, [1, 3])
    assert metrics == pytest.approx(
        {"hr_at_1": 0.5, "ndcg_at_1": 0.5, "mrr_at_1": 0.5,
         "hr_at_3": 1.0, "ndcg_at_3": 0.75, "mrr_at_3": (1.0 + 1.0 / 3) / 2}
    )
    # unmasked: item 0 (score 0) still ranks below everything; ranks 2 and 3
    assert split_ranks(scorer, split, 1024, exclude_history=False).tolist() == [2, 3]
    unmasked = evaluate_scorer(scorer, split, [1, 3], exclude_history=False)
    assert unmasked["hr_at_3"] == 0.5
    assert unmasked["ndcg_at_3"] == pytest.approx(0.25)
    assert unmasked["mrr_at_3"] == pytest.approx(1.0 / 6)
    # batch size does not change the answer
    assert evaluate_scorer(scorer, split, [1, 3], batch_size=1) == metrics


def test_evaluate_constant_scorer_gets_pessimistic_ranks():
    scorer = _fixed_scorer([1.0] * 6)
    split = _split([[1, 2], [1]], [3, 4])
    # masked columns are -inf; the target ties with every other remaining item and ranks last among them
    assert split_ranks(scorer, split, 2, exclude_history=True).tolist() == [2, 3]


def test_evaluate_scorer_on_empty_split():
    split = SplitTensors(torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64),
                         torch.empty(0, 3, dtype=torch.int64), torch.empty(0, dtype=torch.int64))
    assert split_ranks(_fixed_scorer([0.0, 1.0]), split, 8, True).shape == (0,)
    assert evaluate_scorer(_fixed_scorer([0.0, 1.0]), split, [5]) == {"hr_at_5": 0.0, "ndcg_at_5": 0.0,
                                                                      "mrr_at_5": 0.0}


def test_evaluate_popularity_end_to_end():
    train = _split([[1], [1, 2], [2]], [2, 3, 3], users=[0, 0, 1])
    valid = _split([[1, 2, 3], [2, 3]], [4, 1], users=[0, 1])
    model = PopularityRecommender.fit(train, n_items=5)
    # scores [-, 1, 2, 2, 0, 0]; row 0 masks 1 2 3 -> 4 ties with 5 -> rank 1 ; row 1 masks 2 3 -> 1 ranks 0
    assert split_ranks(model.scores, valid, 16, True).tolist() == [1, 0]
    assert evaluate_scorer(model.scores, valid, [1])["hr_at_1"] == 0.5


class _TableModel(torch.nn.Module):
    """A real module whose scores come from a fixed table; it records the mode it was called in."""

    def __init__(self, item_scores: list[float]):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(item_scores))
        self.seen_training = []

    def scores(self, history: torch.Tensor) -> torch.Tensor:
        self.seen_training.append(self.training)
        return self.table.expand(history.shape[0], -1).clone()


def test_evaluate_model_runs_in_eval_mode_and_restores_it():
    model = _TableModel([0.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    split = _split([[1, 2], [1]], [3, 4])
    model.train()
    metrics = evaluate_model(model, split, [3])
    assert model.seen_training == [False]
    assert model.training is True
    assert metrics["hr_at_3"] == 1.0
    assert metrics["mrr_at_3"] == pytest.approx((1.0 + 1.0 / 3) / 2)
    model.eval()
    evaluate_model(model, split, [3])
    assert model.training is False
