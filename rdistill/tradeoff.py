"""Cost against quality: the per-request scoring latency of a model, and the Pareto front of a set of models.

One measure everywhere (`rdistill report --measure-latency`, the latency objective of `rdistill tune`,
benchmarks/latency.py): one real history scored against the whole catalogue, CPU, one thread (as a serving
replica runs), median milliseconds after a warm-up call. `time_saved_model` is the one way to time a model a
stage saved (an export, a student run, the teacher checkpoint): load it from its folder, time one history.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def median_ms(fn: Callable[[], Any], repeats: int, budget_s: float = math.inf) -> float:
    """Median milliseconds of `repeats` calls of fn (at least one; fewer when budget_s runs out)."""
    fn()  # warm-up: first-call allocations and lazy initialisation
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < repeats and (not times or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)


def sample_history(split_path: Path | None, n_items: int, max_len: int) -> list[int]:
    """The longest of a split's first 200 histories (a real user, and the costlier case for any model); items
    1..max_len when the split is missing (or None) or empty."""
    if split_path is not None and Path(split_path).is_file():
        import pyarrow.parquet as pq

        histories = [h for h in pq.read_table(split_path, columns=["history"]).column("history").to_pylist()[:200]
                     if h]
        if histories:
            return max(histories, key=len)[-max_len:]
    return list(range(1, min(n_items, max_len) + 1))


def scoring_latency_ms(model, history: list[int], repeats: int = 50, budget_s: float = 5.0) -> float:
    """Median milliseconds for model.scores on one history (left-padded to model.max_len), one torch thread.
    `model` is a torch model (timed in eval mode) or an OnnxScorer (rdistill/onnx_scoring.py, one thread too)."""
    import torch

    from rdistill.data.dataset import pad_history_lists

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # comparable across machines; serving replicas also run one thread
    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        with torch.inference_mode():
            padded = pad_history_lists([history[-model.max_len:]], model.max_len)
            return median_ms(lambda: model.scores(padded), repeats, budget_s)
    finally:
        if isinstance(model, torch.nn.Module):
            model.train(was_training)
        torch.set_num_threads(threads)


RUNTIMES = ("torch", "onnx", "served")


def history_latency_ms(model, history: list[int], runtime: str = "torch", folder: Path | None = None,
                       repeats: int = 50, budget_s: float = 5.0) -> tuple[float, str]:
    """(scoring_latency_ms, runtime timed) of `model` on one history. runtime "torch": the model itself; "onnx":
    its graph under ONNX Runtime (folder/model.onnx when the folder holds one, else a temporary export); "served":
    as the endpoint would score it: a folder's graph when it has one (else torch, as serving falls back), or for a
    model without a folder its fresh export, torch when the model does not export."""
    from rdistill.onnx_scoring import ONNX_FILE, OnnxScorer, runtime_name, scorer_for

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: expected one of {RUNTIMES}")
    if runtime == "torch":
        return scoring_latency_ms(model, history, repeats, budget_s), "torch"
    if runtime == "served" and folder is not None:
        scorer = scorer_for(model, Path(folder), "auto")
        return scoring_latency_ms(scorer, history, repeats, budget_s), runtime_name(scorer)
    if folder is not None and (Path(folder) / ONNX_FILE).is_file():
        return scoring_latency_ms(OnnxScorer(model, Path(folder) / ONNX_FILE), history, repeats, budget_s), "onnx"
    return _fresh_export_latency_ms(model, history, fall_back=runtime == "served", repeats=repeats,
                                    budget_s=budget_s)


def _fresh_export_latency_ms(model, history: list[int], fall_back: bool, repeats: int, budget_s: float
                             ) -> tuple[float, str]:
    """Export the model's graph to a temporary folder and time it; torch when it does not export and fall_back."""
    import tempfile

    from rdistill.errors import ArtifactError
    from rdistill.onnx_scoring import ONNX_FILE, OnnxScorer, export_onnx

    with tempfile.TemporaryDirectory(prefix="rdistill-onnx-") as folder:
        path = Path(folder) / ONNX_FILE
        try:
            export_onnx(model, path)
        except ArtifactError:
            if not fall_back:
                raise
            return scoring_latency_ms(model, history, repeats, budget_s), "torch"
        return scoring_latency_ms(OnnxScorer(model, path), history, repeats, budget_s), "onnx"


def served_latency_ms(model, history: list[int], repeats: int = 50, budget_s: float = 5.0) -> tuple[float, str]:
    """(scoring_latency_ms, runtime) of a student as the endpoint would score it once exported: its ONNX graph
    under ONNX Runtime, or torch when the student does not export (then the export holds no graph either)."""
    return history_latency_ms(model, history, "served", None, repeats, budget_s)


@dataclass
class SavedModel:
    """A model loaded from the folder a stage saved it in."""

    model: Any  # a student (SequentialRecommender) or the LM teacher, in eval mode
    kind: str  # "export" (serving/model/), "student" (students/<run>/) or "teacher" (teacher/checkpoint/)
    name: str  # an export's name, else the folder's
    folder: Path
    version: str | None = None  # an export's version


def load_saved_model(folder: Path) -> SavedModel:
    """The model in `folder`: an export (it holds items.parquet), a saved student (model_config.json) or a
    consolidated teacher; errors (ArtifactError) name the missing file."""
    from rdistill import layout
    from rdistill.export import ITEMS_FILE, load_exported

    folder = Path(folder)
    if (folder / ITEMS_FILE).is_file():
        exported = load_exported(folder)
        return SavedModel(exported.model, "export", exported.name, folder, exported.version)
    if (folder / layout.MODEL_CONFIG).is_file():
        from rdistill.models import load_student

        return SavedModel(load_student(folder), "student", folder.name, folder)
    from rdistill.models.lm_teacher import load_teacher

    teacher, _ = load_teacher(folder)
    return SavedModel(teacher, "teacher", folder.name, folder)


@dataclass
class SavedModelLatency:
    saved: SavedModel
    history: list[int]  # the history timed
    ms: dict[str, float]  # runtime asked for -> median milliseconds
    runtimes: dict[str, str]  # runtime asked for -> runtime timed ("served" is "onnx" or "torch")


def time_saved_model(folder: Path, history: list[int] | None = None, split_path: Path | None = None,
                     runtimes: tuple[str, ...] = ("served",), repeats: int = 50, budget_s: float = 5.0
                     ) -> SavedModelLatency:
    """Load the model saved in `folder` and time one history in each runtime (history_latency_ms). The history is
    `history`, else sample_history of `split_path` cut to the model's max_len."""
    saved = load_saved_model(folder)
    if history is None:
        history = sample_history(split_path, saved.model.n_items, saved.model.max_len)
    ms, timed = {}, {}
    for runtime in runtimes:
        ms[runtime], timed[runtime] = history_latency_ms(saved.model, history, runtime, saved.folder, repeats,
                                                         budget_s)
    return SavedModelLatency(saved, history, ms, timed)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both (lower x, higher y), in increasing x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_y = [], -math.inf
    for index in order:
        if points[index][1] > best_y:
            front.append(index)
            best_y = points[index][1]
    return front
