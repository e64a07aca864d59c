"""The registry of distillation terms: what a student learns from the teacher, beside the recommendation loss.

A term is one class: its `name` (its config block, `distill.<name>.*`), its `Config` (a TermConfig: `weight` and
its own hyper-parameters), the teacher signals it `needs`, any trainable parameters (`trainable()`: an nn.Module
the trainer hands to the optimizer with the student's), and its `loss` on one batch. It becomes known by one line,
`@register_term` (or `register_term(Cls)` from outside the package); config validation, `uses_teacher`, the
signals loaded and DistillationObjective (rdistill/distill/train.py) all ask the registry. The maths of the
built-in terms stays in rdistill/distill/losses.py, where each reads like its paper.

This module imports no torch at module level: rdistill/config.py reads the registry to validate `distill.*`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, model_validator

from rdistill.config import StrictModel
from rdistill.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from rdistill.distill.train import TrainSignals
    from rdistill.models import SequentialRecommender

# The teacher signals a term may need (TrainSignals loads what the enabled terms ask for).
TOPK = "topk"  # the teacher's top-K items and scores per train row (signals/topk.parquet)
ITEM_EMB = "item_emb"  # the teacher's item table (signals/item_emb.parquet)
USER_EMB = "user_emb"  # the teacher's user vector per train row (signals/topk.parquet)
HIDDEN = "hidden"  # the teacher's hidden states per train row (signals/hidden.parquet)
TEACHER_CHECKPOINT = "teacher_checkpoint"  # the teacher itself (teacher/checkpoint/)
SIGNALS = frozenset({TOPK, ITEM_EMB, USER_EMB, HIDDEN, TEACHER_CHECKPOINT})


class TermConfig(StrictModel):
    """A term's config block, distill.<name>: its weight (0 switches it off) and, in subclasses, its own settings."""

    weight: float = Field(0.0, ge=0)


@dataclass
class DistillBatch:
    """What a term's loss sees for one batch of P supervised positions (a row's last position, or every real
    position of a causal student): the batch, the student's outputs, and the teacher's signals at each position's
    train row. The teacher's candidates and the student's logits of them are computed once and shared."""

    history: torch.Tensor  # [B, L] the batch's histories
    target: torch.Tensor  # [B] the batch's targets
    model: SequentialRecommender
    logits: torch.Tensor  # [P, n_items + 1] the student's scores at each supervised position
    targets: torch.Tensor  # [P] the true next item of each position
    signal_rows: torch.Tensor  # [P] the train row whose teacher signals each position is distilled towards
    signals: TrainSignals
    generator: torch.Generator  # the run's own, for sampling (negatives)
    blocks: list[torch.Tensor] = field(default_factory=list)  # per-block states, for terms with student_blocks

    @cached_property
    def topk_items(self) -> torch.Tensor:  # [P, K] the teacher's candidates, best first
        return self.signals.topk_items[self.signal_rows]

    @cached_property
    def topk_scores(self) -> torch.Tensor:  # [P, K] the teacher's logits of them
        return self.signals.topk_scores[self.signal_rows]

    @cached_property
    def candidate_logits(self) -> torch.Tensor:  # [P, K] the student's logits of the teacher's candidates
        return self.logits.gather(1, self.topk_items)

    @cached_property
    def user_emb(self) -> torch.Tensor:  # [P, d_teacher] the teacher's user vectors
        return self.signals.user_emb[self.signal_rows]

    def teacher_hidden(self, layer: int) -> torch.Tensor:  # [P, width] the teacher's state after `layer`
        return self.signals.hidden[layer][self.signal_rows]


class DistillTerm:
    """One distillation term. Subclasses set the class attributes and implement `loss` (unless adds_loss is
    False); `__init__` may check the student and signals and build the term's trainable parameters."""

    name: ClassVar[str]  # distill.<name>.* in the config; loss_<name> in the epoch history
    Config: ClassVar[type[TermConfig]] = TermConfig
    needs: ClassVar[frozenset[str]] = frozenset()  # teacher signals (TOPK, ITEM_EMB, ...) it reads
    student_blocks: ClassVar[bool] = False  # reads the student's per-block states (model.encode: slm)
    adds_loss: ClassVar[bool] = True  # False for a term that acts through the student only (embed)
    # Deprecated flat keys, distill.<old> -> <key> of this term's block: configs and tune spaces still use them.
    legacy_keys: ClassVar[dict[str, str]] = {}

    def __init__(self, config: TermConfig, model: SequentialRecommender, signals: TrainSignals):
        self.config = config

    def trainable(self) -> nn.Module | None:
        """Parameters the optimizer trains beside the student's (None: the term has none)."""
        return None

    def loss(self, batch: DistillBatch) -> torch.Tensor | None:
        """The term's loss on one batch, before weighting (logged as loss_<name>); None: nothing this batch."""
        raise NotImplementedError

    def weighted(self, loss: torch.Tensor) -> torch.Tensor:
        """What the term adds to the training loss."""
        return self.config.weight * loss


