"""SLM (after SLMRec, Xu et al., 2024): a small language-model student cut from the teacher itself.

The student keeps the teacher's input path and its first `num_layers` backbone layers, reads the history the way
the teacher does in `items` mode (item vectors through inputs_embeds), and scores the catalogue through a small
item head (the teacher's output projection and item table, now trainable). It is initialised from the fine-tuned
teacher (teacher/checkpoint/) and trained with cross-entropy plus SLMRec's feature distillation: at
`feature_blocks` evenly spaced blocks its pooled states are pulled towards the teacher's cached hidden states
(signals/hidden.parquet), see rdistill/distill/losses.py. Optionally each block also gets its own
cross-entropy head (SLMRec's extra supervision).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from rdistill import layout
from rdistill.data.schema import PADDING_IDX
from rdistill.errors import ArtifactError, ConfigError
from rdistill.models.base import SequentialRecommender, StudentParams, trim_leading_padding


class SLMParams(StudentParams):
    num_layers: int = Field(2, ge=1)  # backbone layers kept from the teacher (the first ones)
    feature_blocks: int = Field(2, ge=1)  # B: aligned blocks for feature distillation (divides num_layers)
    # Filled from the teacher when training starts; a saved student carries them so it rebuilds on its own.
    backbone_config: dict[str, Any] | None = None
    teacher_layers: int | None = None  # the teacher backbone's depth, for the block alignment
    decoder: bool = False


_LAYER_INDEX = re.compile(r"\.(?:layer|layers|h|block)\.(\d+)\.")


class SLMStudent(SequentialRecommender):
    name = "slm"
    Params = SLMParams

    def __init__(self, n_items: int, max_len: int, params: SLMParams):
        if params.backbone_config is None:
            raise ConfigError("the slm student is cut from a trained teacher: train it with `rdistill train-student` "
                              "or `rdistill tune` on an artifact root that holds teacher/checkpoint/")
        if params.num_layers % params.feature_blocks:
            raise ConfigError(f"student.params.feature_blocks={params.feature_blocks} must divide "
                              f"student.params.num_layers={params.num_layers}")
        from transformers import AutoConfig, AutoModel

        backbone_config = dict(params.backbone_config)
        model_type = backbone_config.pop("model_type")
        config = AutoConfig.for_model(model_type, **backbone_config)
        width = config.hidden_size
        params = params.model_copy(update={"hidden_size": width})
        super().__init__(n_items, max_len, params)
        config.num_hidden_layers = params.num_layers
        # the student reads item vectors only: the token embedding table (most of a small LM) is never used
        config.vocab_size, config.pad_token_id = 1, 0
        self.backbone = AutoModel.from_config(config)
        self.input_projection = nn.Linear(width, width)
        self.output_projection = nn.Linear(width, width)
        self.dropout = nn.Dropout(params.dropout)
        self.register_buffer("positions", torch.arange(max_len), persistent=False)

    # --------------------------------------------------------------------------- built from the teacher

    @classmethod
    def params_from_teacher(cls, params: SLMParams, teacher_dir: Path) -> SLMParams:
        """Fill the backbone config and depth from teacher/checkpoint/ (see rdistill/models/lm_teacher.py)."""
        from transformers import AutoConfig

        from rdistill.artifacts import read_json

        teacher_dir = Path(teacher_dir)
        if not (teacher_dir / layout.TEACHER_CONFIG_FILE).is_file():
            raise ArtifactError(f"{teacher_dir} holds no trained teacher: the slm student is cut from one; run "
                                "`rdistill teacher-train` first")
        teacher_config = read_json(teacher_dir / layout.TEACHER_CONFIG_FILE)
        if teacher_config["params"]["mode"] != "items" or teacher_config["params"].get("pooling") == "mean":
            raise ConfigError("the slm student reads item vectors and pools the last position: it needs a teacher "
                              "trained with teacher.mode=items and teacher.pooling=last")
        backbone = AutoConfig.from_pretrained(teacher_dir / layout.TEACHER_BACKBONE_DIR).to_dict()
        depth = int(backbone["num_hidden_layers"])
        if params.num_layers > depth:
            raise ConfigError(f"student.params.num_layers={params.num_layers} but the teacher has only {depth} layers")
        keep = {key: value for key, value in backbone.items() if not key.startswith("_") and key not in {
            "architectures", "transformers_version", "torch_dtype", "dtype"}}
        return params.model_copy(update={"backbone_config": keep, "teacher_layers": depth,
                                         "decoder": bool(teacher_config.get("decoder", False))})

    def load_teacher_weights(self, teacher_dir: Path) -> None:
        """Copy the teacher's input path, first layers, head and item table (text + ID) into this student."""
        from safetensors.torch import load_file

        state = load_file(Path(teacher_dir) / layout.WEIGHTS)
        own: dict[str, torch.Tensor] = {}
        for key, tensor in state.items():
            if key.startswith("backbone."):
                if "word_embeddings" in key or "embed_tokens" in key or key.endswith(".wte.weight"):
                    continue  # token embeddings: unused in items mode (the student keeps a 1-row stub)
                match = _LAYER_INDEX.search(key)
                if match and int(match.group(1)) >= self.params.num_layers:
                    continue
                own[key] = tensor
            elif key.startswith(("input_projection.", "output_projection.")):
                own[key] = tensor
        with torch.no_grad():
            own["item_embedding.weight"] = state["item_text_vectors"] + state["item_id_embedding.weight"]
        missing, unexpected = self.load_state_dict(own, strict=False)
        missing = [key for key in missing if not key.startswith("item_offset.") and "word_embeddings" not in key
                   and "embed_tokens" not in key and not key.endswith(".wte.weight")]
        if missing or unexpected:
            raise ArtifactError(f"{teacher_dir} does not fit the slm student: missing {missing[:5]}, "
                                f"unexpected {unexpected[:5]}")

    def aligned_layers(self) -> list[tuple[int, int]]:
        """(student layer, teacher layer) at each of the B evenly spaced block ends (layer 0 = embeddings)."""
        blocks, depth = self.params.feature_blocks, self.params.teacher_layers or self.params.num_layers
        return [(block * self.params.num_layers // blocks, block * depth // blocks) for block in range(1, blocks + 1)]

    # ------------------------------------------------------------------------------------------ contract

    def trim_padding(self, history: torch.Tensor) -> torch.Tensor:
        return trim_leading_padding(history)  # padding is masked; positions count real items only

    def encode(self, history: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(user vector [B, width], pooled states at the aligned block ends)."""
        history = self.most_recent(history)
        if not torch.compiler.is_exporting():  # an exported graph cannot slice by data: its caller trims instead
            history = self.trim_padding(history)
        mask = (history != PADDING_IDX).long()
        inputs_embeds = self.input_projection(self.dropout(self.embed_history(history)))
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        inputs = {"inputs_embeds": inputs_embeds, "attention_mask": mask, "position_ids": position_ids}
        if not self.params.decoder:
            inputs["token_type_ids"] = torch.zeros_like(mask)
        output = self.backbone(**inputs, output_hidden_states=True)
        # left padding: the last position is the most recent real item (the teacher pools the same way)
        blocks = [output.hidden_states[student][:, -1] for student, _ in self.aligned_layers()]
        user = self.output_projection(self.dropout(output.last_hidden_state[:, -1]))
        return user, blocks

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return self.encode(history)[0]

    def block_logits(self, state: torch.Tensor) -> torch.Tensor:
        """Scores from an intermediate block's state through the same head (SLMRec's extra supervision)."""
        return self.catalogue_logits(self.output_projection(state))
