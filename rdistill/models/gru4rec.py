"""GRU4Rec (Hidasi et al., 2016; Tan et al., 2016): a GRU reads the history; its last output is the user state."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from rdistill.models.base import SequentialRecommender, StudentParams


class GRU4RecParams(StudentParams):
    num_layers: int = Field(1, ge=1)  # stacked GRU layers
    gru_size: int | None = Field(None, ge=1)  # GRU hidden width; null means hidden_size


class GRU4Rec(SequentialRecommender):
    name = "gru4rec"
    Params = GRU4RecParams
    causal = True

    def __init__(self, n_items: int, max_len: int, params: GRU4RecParams):
        super().__init__(n_items, max_len, params)
        gru_size = params.gru_size or params.hidden_size
        self.input_dropout = nn.Dropout(params.dropout)
        self.gru = nn.GRU(params.hidden_size, gru_size, num_layers=params.num_layers, batch_first=True,
                          dropout=params.dropout if params.num_layers > 1 else 0.0)
        self.output = nn.Linear(gru_size, params.hidden_size)
        self.init_item_embeddings(std=0.02)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return self.sequence_states(history)[:, -1]

    def sequence_states(self, history: torch.Tensor) -> torch.Tensor:
        # Left padding puts the real items last, so the final step's output has read the whole history; the
        # padding steps before it see zero vectors and act as a (harmless) encoding of the history length.
        outputs, _ = self.gru(self.input_dropout(self.embed_history(self.most_recent(history))))
        return self.output(outputs)
