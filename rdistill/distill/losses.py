"""Distillation losses: what a student learns from the teacher's signals, beside the recommendation loss.

Every function works on one batch of P supervised positions (a row's last position, or every real position of
a causal student) and the teacher's K candidates for each (its top-K items and scores, signals/topk.parquet):

- kd_loss: Hinton's logit distillation over the teacher's top-K, temperature T.
- ranking_weights + rank_loss: DLLM2Rec's importance-aware ranking distillation.
- ItemEmbeddingOffset: DLLM2Rec's collaborative embedding distillation (E_id + omega * Linear(E_teacher)).
- feature_loss: SLMRec's feature distillation between aligned hidden states.

The recommendation loss itself is recommendation_loss: full-softmax cross-entropy (the students' own, see
rdistill/models/base.py) or, for comparison with DLLM2Rec's protocol, binary cross-entropy against one sampled item.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rdistill.data.schema import PADDING_IDX


def kd_loss(candidate_logits: torch.Tensor, teacher_scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(p_teacher || p_student), both softmaxes taken over the K candidates (the teacher's top-K,
    renormalised) at temperature T; mean over positions. candidate_logits, teacher_scores: [P, K]."""
    teacher = F.softmax(teacher_scores / temperature, dim=1)
    student = F.log_softmax(candidate_logits / temperature, dim=1)
    kl = (teacher * (torch.log(teacher.clamp_min(1e-12)) - student)).sum(dim=1)
    return kl.mean() * temperature**2


@torch.no_grad()
def ranking_weights(teacher_scores: torch.Tensor, in_student_topk: torch.Tensor, position_lambda: float,
                    gamma_position: float, gamma_confidence: float, gamma_consistency: float) -> torch.Tensor:
    """DLLM2Rec's importance of each of the teacher's K candidates, [P, K], rows summing to 1, no gradient.

    position: exp(-k / lambda) for the candidate ranked k-th (k = 0 best), normalised over the K;
    confidence: softmax of the teacher's scores of the candidates;
    consistency: 1 for candidates that are also in the student's current top-K, normalised over those (a row
    with none contributes 0 to this term);
    combined as gamma_p * position + gamma_c * confidence + gamma_o * consistency, then renormalised."""
    positions, k = teacher_scores.shape
    position = torch.exp(-torch.arange(k, dtype=teacher_scores.dtype, device=teacher_scores.device) / position_lambda)
    position = (position / position.sum()).expand(positions, k)
    confidence = F.softmax(teacher_scores.float(), dim=1).to(teacher_scores.dtype)
    consistent = in_student_topk.to(teacher_scores.dtype)
    consistency = consistent / consistent.sum(dim=1, keepdim=True).clamp_min(1.0)
    combined = gamma_position * position + gamma_confidence * confidence + gamma_consistency * consistency
    return combined / combined.sum(dim=1, keepdim=True).clamp_min(1e-12)


def rank_loss(candidate_logits: torch.Tensor, negative_logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Each teacher candidate is a weighted positive against one sampled negative:
    mean over positions of sum_k w_k * (-log sigma(s_k) - log sigma(-s_neg_k)).

    The negative term is the standard log sigma(-s) (the score of a negative pushed down), not the seed code's
    log sigma(1 - s), which only pushes a negative's score below 1 and keeps rewarding it past that point.
    All inputs [P, K]; weights come from ranking_weights and carry no gradient."""
    per_candidate = -F.logsigmoid(candidate_logits) - F.logsigmoid(-negative_logits)
    return (weights.detach() * per_candidate).sum(dim=1).mean()


def feature_loss(student_states: torch.Tensor, teacher_states: torch.Tensor, cosine_weight: float,
                 l2_weight: float = 0.1) -> torch.Tensor:
    """SLMRec's alignment of one block: cosine_weight * (1 - cos(h_s, h_t)) + l2_weight * ||h_s - h_t||_2,
    mean over rows. Both [P, width]; the teacher side is a cached constant."""
    teacher_states = teacher_states.detach()
    cosine = F.cosine_similarity(student_states, teacher_states, dim=1)
    distance = torch.linalg.vector_norm(student_states - teacher_states, dim=1)
    return (cosine_weight * (1 - cosine) + l2_weight * distance).mean()


def sample_negatives(shape: tuple[int, ...], n_items: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform item_idx in 1..n_items (never padding)."""
    return torch.randint(1, n_items + 1, shape, generator=generator)


def recommendation_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """The loss of the true next items targets [P] under logits [P, n_items + 1] (column 0 is padding).

    softmax: full-softmax cross-entropy over the catalogue. bce: -log sigma(s_target) - log sigma(-s_negative)
    with one negative per position drawn uniformly from the catalogue other than the target (SASRec's original
    loss and DLLM2Rec's, which also keeps the history's items out of the draw: with catalogues of thousands of
    items and histories of tens, a rare collision is not worth a per-row mask)."""
    if kind == "softmax":
        return F.cross_entropy(logits, targets)
    if kind != "bce":
        raise ValueError(f"unknown recommendation loss {kind!r}: softmax or bce")
    n_items = logits.shape[1] - 1
    # n_items - 1 choices shifted past the target: uniform over every item but the target
    negatives = torch.randint(1, n_items, targets.shape, generator=generator).to(targets.device)
    negatives = negatives + (negatives >= targets).long()
    positive = logits.gather(1, targets[:, None]).squeeze(1)
    negative = logits.gather(1, negatives[:, None]).squeeze(1)
    return -(F.logsigmoid(positive) + F.logsigmoid(-negative)).mean()


class ItemEmbeddingOffset(nn.Module):
    """omega * Linear(E_teacher): the teacher's item table projected to the student's width, added to the
    student's own item table (E_id + omega * Linear(E_teacher)). The padding row stays zero. Set as
    `student.item_offset`; SequentialRecommender.fold_item_embeddings merges it into one fixed table."""

    def __init__(self, teacher_items: torch.Tensor, width: int, omega: float):
        super().__init__()
        # fixed inputs, rebuilt from the signals by every run: kept out of the state dict, so a resumable training
        # state does not carry the teacher's whole item table (18.6 MB for amazon-beauty) every epoch
        self.register_buffer("teacher_items", teacher_items.detach().float().clone(), persistent=False)
        self.projection = nn.Linear(teacher_items.shape[1], width)
        self.omega = omega
        keep = torch.ones(teacher_items.shape[0], 1)
        keep[PADDING_IDX] = 0
        self.register_buffer("keep", keep, persistent=False)

    def forward(self) -> torch.Tensor:
        return self.omega * self.projection(self.teacher_items) * self.keep


def teacher_initialised_table(teacher_items: np.ndarray, width: int, std: float) -> torch.Tensor:
    """The teacher's item table reduced to the student's width by PCA and scaled to the student's usual init
    std: the 'merely initialised from the teacher' baseline that distillation has to beat. Row 0 stays zero."""
    items = teacher_items[1:].astype(np.float64)
    centred = items - items.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    reduced = centred @ components[:width].T
    if reduced.shape[1] < width:  # a teacher narrower than the student: pad with small noise
        extra = np.random.default_rng(0).normal(0, reduced.std() or 1.0, (len(items), width - reduced.shape[1]))
        reduced = np.concatenate([reduced, extra], axis=1)
    reduced = reduced / (reduced.std() or 1.0) * std
    return torch.from_numpy(np.concatenate([np.zeros((1, width)), reduced]).astype(np.float32))