_TERMS: dict[str, type[DistillTerm]] = {}
RESERVED_KEYS = frozenset({"top_k", "init_item_embeddings"})  # DistillConfig's own settings


def register_term(cls: type[DistillTerm]) -> type[DistillTerm]:
    """Make a term known: its config block validates as distill.<name>, and runs with weight > 0 use it."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{cls.__name__}.name must be an identifier, got {name!r}")
    if name in RESERVED_KEYS or (name in _TERMS and _TERMS[name] is not cls):
        raise ConfigError(f"a distillation term or setting named {name!r} already exists")
    unknown = set(cls.needs) - SIGNALS
    if unknown:
        raise ConfigError(f"{cls.__name__}.needs names unknown signals {sorted(unknown)}; known: {sorted(SIGNALS)}")
    for old, key in cls.legacy_keys.items():
        owner = legacy_key_map().get(old)
        if (owner is not None and owner[0] != name) or key not in cls.Config.model_fields:
            raise ConfigError(f"{cls.__name__}.legacy_keys: distill.{old} -> {name}.{key} clashes or names no field")
    _TERMS[name] = cls
    return cls


def unregister_term(name: str) -> None:
    """Forget a term (tests that register one of their own)."""
    _TERMS.pop(name, None)


def registered_terms() -> dict[str, type[DistillTerm]]:
    """Every known term by name, in registration order (the order their losses are added)."""
    return dict(_TERMS)


def legacy_key_map() -> dict[str, tuple[str, str]]:
    """Deprecated flat key -> (term, key): distill.kd_weight -> ("kd", "weight")."""
    return {old: (name, key) for name, cls in _TERMS.items() for old, key in cls.legacy_keys.items()}


# ------------------------------------------------------------------------------------------ built-in terms


class KDConfig(TermConfig):
    temperature: float = Field(1.0, gt=0)  # T of the two softmaxes over the teacher's top-K


@register_term
class KnowledgeDistillation(DistillTerm):
    """Hinton et al. 2015: the student's softmax over the teacher's top-K candidates matches the teacher's, at
    temperature T, scaled by T^2 (losses.kd_loss)."""

    name = "kd"
    Config = KDConfig
    needs = frozenset({TOPK})
    legacy_keys = {"kd_weight": "weight", "temperature": "temperature"}

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        from rdistill.distill.losses import kd_loss

        return kd_loss(batch.candidate_logits, batch.topk_scores, self.config.temperature)


class RankConfig(TermConfig):
    position_lambda: float = Field(10.0, gt=0)  # lambda_r of the position weight exp(-k / lambda_r)
    gamma_position: float = Field(0.4, ge=0)  # shares of the three importance weights
    gamma_confidence: float = Field(0.4, ge=0)
    gamma_consistency: float = Field(0.2, ge=0)

    @model_validator(mode="after")
    def _some_gamma(self) -> RankConfig:
        if self.weight > 0 and self.gamma_position + self.gamma_confidence + self.gamma_consistency <= 0:
            raise ValueError("weight > 0 needs at least one of gamma_position, gamma_confidence, "
                             "gamma_consistency above 0")
        return self


@register_term
class RankingDistillation(DistillTerm):
    """DLLM2Rec (Cui et al. 2024), importance-aware ranking distillation: each of the teacher's K candidates is a
    positive, weighted by its position, the teacher's confidence and the student's agreement, against one
    uniformly sampled negative (losses.ranking_weights, losses.rank_loss)."""

    name = "rank"
    Config = RankConfig
    needs = frozenset({TOPK})
    legacy_keys = {"rank_weight": "weight", "position_lambda": "position_lambda",
                   "gamma_position": "gamma_position", "gamma_confidence": "gamma_confidence",
                   "gamma_consistency": "gamma_consistency"}

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        import torch

        from rdistill.distill.losses import rank_loss, ranking_weights, sample_negatives

        config, candidates = self.config, batch.topk_items
        with torch.no_grad():  # consistency: is the candidate in the student's own current top-K?
            student_top = torch.zeros_like(batch.logits, dtype=torch.bool)
            student_top.scatter_(1, batch.logits.topk(candidates.shape[1], dim=1).indices, True)
            weights = ranking_weights(batch.topk_scores, student_top.gather(1, candidates), config.position_lambda,
                                      config.gamma_position, config.gamma_confidence, config.gamma_consistency)
        negatives = sample_negatives(tuple(candidates.shape), batch.model.n_items, batch.generator)
        return rank_loss(batch.candidate_logits, batch.logits.gather(1, negatives), weights)


@register_term
class EmbeddingDistillation(DistillTerm):
    """DLLM2Rec's collaborative embedding distillation: the student's item table becomes
    E_id + omega * Linear(E_teacher), for inputs and outputs alike (losses.ItemEmbeddingOffset). It adds no loss:
    the offset hangs on the student as `item_offset`, so saving and export fold it into one plain table."""

    name = "embed"
    needs = frozenset({ITEM_EMB})
    adds_loss = False
    legacy_keys = {"embed_weight": "weight"}  # the weight is omega

    def __init__(self, config: TermConfig, model: SequentialRecommender, signals: TrainSignals):
        import torch

        from rdistill.distill.losses import ItemEmbeddingOffset

        super().__init__(config, model, signals)
        self.offset = ItemEmbeddingOffset(torch.from_numpy(signals.item_emb), model.item_embedding.weight.shape[1],
                                          config.weight)
        model.item_offset = self.offset

    def trainable(self) -> nn.Module:
        return self.offset


def _check_slm(term: type[DistillTerm], model: SequentialRecommender) -> None:
    if not hasattr(model, "aligned_layers"):
        raise ConfigError(f"distill.{term.name} needs the slm student, not {model.name}")


class FeatureConfig(TermConfig):
    l2_weight: float = Field(0.1, ge=0)  # the 0.1 * ||h_s - h_t|| part of SLMRec's alignment


@register_term
class FeatureDistillation(DistillTerm):
    """SLMRec (Xu et al. 2024): at each aligned block, the student's state moves towards the teacher's hidden state
    of the matching layer: weight * (1 - cos) + l2_weight * ||h_s - h_t|| (losses.feature_loss). As in SLMRec,
    the weight scales the cosine part only, so the loss is added as computed."""

    name = "feature"
    Config = FeatureConfig
    needs = frozenset({HIDDEN})
    student_blocks = True
    legacy_keys = {"feature_weight": "weight", "feature_l2_weight": "l2_weight"}

    def __init__(self, config: FeatureConfig, model: SequentialRecommender, signals: TrainSignals):
        super().__init__(config, model, signals)
        _check_slm(type(self), model)
        needed = sorted({teacher for _, teacher in model.aligned_layers()})
        if not set(needed) <= set(signals.hidden):
            raise ConfigError(f"the slm student aligns to teacher layers {needed} but the signals hold hidden "
                              f"states for {sorted(signals.hidden)}: rerun `rdistill teacher-infer "
                              f"infer.hidden_layers={needed}`")

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        from rdistill.distill.losses import feature_loss

        return sum(feature_loss(state, batch.teacher_hidden(teacher_layer), self.config.weight,
                                self.config.l2_weight)
                   for state, (_, teacher_layer) in zip(batch.blocks, batch.model.aligned_layers()))

    def weighted(self, loss: torch.Tensor) -> torch.Tensor:
        return loss


@register_term
class BlockCrossEntropy(DistillTerm):
    """SLMRec's multiple supervision: cross-entropy heads on every intermediate block of the slm student (the
    last block's is the recommendation loss itself)."""

    name = "block_ce"
    student_blocks = True
    legacy_keys = {"block_ce_weight": "weight"}

    def __init__(self, config: TermConfig, model: SequentialRecommender, signals: TrainSignals):
        super().__init__(config, model, signals)
        _check_slm(type(self), model)

    def loss(self, batch: DistillBatch) -> torch.Tensor | None:
        import torch.nn.functional as F

        if len(batch.blocks) < 2:
            return None
        return sum(F.cross_entropy(batch.model.block_logits(state), batch.targets) for state in batch.blocks[:-1])


def active_terms(distill: Any) -> dict[str, type[DistillTerm]]:
    """The registered terms that distill (a DistillConfig) switches on (weight > 0), in registration order."""
    blocks = distill.term_configs()
    return {name: cls for name, cls in _TERMS.items() if name in blocks and blocks[name].weight > 0}
