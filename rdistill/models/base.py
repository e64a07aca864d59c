"""The contract every student honours (after RecBole's sequential models, typed).

Evaluation, distillation and serving only ever call these methods, so a new student is one file plus one
registry line. Histories are LongTensor [B, L] of item_idx, left-padded with 0, most recent item last.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from rdistill.data.schema import PADDING_IDX


class StudentParams(BaseModel):
    """Hyper-parameters shared by every student; each student extends this with its own."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(64, ge=1)  # width of item embeddings and of the user state
    dropout: float = Field(0.2, ge=0.0, lt=1.0)  # dropout on embeddings and hidden layers


class SequentialRecommender(nn.Module):
    """A next-item recommender over a catalogue of n_items items (item_idx 1..n_items; 0 is padding)."""

    name: ClassVar[str]
    Params: ClassVar[type[StudentParams]] = StudentParams
    # A causal student's state at position j depends only on positions <= j, so one pass over a history
    # trains on every next-item target in it (see all_positions_loss).
    causal: ClassVar[bool] = False

    def __init__(self, n_items: int, max_len: int, params: StudentParams):
        super().__init__()
        self.n_items = n_items
        self.max_len = max_len
        self.params = params
        self.item_embedding = nn.Embedding(n_items + 1, params.hidden_size, padding_idx=PADDING_IDX)
        # Distillation may add a trainable offset to the item table (DLLM2Rec's collaborative embedding
        # distillation, rdistill/distill/losses.py); fold_item_embeddings() merges it into one fixed table.
        self.item_offset: nn.Module | None = None
        # added to the scores: -inf in the padding column so it never ranks (one add, where an indexed write
        # is seven operators in the exported graph); a constant, so not saved
        padding_column = torch.zeros(n_items + 1)
        padding_column[PADDING_IDX] = float("-inf")
        self.register_buffer("padding_column", padding_column, persistent=False)

    def init_item_embeddings(self, std: float) -> None:
        """Normal(0, std) item vectors with the padding row kept at zero (nn.init would overwrite it)."""
        with torch.no_grad():
            nn.init.normal_(self.item_embedding.weight, std=std)
            self.item_embedding.weight[PADDING_IDX].zero_()

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """User state [B, hidden_size] after reading the history."""
        raise NotImplementedError

    def sequence_states(self, history: torch.Tensor) -> torch.Tensor:
        """States [B, L', hidden_size] at the last L' <= L positions; only causal students have them. A student
        may drop leading columns that are padding in every row (state i belongs to history[:, L - L' + i])."""
        raise NotImplementedError(f"{self.name} is not a causal student: it has no per-position states")

    def item_embeddings(self) -> torch.Tensor:
        """[n_items + 1, hidden_size]; row 0 is padding. Also the output table scores are computed against."""
        if self.item_offset is None:
            return self.item_embedding.weight
        return self.item_embedding.weight + self.item_offset()

    def fold_item_embeddings(self) -> None:
        """Merge a distillation offset into the plain item table, so the saved model needs nothing else."""
        if self.item_offset is None:
            return
        with torch.no_grad():
            table = self.item_embeddings().detach().clone()
            self.item_offset = None
            self.item_embedding.weight.copy_(table)

    def most_recent(self, history: torch.Tensor) -> torch.Tensor:
        return most_recent(history, self.max_len)

    def trim_padding(self, history: torch.Tensor) -> torch.Tensor:
        """Drop leading columns that are padding in every row where that cannot change the scores (a student
        whose output depends on the padding, like GRU4Rec, keeps them: this default). Callers of an exported
        graph, which cannot slice by data, apply it before the graph (rdistill/onnx_scoring.py)."""
        return history

    def embed_history(self, history: torch.Tensor) -> torch.Tensor:
        """Look up the input vectors of a history [B, L] -> [B, L, hidden_size], via item_embeddings() so a
        subclass (or distillation) that changes the table changes inputs and outputs alike."""
        return F.embedding(history, self.item_embeddings(), padding_idx=PADDING_IDX)

    def scores(self, history: torch.Tensor) -> torch.Tensor:
        """Full-catalogue scores [B, n_items + 1]; the padding column is -inf so it never ranks."""
        return self.catalogue_logits(self.forward(history))

    def catalogue_logits(self, states: torch.Tensor) -> torch.Tensor:
        """[N, n_items + 1] dot products of user states [N, d] with the item table, padding column at -inf:
        the one place every student's scores and training logits come from."""
        return states @ self.item_embeddings().T + self.padding_column

    def loss(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Full-softmax cross-entropy of the target over the whole catalogue."""
        return F.cross_entropy(self.scores(history), target)

    def all_positions_loss(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Full-softmax cross-entropy of the next item at every real position of a causal student: position j
        predicts history[j + 1], the last position predicts target (SASRec's original training scheme)."""
        logits, next_items, _ = self.position_logits(history, target)
        return F.cross_entropy(logits, next_items)

    def position_logits(self, history: torch.Tensor, target: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Causal students: (logits [P, n_items + 1], next item [P], steps_back [P]) at the P real positions of
        the batch. steps_back is how many positions before the last one a position is (0: the row's target),
        which is also how many train rows before this one the prefix ending there is (see distill/train.py)."""
        states = self.sequence_states(history)
        width = states.shape[1]
        next_items = next_items_at_positions(history, target, width)
        real = (history != PADDING_IDX)[:, -width:]  # left padding: a real item is followed by a real one
        steps_back = torch.arange(width - 1, -1, -1, device=history.device).expand_as(real)
        return self.catalogue_logits(states[real]), next_items[real], steps_back[real]

    def model_config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (see rdistill.models.load_student)."""
        return {"name": self.name, "n_items": self.n_items, "max_len": self.max_len,
                "params": self.params.model_dump(mode="json")}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def most_recent(history: torch.Tensor, max_len: int) -> torch.Tensor:
    """The last max_len columns of a history [B, L]. No slice at all when L <= max_len: an exported graph then
    holds no length arithmetic, which torch's ONNX export of a GRU cannot handle."""
    return history[:, -max_len:] if history.shape[1] > max_len else history


def trim_leading_padding(history: torch.Tensor) -> torch.Tensor:
    """Drop the leading columns that are padding in every row (left padding). For a model that masks padding
    and counts positions from the most recent item, they change no output, and on short-history data (Amazon:
    ~5 items of 50) dropping them makes it several times faster."""
    real_columns = (history != PADDING_IDX).any(dim=0).nonzero()
    return history[:, int(real_columns[0]):] if len(real_columns) else history


def next_items_at_positions(history: torch.Tensor, target: torch.Tensor, width: int) -> torch.Tensor:
    """[B, width]: the item each of the last `width` positions of a history should predict (history[j + 1]; the
    target for the last position). Shared by the causal students and the causal teacher."""
    return torch.cat([history[:, 1:], target[:, None]], dim=1)[:, -width:]
