"""SASRec (Kang & McAuley, 2018): causal self-attention over the history; the last position is the user state."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from rdistill.data.schema import PADDING_IDX
from rdistill.models.base import SequentialRecommender, StudentParams, trim_leading_padding

# Added to the attention score of a key a position may not see. Finite, unlike -inf, so that a row that may see
# nothing softmaxes without NaN; exp() of it beside any real score is exactly 0 in float32.
BLOCKED = -1e9


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
        # the future half of attention_bias, cut to each history's length (not saved: it is a constant)
        self.register_buffer("future_bias", torch.full((max_len, max_len), BLOCKED).triu(1), persistent=False)
        self.apply(_init_weights)
        self.init_item_embeddings(std=0.02)

    def blocked_attention(self, history: torch.Tensor) -> torch.Tensor:
        """[B, L, L] boolean, True = may not attend: the future, and padding other than oneself.

        A padding position may attend to itself so no softmax row is empty (an empty row gives NaN, and
        0 * NaN in the next layer would poison the real positions too)."""
        length = history.shape[1]
        future = torch.triu(torch.ones(length, length, dtype=torch.bool, device=history.device), diagonal=1)
        padding_key = (history == PADDING_IDX)[:, None, :]
        itself = torch.eye(length, dtype=torch.bool, device=history.device)[None]
        return future[None] | (padding_key & ~itself)

    def attention_mask(self, history: torch.Tensor) -> torch.Tensor:
        """blocked_attention as nn.TransformerEncoder takes it: [B * heads, L, L]."""
        return self.blocked_attention(history).repeat_interleave(self.params.num_heads, dim=0)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.sequence_states(history)[:, -1]
        return self.last_state(history)

    def trim_padding(self, history: torch.Tensor) -> torch.Tensor:
        return trim_leading_padding(history)  # padding is masked; positions count from the most recent item

    def sequence_states(self, history: torch.Tensor) -> torch.Tensor:
        history = self.prepare(history)
        hidden = self.encoder(self.input_states(history), mask=self.attention_mask(history))
        return self.output_norm(hidden)

    def last_state(self, history: torch.Tensor) -> torch.Tensor:
        """forward() for inference: the state of the last position only, the same numbers as
        sequence_states(history)[:, -1] without dropout (tests/test_models.py checks it).

        The final block computes its query, attention and feed-forward for the last position alone, and attention
        is one fused call: on one history (serving) it ran about 1.5x faster than the full encoder, since a student
        this small spends its time in per-operator overhead rather than arithmetic. For the same reason the
        exported graph (rdistill/onnx_scoring.py) spells attention out as four operators with an additive mask
        (attention_bias): torch.onnx's expansion of the fused call, with its boolean mask, NaN guards and
        general-rank transposes, held over a quarter of the graph's nodes."""
        history = self.prepare(history)
        hidden = self.input_states(history)
        batch, length = history.shape
        exporting = torch.compiler.is_exporting()
        # One trimmed left-padded history holds no padding: a causal mask is all it needs (SDPA builds it). A graph
        # being exported serves any batch, so it always carries the full mask.
        single = not exporting and batch == 1  # (a symbolic batch must not be compared)
        if single:
            mask = None
        elif exporting:
            mask = self.attention_bias(history)  # [B, 1, L, L], added to the scores
        else:
            mask = ~self.blocked_attention(history)[:, None]  # [B, 1, L, L]; True = may attend
        layers = self.encoder.layers
        for index, layer in enumerate(layers):
            attention = layer.self_attn
            qkv = F.linear(layer.norm1(hidden), attention.in_proj_weight, attention.in_proj_bias)
            query, key, value = qkv.view(batch, length, 3, self.params.num_heads, -1).permute(2, 0, 3, 1, 4)
            causal = single
            if index == len(layers) - 1:  # from here on only the last position's state is needed
                query, hidden, causal = query[:, :, -1:], hidden[:, -1:], False  # the last query sees every key
                mask = None if single else mask[:, :, -1:]
            if exporting:
                scale = query.shape[-1] ** -0.5
                context = torch.softmax(query @ key.transpose(-1, -2) * scale + mask, dim=-1) @ value
            else:
                context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=causal)
            hidden = hidden + attention.out_proj(context.transpose(1, 2).reshape(batch, hidden.shape[1], -1))
            hidden = hidden + layer.linear2(layer.activation(layer.linear1(layer.norm2(hidden))))
        return self.output_norm(hidden[:, -1])

    def attention_bias(self, history: torch.Tensor) -> torch.Tensor:
        """[B, 1, L, L] float, added to the attention scores: 0 where a position may attend, BLOCKED where the key
        is in the future or padding. Unlike blocked_attention it lets a padding position attend to nothing: the
        finite bias gives its row a finite softmax (a uniform one), and no real position ever reads it."""
        length = history.shape[1]
        padding_key = (history == PADDING_IDX)[:, None, None, :]
        return torch.where(padding_key, BLOCKED, self.future_bias[:length, :length])

    def prepare(self, history: torch.Tensor) -> torch.Tensor:
        history = self.most_recent(history)
        if not torch.compiler.is_exporting():  # an exported graph cannot slice by data: its caller trims instead
            history = self.trim_padding(history)
        return history

    def input_states(self, history: torch.Tensor) -> torch.Tensor:
        """[B, L, d]: item + position embeddings, normalised, zero at padding; the encoder's input."""
        positions = torch.arange(history.shape[1], device=history.device)
        # positions are counted so that the most recent item always gets the last position embedding
        positions = positions + (self.max_len - history.shape[1])
        hidden = self.embed_history(history) * self.params.hidden_size ** 0.5 + self.position_embedding(positions)
        hidden = self.input_dropout(self.input_norm(hidden))
        return hidden * (history != PADDING_IDX).unsqueeze(-1)


def _init_weights(module: nn.Module) -> None:
    # small normal init as in the reference implementations; PyTorch's defaults train noticeably slower here
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
