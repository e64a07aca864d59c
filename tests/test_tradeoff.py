"""The one latency measure (rdistill/tradeoff.py): which history it times, and that it leaves the model as found."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from rdistill.models import build_student
from rdistill.tradeoff import median_ms, sample_history, scoring_latency_ms


def test_sample_history_is_the_longest_early_history_cut_to_max_len(tmp_path):
    split = tmp_path / "valid.parquet"
    histories = [[1, 2], [], [3, 4, 5, 6, 7], [8, 9, 10]] + [[11] * 9 for _ in range(300)]
    pq.write_table(pa.table({"history": histories[:4]}), split)
    assert sample_history(split, n_items=20, max_len=3) == [5, 6, 7]  # the most recent items of the longest
    pq.write_table(pa.table({"history": [[1]] * 200 + [[2] * 9]}), split)
    assert sample_history(split, n_items=20, max_len=50) == [1]  # only the first 200 rows are looked at
    assert sample_history(tmp_path / "missing.parquet", n_items=4, max_len=50) == [1, 2, 3, 4]


def test_median_ms_runs_the_requested_calls_after_one_warm_up():
    calls = []
    assert median_ms(lambda: calls.append(1), repeats=7) >= 0
    assert len(calls) == 8


def test_scoring_latency_leaves_threads_and_training_mode_as_found():
    model = build_student("sasrec", n_items=30, max_len=8, params={"hidden_size": 16}).train()
    threads = torch.get_num_threads()
    assert scoring_latency_ms(model, list(range(1, 12)), repeats=3) > 0
    assert model.training and torch.get_num_threads() == threads


def test_a_saved_model_is_loaded_from_its_folder_and_timed_in_each_runtime(tmp_path):
    import pyarrow as pa

    from rdistill.export import export_student
    from rdistill.models import save_student
    from rdistill.onnx_scoring import ONNX_FILE
    from rdistill.tradeoff import time_saved_model

    model = build_student("gru4rec", n_items=30, max_len=8, params={"hidden_size": 16})
    save_student(model, tmp_path / "students" / "run")
    split = tmp_path / "valid.parquet"
    pq.write_table(pa.table({"history": [[1, 2], [3, 4, 5]]}), split)
    timed = time_saved_model(tmp_path / "students" / "run", split_path=split, runtimes=("torch", "onnx", "served"),
                             repeats=3)
    assert timed.saved.kind == "student" and timed.saved.name == "run" and timed.history == [3, 4, 5]
    # a saved student holds no graph: onnx exports one on the side, served scores as an endpoint would (torch)
    assert timed.runtimes == {"torch": "torch", "onnx": "onnx", "served": "torch"}
    assert all(ms > 0 for ms in timed.ms.values())
    assert not (tmp_path / "students" / "run" / ONNX_FILE).exists()

    items = pa.table({"item_idx": list(range(1, 31)), "item_id": [f"i{i}" for i in range(1, 31)], "text": [""] * 30})
    folder = export_student(model, items, tmp_path / "serving", metrics={}, config={}, lineage={})
    timed = time_saved_model(folder, history=[7, 8], repeats=3)
    assert timed.saved.kind == "export" and timed.saved.version and timed.history == [7, 8]
    assert timed.runtimes == {"served": "onnx"}  # the export's own graph, as the endpoint scores it
