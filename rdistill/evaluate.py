"""Evaluate a scorer (a student, or the popularity baseline) on a split with full ranking."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rdistill.data.dataset import SplitTensors
from rdistill.data.schema import PADDING_IDX
from rdistill.metrics import ranking_metrics, target_ranks

Scorer = Callable[[torch.Tensor], torch.Tensor]  # history [B, L] -> scores [B, n_items + 1]


def mask_history(scores: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Set the scores of items already in the history (and of padding) to -inf, in place."""
    scores.scatter_(1, history, float("-inf"))
    scores[:, PADDING_IDX] = float("-inf")
    return scores


@torch.no_grad()
def split_ranks(scorer: Scorer, split: SplitTensors, batch_size: int, exclude_history: bool) -> np.ndarray:
    """0-based full-catalogue rank of each row's target, in split order."""
    ranks = torch.empty(len(split), dtype=torch.long)
    # rows of similar length are scored together: students that drop all-padding columns then run faster
    for index in split.batch_indices(batch_size, group_by_length=True):
        ranks[index] = batch_ranks(scorer, split.history[index], split.target[index], exclude_history)
    return ranks.numpy()


def batch_ranks(scorer: Scorer, history: torch.Tensor, target: torch.Tensor, exclude_history: bool) -> torch.Tensor:
    """0-based full-catalogue rank of each target in one batch (scores are moved to the CPU as float32)."""
    scores = scorer(history).float().cpu()
    history, target = history.cpu(), target.cpu()
    if exclude_history:
        mask_history(scores, history)
    return target_ranks(scores, target)


def evaluate_scorer(scorer: Scorer, split: SplitTensors, ks: list[int], batch_size: int = 1024,
                    exclude_history: bool = True) -> dict[str, float]:
    return ranking_metrics(split_ranks(scorer, split, batch_size, exclude_history), ks)


def evaluate_model(model: torch.nn.Module, split: SplitTensors, ks: list[int], batch_size: int = 1024,
                   exclude_history: bool = True) -> dict[str, float]:
    was_training = model.training
    model.eval()
    try:
        return evaluate_scorer(model.scores, split, ks, batch_size, exclude_history)
    finally:
        model.train(was_training)


class PopularityRecommender:
    """Scores every item by how often it occurs in the training part of the sequences: the sanity baseline."""

    def __init__(self, item_counts: torch.Tensor):
        self.item_scores = item_counts.float()
        self.item_scores[PADDING_IDX] = float("-inf")

    @classmethod
    def fit(cls, train: SplitTensors, n_items: int) -> PopularityRecommender:
        """Count training targets plus each sequence's first item (a first item is never a target)."""
        counts = torch.bincount(train.target, minlength=n_items + 1)
        # A user's first row (lowest row_id) is the one whose history is the first item alone. Found by row_id,
        # not by padding: with max_len == 1 every history is one item long and all would look first.
        n_users = int(train.user_idx.max()) + 1 if len(train) else 0
        first_row_id = torch.full((n_users,), torch.iinfo(torch.int64).max, dtype=torch.int64)
        first_row_id.scatter_reduce_(0, train.user_idx, train.row_id, reduce="amin")
        first_rows = train.row_id == first_row_id[train.user_idx]
        counts += torch.bincount(train.history[first_rows, -1], minlength=n_items + 1)
        return cls(counts)

    def scores(self, history: torch.Tensor) -> torch.Tensor:
        return self.item_scores.expand(history.shape[0], -1).clone()


def evaluate_saved(config, dataset_dir: Path, model_dir: Path | None, popularity: bool, split: str) -> dict:
    """`rdistill evaluate`: a saved student (or the popularity baseline) on one split of `dataset_dir`."""
    from rdistill.data.dataset import load_dataset_info, load_split
    from rdistill.errors import DataError
    from rdistill.models import load_student

    info = load_dataset_info(dataset_dir)
    rows = load_split(dataset_dir, split, info.max_len)
    eval_cfg, batch_size = config.eval, config.train.eval_batch_size
    if popularity:
        scorer = PopularityRecommender.fit(load_split(dataset_dir, "train", info.max_len), info.n_items)
        metrics = evaluate_scorer(scorer.scores, rows, eval_cfg.ks, batch_size, eval_cfg.exclude_history)
        return {"model": "popularity", "split": split, "rows": len(rows), **metrics}
    model = load_student(model_dir)
    if model.n_items != info.n_items:
        raise DataError(f"{model_dir} was trained on {model.n_items} items but {dataset_dir} has {info.n_items}: "
                        "evaluate it on the dataset it was trained on")
    metrics = evaluate_model(model, rows, eval_cfg.ks, batch_size, eval_cfg.exclude_history)
    return {"model": str(model_dir), "split": split, "rows": len(rows), **metrics}
