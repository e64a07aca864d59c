"""The exported student as an ONNX graph, scored by ONNX Runtime: the same scores as `model.scores`, at a fraction
of the latency.

A student is small enough that, scoring one history in torch's eager mode, most of its time goes to the per-operator
overhead rather than to arithmetic (a 1-layer, 32-wide SASRec takes ~60% of the 2-layer, 64-wide one's time).
ONNX Runtime runs the same graph with a fraction of that overhead, so the serving endpoint scores with it
(benchmarks/latency.py measures both).

The graph takes `history` int64 [batch, length] (left-padded item_idx, 1 <= length <= max_len, both dynamic) and
returns `scores` float32 [batch, n_items + 1] with column 0 (padding) at -inf, exactly like `model.scores`. A graph
cannot slice by data, so `OnnxScorer` applies the student's `trim_padding` before it, as `model.scores` does inside.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from rdistill.data.schema import PADDING_IDX
from rdistill.errors import ArtifactError

ONNX_FILE = "model.onnx"
# Scores of the graph and of torch may differ by float rounding only (different kernels, fused operators): at most
# this fraction of the largest score (or of 1, for small scores).
PARITY_TOLERANCE = 1e-4

log = logging.getLogger(__name__)


def _label(model) -> str:
    name = getattr(model, "name", None)
    return f"{name} student" if name else type(model).__name__


class _ScoresGraph(torch.nn.Module):
    """`model.scores` as the module torch.onnx exports."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return self.model.scores(history)


