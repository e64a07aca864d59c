"""Full-ranking metrics: the target is ranked against every item of the catalogue, never a sampled subset.

Ties are broken pessimistically (an item scoring the same as the target ranks ahead of it), so a model that
scores everything equally gets the worst rank, not the best. Ranks are 0-based: rank 0 is the top.
"""

from __future__ import annotations

import numpy as np
import torch

METRIC_NAMES = ("hr", "ndcg", "mrr")


def target_ranks(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0-based rank of each row's target among all columns of `scores` [B, C]; -inf columns rank last."""
    target_scores = scores.gather(1, target.view(-1, 1))
    higher = (scores > target_scores).sum(dim=1)
    tied_others = (scores == target_scores).sum(dim=1) - 1
    return higher + tied_others


def hr_at_k(ranks: np.ndarray, k: int) -> float:
    """Hit rate: share of rows whose target is in the top k."""
    return float(np.mean(ranks < k)) if len(ranks) else 0.0


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """NDCG with one relevant item: 1 / log2(rank + 2) inside the top k, else 0 (the ideal DCG is 1)."""
    if not len(ranks):
        return 0.0
    gains = np.where(ranks < k, 1.0 / np.log2(ranks.astype(np.float64) + 2.0), 0.0)
    return float(np.mean(gains))


def mrr_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean reciprocal rank, counting only targets inside the top k."""
    if not len(ranks):
        return 0.0
    return float(np.mean(np.where(ranks < k, 1.0 / (ranks.astype(np.float64) + 1.0), 0.0)))


_METRIC_FUNCTIONS = {"hr": hr_at_k, "ndcg": ndcg_at_k, "mrr": mrr_at_k}


def ranking_metrics(ranks: np.ndarray | torch.Tensor, ks: list[int] | tuple[int, ...]) -> dict[str, float]:
    """{'hr_at_10': ..., 'ndcg_at_10': ..., 'mrr_at_10': ..., ...} for every k."""
    ranks = ranks.cpu().numpy() if isinstance(ranks, torch.Tensor) else np.asarray(ranks)
    return {f"{name}_at_{k}": _METRIC_FUNCTIONS[name](ranks, k) for k in ks for name in METRIC_NAMES}
