"""Student registry and the saved-model format (safetensors weights + model_config.json).

To add a student: write one module with a SequentialRecommender subclass (and its Params) and add it to
STUDENTS below. Serving, distillation and evaluation load models only through load_student.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save

from rdistill.artifacts import atomic_write_bytes, atomic_write_json, read_json
from rdistill.errors import ArtifactError
from rdistill.models.base import SequentialRecommender, StudentParams
from rdistill.models.caser import Caser
from rdistill.models.gru4rec import GRU4Rec
from rdistill import layout
from rdistill.models.sasrec import SASRec
from rdistill.models.slm import SLMStudent

STUDENTS: dict[str, type[SequentialRecommender]] = {cls.name: cls for cls in (SASRec, GRU4Rec, Caser, SLMStudent)}

WEIGHTS_FILE = layout.WEIGHTS
MODEL_CONFIG_FILE = layout.MODEL_CONFIG


def student_class(name: str) -> type[SequentialRecommender]:
    try:
        return STUDENTS[name]
    except KeyError:
        raise KeyError(f"unknown student {name!r}; known students: {sorted(STUDENTS)}") from None


def build_student(name: str, n_items: int, max_len: int, params: StudentParams | dict) -> SequentialRecommender:
    cls = student_class(name)
    if not isinstance(params, cls.Params):
        params = cls.Params.model_validate(params if isinstance(params, dict) else params.model_dump())
    return cls(n_items=n_items, max_len=max_len, params=params)


def save_student(model: SequentialRecommender, directory: Path) -> None:
    """Write weights and config into `directory` (each file atomically); distillation offsets are folded in."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if model.item_offset is not None:  # save the folded table: a saved student is always a plain student
        state = {name: tensor for name, tensor in state.items() if not name.startswith("item_offset.")}
        state["item_embedding.weight"] = model.item_embeddings()
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
    atomic_write_bytes(directory / WEIGHTS_FILE, save(tensors))
    atomic_write_json(directory / MODEL_CONFIG_FILE, model.model_config())


def load_student(directory: Path) -> SequentialRecommender:
    """Rebuild a saved student in eval mode on the CPU."""
    directory = Path(directory)
    config_path, weights_path = directory / MODEL_CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: {directory} is not a saved student")
    config = read_json(config_path)
    model = build_student(config["name"], config["n_items"], config["max_len"], config["params"])
    state = load_file(weights_path)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ArtifactError(f"{weights_path} does not match {config_path}: {err}") from None
    return model.eval()


__all__ = ["STUDENTS", "SequentialRecommender", "StudentParams", "build_student", "load_student",
           "save_student", "student_class"]