def parity_histories(n_items: int, max_len: int, seed: int = 0) -> list[torch.Tensor]:
    """Histories the export is checked on: a padded batch, full-length rows, a single short row, one item."""
    generator = torch.Generator().manual_seed(seed)
    full = torch.randint(1, n_items + 1, (4, max_len), generator=generator)
    padded = full.clone()
    for row, length in enumerate([1, max(1, max_len // 3), max(1, max_len - 1), max_len]):
        padded[row, :max_len - length] = PADDING_IDX
    return [padded, full, padded[1:2, -max(1, max_len // 3):], full[:1, -1:]]


def _forget_recurrent_dispatch() -> None:
    """Let torch.onnx's dynamic-length GRU/LSTM decomposition take effect in a process that exported one before.

    torch.onnx swaps in a while_loop decomposition of aten.gru/aten.lstm (one graph for every length) by assigning
    the operator's py_kernels, which does not clear the operator's dispatch cache. The first export caches torch's
    Python-loop decomposition there; every later export in the process then unrolls the loop over the example's
    length and the graph is fixed to it (torch 2.13: the second GRU4Rec exported in one process failed on shorter
    histories). Clearing the cache is what py_impl does on registration."""
    for name in ("gru", "lstm"):
        cache = getattr(getattr(getattr(torch.ops.aten, name), "input", None), "_dispatch_cache", None)
        if isinstance(cache, dict):
            cache.clear()


def export_onnx(model, path: Path) -> dict[str, Any]:
    """Write `model.scores` as an ONNX graph to `path` and check it against torch on `parity_histories`.

    Returns what the manifest records (file, opset, seconds, the largest difference seen); raises ArtifactError
    naming the student when the export fails or the graph disagrees with torch. The model is in eval mode while
    it is exported and checked, and back in its own mode after."""
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        program = _export(model, path)
        worst = _check_parity(model, path)
    except ArtifactError:
        path.unlink(missing_ok=True)
        raise
    finally:
        model.train(was_training)
    return {"file": path.name, "opset": program.model.opset_imports.get("", None),
            "max_abs_diff": worst, "seconds": round(time.perf_counter() - started, 2)}


def _export(model, path: Path):
    """torch.onnx.export of the eval-mode model's `scores`, batch and length dynamic; ArtifactError on failure."""
    # example sizes of at least 2 and unequal, so torch.export specialises neither dimension
    example = torch.ones(3 if model.max_len == 2 else 2, model.max_len, dtype=torch.long)
    batch = torch.export.Dim("batch", min=1, max=65536)
    length = torch.export.Dim("length", min=1, max=model.max_len) if model.max_len > 1 else 1
    # torch.onnx prints its progress and warns about optional packages (torchvision): keep the log clean
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    registration_level = registration_log.level
    try:
        registration_log.setLevel(logging.ERROR)
        _forget_recurrent_dispatch()
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(_ScoresGraph(model), (example,), dynamo=True, verbose=False,
                                        input_names=["history"], output_names=["scores"],
                                        dynamic_shapes=({0: batch, 1: length},))
            program.save(str(path))
    except Exception as err:  # torch.export raises many kinds; all mean "this student does not export"
        raise ArtifactError(f"could not export the {_label(model)} to ONNX: {type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}") from err
    finally:
        registration_log.setLevel(registration_level)
    return program


def _check_parity(model, path: Path) -> float:
    """The largest score difference between the graph and the eval-mode model on `parity_histories`; ArtifactError
    when the graph fails on one of them or disagrees beyond float rounding."""
    import numpy as np

    try:
        scorer = OnnxScorer(model, path)
    except ImportError as err:
        raise ArtifactError(f"the ONNX graph cannot be checked without onnxruntime: {err}") from err
    worst = 0.0
    with torch.inference_mode():
        for history in parity_histories(model.n_items, model.max_len):
            shape = tuple(history.shape)
            expected = model.scores(history).numpy()
            try:
                got = scorer.scores(history).numpy()
            except Exception as err:  # ONNX Runtime's own error types; a graph traced for fixed shapes
                raise ArtifactError(f"the ONNX graph of the {_label(model)} fails on a history of "
                                    f"shape {shape}: {str(err).splitlines()[0]}") from err
            finite = np.isfinite(expected)
            difference = np.abs(got[finite] - expected[finite]).max(initial=0.0) if finite.any() else 0.0
            # float rounding grows with depth and with the scores' size: judge it against their scale
            scale = max(1.0, float(np.abs(expected[finite]).max(initial=0.0)))
            if not np.array_equal(finite, np.isfinite(got)) or difference > PARITY_TOLERANCE * scale:
                raise ArtifactError(f"the ONNX graph of the {_label(model)} disagrees with torch on a "
                                    f"history of shape {shape}: largest difference {difference:.3g} "
                                    f"(scores up to {scale:.3g})")
            worst = max(worst, float(difference))
    return worst


class OnnxScorer:
    """Scores histories with an exported graph; drop-in for the student where serving calls `scores`."""

    def __init__(self, model, path: Path, threads: int = 1):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # as the torch path: one thread per replica by default
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ArtifactError(f"{path} could not be loaded by ONNX Runtime: {err}") from err
        self.model = model  # for trim_padding and the catalogue size; its weights are not used to score
        self.max_len = model.max_len
        self.n_items = model.n_items

    def scores(self, history: torch.Tensor) -> torch.Tensor:
        """[B, n_items + 1] float32, as model.scores; history [B, L] left-padded item_idx."""
        import numpy as np

        history = self.model.trim_padding(self.model.most_recent(history))
        (scores,) = self.session.run(["scores"], {"history": np.ascontiguousarray(history.numpy())})
        return torch.from_numpy(scores)


def scorer_for(model, directory: Path, runtime: str, threads: int = 1):
    """What serving scores with: an OnnxScorer over `directory/model.onnx`, or the torch model itself.

    runtime "onnx" requires the graph; "auto" uses it when the export holds one and ONNX Runtime imports;
    "torch" never does."""
    path = Path(directory) / ONNX_FILE
    if runtime == "torch":
        return model
    if not path.is_file():
        if runtime == "onnx":
            raise ArtifactError(f"{path} is missing: export the model again (rdistill export) or serve with "
                                "runtime=torch")
        return model
    try:
        return OnnxScorer(model, path, threads)
    except ImportError as err:
        if runtime == "onnx":
            raise ArtifactError(f"runtime=onnx needs the onnxruntime package: {err}") from err
        log.warning("onnxruntime is not installed; scoring %s with torch", path.parent)
        return model


def runtime_name(scorer) -> str:
    return "onnx" if isinstance(scorer, OnnxScorer) else "torch"
