"""Every student exports to an ONNX graph that ONNX Runtime scores exactly like torch; serving picks it up."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from rdistill.data.schema import PADDING_IDX
from rdistill.errors import ArtifactError
from rdistill.export import export_student, load_exported
from rdistill.models import build_student
from rdistill.models.base import SequentialRecommender
from rdistill.onnx_scoring import ONNX_FILE, OnnxScorer, export_onnx, runtime_name, scorer_for

from test_models import EXTRA, SMALL_PARAMS

N_ITEMS, MAX_LEN = 40, 12


def student(name: str) -> SequentialRecommender:
    torch.manual_seed(0)
    model = build_student(name, N_ITEMS, MAX_LEN, {**SMALL_PARAMS, **EXTRA.get(name, {})})
    with torch.no_grad():  # larger item vectors than the init's, so scores are far from zero and differences show
        model.item_embedding.weight.mul_(20.0)
    return model


def histories() -> list[torch.Tensor]:
    """Shapes serving sends, and some it never does: padded rows of several lengths, a single item, a history
    longer than max_len (the scorer must truncate it like the model), a row of length 1."""
    generator = torch.Generator().manual_seed(1)
    batch = torch.randint(1, N_ITEMS + 1, (5, MAX_LEN), generator=generator)
    for row, length in enumerate([1, 2, 5, 11, 12]):
        batch[row, :MAX_LEN - length] = PADDING_IDX
    long = torch.randint(1, N_ITEMS + 1, (2, MAX_LEN + 7), generator=generator)
    return [batch, batch[2:], batch[:1], long, torch.tensor([[7]]), torch.tensor([[0, 0, 3], [0, 5, 6]])]


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "caser", "slm"])
def test_every_student_scores_the_same_under_onnx_runtime(tmp_path, name):
    model = student(name)
    report = export_onnx(model, tmp_path / ONNX_FILE)
    assert report["file"] == ONNX_FILE and report["max_abs_diff"] < 1e-4 and model.training  # mode restored
    scorer = OnnxScorer(model, tmp_path / ONNX_FILE)
    model.eval()
    with torch.inference_mode():
        for history in histories():
            expected, got = model.scores(history), scorer.scores(history)
            assert got.shape == expected.shape == (history.shape[0], N_ITEMS + 1) and got.dtype == torch.float32
            assert torch.isneginf(got[:, PADDING_IDX]).all()
            torch.testing.assert_close(got[:, 1:], expected[:, 1:], atol=1e-5, rtol=1e-5)
            assert torch.equal(got[:, 1:].topk(10).indices, expected[:, 1:].topk(10).indices)


def test_sasrecs_graph_spells_attention_out_and_masks_the_padding_column_with_one_add(tmp_path):
    # At serving sizes the graph's time goes to per-operator overhead: torch.onnx's expansion of the fused
    # attention call (NaN guards, general-rank transposes) and of the padding column's indexed write held a third
    # of its nodes, so SASRec's exported path avoids both (the parity test above checks the numbers)
    import onnx

    model = student("sasrec")
    export_onnx(model, tmp_path / ONNX_FILE)
    operators = [node.op_type for node in onnx.load(str(tmp_path / ONNX_FILE)).graph.node]
    assert not {"IsNaN", "ScatterElements", "ScatterND"} & set(operators), sorted(set(operators))
    assert operators.count("Softmax") == model.params.num_layers  # one per block, nothing else


def test_a_recurrent_student_exported_again_in_one_process_keeps_a_dynamic_length(tmp_path):
    # torch caches its loop decomposition of aten.gru after an export; without rdistill clearing that cache, the
    # next GRU graph in the process held only the example's length (e.g. a tune driver exporting its winner)
    for attempt in range(2):
        model = student("gru4rec")
        export_onnx(model, tmp_path / f"{attempt}.onnx")
        scorer = OnnxScorer(model, tmp_path / f"{attempt}.onnx")
        model.eval()
        with torch.inference_mode():
            for history in (torch.tensor([[7]]), torch.tensor([[0, 5, 6]])):
                torch.testing.assert_close(scorer.scores(history)[:, 1:], model.scores(history)[:, 1:],
                                           atol=1e-5, rtol=1e-5)


class PythonLoopStudent(SequentialRecommender):
    """A student whose forward reads item ids into Python and loops over them, which no graph can hold."""

    name = "python-loop"

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        rows = [self.item_embedding.weight[max(row)] for row in history.tolist()]
        return torch.stack(rows)


def test_a_student_whose_graph_is_wrong_is_refused_and_no_graph_is_left(tmp_path):
    from rdistill.models.base import StudentParams

    # torch.onnx traces the loop for the example's batch of 2: the graph fails on any other batch size
    with pytest.raises(ArtifactError, match=r"ONNX graph of the python-loop student fails on a history of shape"):
        export_onnx(PythonLoopStudent(N_ITEMS, MAX_LEN, StudentParams(hidden_size=8)), tmp_path / ONNX_FILE)
    assert not (tmp_path / ONNX_FILE).exists()


def test_the_export_holds_the_graph_and_serving_chooses_its_runtime(tmp_path):
    items = pa.table({"item_idx": list(range(1, N_ITEMS + 1)), "item_id": [f"i{i}" for i in range(1, N_ITEMS + 1)],
                      "text": [""] * N_ITEMS})
    folder = export_student(student("sasrec"), items, tmp_path / "model", metrics={}, config={}, lineage={})
    exported = load_exported(folder)
    assert (folder / ONNX_FILE).is_file() and exported.manifest["onnx"]["opset"] >= 17
    assert exported.manifest["onnx"]["max_abs_diff"] < 1e-4
    assert runtime_name(scorer_for(exported.model, folder, "auto")) == "onnx"
    assert runtime_name(scorer_for(exported.model, folder, "torch")) == "torch"

    (folder / ONNX_FILE).unlink()  # an export from before the graph existed, or one whose student did not export
    assert runtime_name(scorer_for(exported.model, folder, "auto")) == "torch"
    with pytest.raises(ArtifactError, match=f"{ONNX_FILE} is missing"):
        scorer_for(exported.model, folder, "onnx")


def test_the_latency_objective_times_the_student_as_it_would_be_served():
    from rdistill.models.base import StudentParams
    from rdistill.tradeoff import served_latency_ms

    ms, runtime = served_latency_ms(student("caser"), [3, 4, 5], repeats=5)
    assert ms > 0 and runtime == "onnx"
    ms, runtime = served_latency_ms(PythonLoopStudent(N_ITEMS, MAX_LEN, StudentParams(hidden_size=8)), [3], repeats=5)
    assert ms > 0 and runtime == "torch"  # no graph: its export would hold none either, so serving uses torch
