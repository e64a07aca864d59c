"""SASRec (Kang & McAuley, 2018): causal self-attention over the history; the last position is the user state."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from rdistill.data.schema import PADDING_IDX
from rdistill.models.base import SequentialRecommender, StudentParams, trim_leading_padding


class SASRecParams(StudentParams):
    num_layers: int = Field(2, ge=1)  # self-attention blocks
    num_heads: int = Field(2, ge=1)  # attention heads; must divide hidden_size
    inner_size: int | None = Field(None, ge=1)  # feed-forward width; null means 4 * hidden_size


class SASRec(SequentialRecommender):
    name = "sasrec"
    Params = SASRecParams
    causal = True

    def __init__(self, n_items: int, max_len: int, params: SASRecParams):
        if params.hidden_size % params.num_heads:
            raise ValueError(f"hidden_size {params.hidden_size} is not divisible by num_heads {params.num_heads}")
        super().__init__(n_items, max_len, params)
        self.position_embedding = nn.Embedding(max_len, params.hidden_size)
        self.input_norm = nn.LayerNorm(params.hidden_size)
        self.input_dropout = nn.Dropout(params.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=params.hidden_size,
            nhead=params.num_heads,
            dim_feedforward=params.inner_size or 4 * params.hidden_size,
            dropout=params.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, params.num_layers, enable_nested_tensor=False)
        self.output_norm = nn.LayerNorm(params.hidden_size)
        self.apply(_init_weights)
        self.init_item_embeddings(std=0.02)

    def attention_mask(self, history: torch.Tensor) -> torch.Tensor:
        """[B * heads, L, L] boolean, True = may not attend: the future, and padding other than oneself.

        A padding position may attend to itself so no softmax row is empty (an empty row gives NaN, and
        0 * NaN in the next layer would poison the real positions too)."""
        length = history.shape[1]
        future = torch.triu(torch.ones(length, length, dtype=torch.bool, device=history.device), diagonal=1)
        padding_key = (history == PADDING_IDX)[:, None, :]
        itself = torch.eye(length, dtype=torch.bool, device=history.device)[None]
        blocked = future[None] | (padding_key & ~itself)
        return blocked.repeat_interleave(self.params.num_heads, dim=0)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return self.sequence_states(history)[:, -1]

    def trim_padding(self, history: torch.Tensor) -> torch.Tensor:
        return trim_leading_padding(history)  # padding is masked; positions count from the most recent item

    def sequence_states(self, history: torch.Tensor) -> torch.Tensor:
        history = self.most_recent(history)
        if not torch.compiler.is_exporting():  # an exported graph cannot slice by data: its caller trims instead
            history = self.trim_padding(history)
        positions = torch.arange(history.shape[1], device=history.device)
        # positions are counted so that the most recent item always gets the last position embedding
        positions = positions + (self.max_len - history.shape[1])
        hidden = self.embed_history(history) * self.params.hidden_size ** 0.5 + self.position_embedding(positions)
        hidden = self.input_dropout(self.input_norm(hidden))
        hidden = hidden * (history != PADDING_IDX).unsqueeze(-1)
        hidden = self.encoder(hidden, mask=self.attention_mask(history))
        return self.output_norm(hidden)


def _init_weights(module: nn.Module) -> None:
    # small normal init as in the reference implementations; PyTorch's defaults train noticeably slower here
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
