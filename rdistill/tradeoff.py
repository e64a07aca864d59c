"""Cost against quality: the per-request scoring latency of a model, and the Pareto front of a set of models.

One measure everywhere (`rdistill report --measure-latency`, the latency objective of `rdistill tune`,
benchmarks/latency.py): one real history scored against the whole catalogue, CPU, one thread (as a serving
replica runs), median milliseconds after a warm-up call.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
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


def sample_history(split_path: Path, n_items: int, max_len: int) -> list[int]:
    """The longest of a split's first 200 histories (a real user, and the costlier case for any model); items
    1..max_len when the split is missing or empty."""
    if split_path.is_file():
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


def served_latency_ms(model, history: list[int], repeats: int = 50, budget_s: float = 5.0) -> tuple[float, str]:
    """(scoring_latency_ms, runtime) of a student as the endpoint would score it once exported: its ONNX graph
    under ONNX Runtime, or torch when the student does not export (then the export holds no graph either)."""
    import tempfile

    from rdistill.errors import ArtifactError
    from rdistill.onnx_scoring import ONNX_FILE, OnnxScorer, export_onnx

    with tempfile.TemporaryDirectory(prefix="rdistill-onnx-") as folder:
        path = Path(folder) / ONNX_FILE
        try:
            export_onnx(model, path)
        except ArtifactError:
            return scoring_latency_ms(model, history, repeats, budget_s), "torch"
        return scoring_latency_ms(OnnxScorer(model, path), history, repeats, budget_s), "onnx"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both (lower x, higher y), in increasing x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_y = [], -math.inf
    for index in order:
        if points[index][1] > best_y:
            front.append(index)
            best_y = points[index][1]
    return front
