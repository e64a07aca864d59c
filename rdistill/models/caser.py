"""Caser (Tang & Wang, 2018), history-only: convolutions over the embeddings of the last few items.

The original concatenates a learned per-user embedding; it is dropped here so the model can score any
anonymous history at serving time (a new user, or a session)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from rdistill.models.base import SequentialRecommender, StudentParams


class CaserParams(StudentParams):
    window: int = Field(5, ge=1)  # number of most recent items the convolutions read
    horizontal_filters: int = Field(16, ge=1)  # filters per horizontal height (heights 1..window)
    vertical_filters: int = Field(4, ge=1)  # vertical (window x 1) filters
    dropout: float = Field(0.5, ge=0.0, lt=1.0)


class Caser(SequentialRecommender):
    name = "caser"
    Params = CaserParams

    def __init__(self, n_items: int, max_len: int, params: CaserParams):
        super().__init__(n_items, max_len, params)
        d, window = params.hidden_size, params.window
        self.vertical = nn.Conv2d(1, params.vertical_filters, kernel_size=(window, 1))
        self.horizontal = nn.ModuleList(
            nn.Conv2d(1, params.horizontal_filters, kernel_size=(height, d)) for height in range(1, window + 1)
        )
        self.dropout = nn.Dropout(params.dropout)
        self.fully_connected = nn.Linear(params.vertical_filters * d + params.horizontal_filters * window, d)
        self.init_item_embeddings(std=1.0 / d)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        window = self.params.window
        # shorter than the window: pad on the left like the tables do (always padding, then slicing, keeps the
        # graph free of shape-dependent branches, so it exports to ONNX for any history length)
        recent = F.pad(history[:, -window:], (window, 0))[:, -window:]
        embedded = self.embed_history(recent).unsqueeze(1)  # [B, 1, window, d]
        vertical = self.vertical(embedded).flatten(1)  # [B, vertical_filters * d]
        horizontal = [
            F.relu(conv(embedded).squeeze(3)).amax(dim=2)  # max-pool over time -> [B, horizontal_filters]
            for conv in self.horizontal
        ]
        features = torch.cat([vertical, *horizontal], dim=1)
        return F.relu(self.fully_connected(self.dropout(features)))
