"""`rdistill prepare` (rdistill.data.prepare): ordering, de-duplication, k-core, leave-one-out, and the end-to-end
dataset/ folder with its manifest, written atomically."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rdistill.artifacts import MANIFEST_NAME
from rdistill.config import load_config
from rdistill.data.prepare import (
    drop_repeated_items,
    k_core,
    leave_one_out,
    order_chronologically,
    prepare_dataset,
    take_slice,
)
from rdistill.data.schema import SPLIT_SCHEMA, TABLE_SCHEMAS
from rdistill.errors import DataError

TABLES = ("items", "users", "train", "valid", "test")


def _log(rows: list[tuple[str, str, float]], row_order: list[int] | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "timestamp": np.array([r[2] for r in rows], dtype=np.float64),
            "row_order": np.array(row_order if row_order is not None else range(len(rows)), dtype=np.int64),
        }
    )


def _pairs(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(frame["user_id"], frame["item_id"]))


# ------------------------------------------------------------------------------------- ordering / dedup


def test_order_chronologically_breaks_timestamp_ties_by_row_order():
    # DataFrame position differs from file position (row_order): the tie must follow the file
    log = _log(
        [("a", "late", 10.0), ("b", "b1", 1.0), ("a", "tie_second", 5.0), ("a", "early", 1.0),
         ("a", "tie_first", 5.0)],
        row_order=[0, 1, 4, 2, 3],
    )
    ordered = order_chronologically(log)
    assert _pairs(ordered) == [("a", "early"), ("a", "tie_first"), ("a", "tie_second"), ("a", "late"),
                               ("b", "b1")]
    assert ordered.index.tolist() == list(range(5))
    assert list(ordered.columns) == ["user_id", "item_id", "timestamp", "row_order"]


def test_drop_repeated_items_keeps_the_first():
    log = _log([("a", "x", 1.0), ("a", "y", 2.0), ("a", "x", 3.0), ("b", "x", 4.0), ("a", "z", 5.0),
                ("a", "y", 6.0)])
    kept = drop_repeated_items(log)
    assert _pairs(kept) == [("a", "x"), ("a", "y"), ("b", "x"), ("a", "z")]
    assert kept["timestamp"].tolist() == [1.0, 2.0, 4.0, 5.0]
    assert kept.index.tolist() == [0, 1, 2, 3]


def test_take_slice_keeps_the_first_users_and_their_most_recent_items():
    log = order_chronologically(_log([("10", "x", 1.0), ("2", "y", 2.0), ("2", "z", 3.0), ("2", "w", 4.0),
                                      ("3", "x", 5.0), ("10", "q", 6.0)]))
    # natural order of ids: "2" < "3" < "10"
    assert _pairs(take_slice(log, 2, None)) == [("2", "y"), ("2", "z"), ("2", "w"), ("3", "x")]
    assert _pairs(take_slice(log, None, 1)) == [("10", "q"), ("2", "w"), ("3", "x")]
    assert _pairs(take_slice(log, 1, 2)) == [("2", "z"), ("2", "w")]
    assert take_slice(log, None, None).equals(log)


# --------------------------------------------------------------------------------------------- k-core


def _assert_core(frame: pd.DataFrame, min_user: int, min_item: int) -> None:
    assert (frame["user_id"].value_counts() >= min_user).all()
    assert (frame["item_id"].value_counts() >= min_item).all()


def test_k_core_cascades_to_a_fixed_point():
    # D occurs once -> dropped; then u3 has one item -> dropped; then C occurs once -> dropped; then u2 has
    # one item -> dropped. Only u1 and u4 remain.
    rows = [("u1", "A", 1), ("u1", "B", 2), ("u2", "B", 3), ("u2", "C", 4), ("u3", "C", 5), ("u3", "D", 6),
            ("u4", "A", 7), ("u4", "B", 8)]
    core, iterations = k_core(_log(rows), min_user=2, min_item=2)
    assert _pairs(core) == [("u1", "A"), ("u1", "B"), ("u4", "A"), ("u4", "B")]
    assert core["timestamp"].tolist() == [1.0, 2.0, 7.0, 8.0]
    assert core.index.tolist() == [0, 1, 2, 3]
    assert iterations == 5
    _assert_core(core, 2, 2)


def test_k_core_item_removal_drops_user_below_threshold():
    # D (once) goes first; u2 is then left with 2 < 3 items and goes in the second round
    rows = [("u1", "A", 1), ("u1", "B", 2), ("u1", "C", 3), ("u2", "A", 4), ("u2", "B", 5), ("u2", "D", 6),
            ("u3", "A", 7), ("u3", "B", 8), ("u3", "C", 9)]
    core, iterations = k_core(_log(rows), min_user=3, min_item=2)
    assert sorted(set(core["user_id"])) == ["u1", "u3"]
    assert sorted(set(core["item_id"])) == ["A", "B", "C"]
    assert len(core) == 6
    assert iterations == 3
    _assert_core(core, 3, 2)


def test_k_core_without_anything_to_drop_stops_at_once():
    rows = [("u1", "A", 1), ("u1", "B", 2), ("u2", "A", 3), ("u2", "B", 4)]
    core, iterations = k_core(_log(rows), min_user=2, min_item=2)
    assert iterations == 1
    assert len(core) == 4


def test_k_core_can_empty_the_log():
    rows = [("u1", "A", 1), ("u1", "B", 2), ("u2", "C", 3)]
    core, _ = k_core(_log(rows), min_user=3, min_item=1)
    assert core.empty


def test_k_core_random_logs_meet_both_thresholds():
    rng = random.Random(7)
    rows = [(f"u{rng.randrange(30)}", f"i{int(rng.paretovariate(1.2)) % 40}", float(t)) for t in range(400)]
    core, iterations = k_core(_log(rows), min_user=4, min_item=3)
    assert iterations >= 2
    assert not core.empty
    _assert_core(core, 4, 3)
    # nothing that meets the thresholds in the result was dropped for no reason: a fixed point
    again, extra = k_core(core, min_user=4, min_item=3)
    assert extra == 1 and len(again) == len(core)


# ----------------------------------------------------------------------------------------- leave-one-out


def _rows(table) -> list[tuple[int, int, list[int], int]]:
    d = table.to_pydict()
    return list(zip(d["row_id"], d["user_idx"], d["history"], d["target"]))


def test_leave_one_out_exact_rows():
    splits = leave_one_out([np.array([1, 2, 3, 4, 5, 6], dtype=np.int32), np.array([7, 8, 9], dtype=np.int32)],
                           max_len=3)
    assert _rows(splits.train) == [(0, 0, [1], 2), (1, 0, [1, 2], 3), (2, 0, [1, 2, 3], 4)]
    assert _rows(splits.valid) == [(0, 0, [2, 3, 4], 5), (1, 1, [7], 8)]
    assert _rows(splits.test) == [(0, 0, [3, 4, 5], 6), (1, 1, [7, 8], 9)]
    for split in (splits.train, splits.valid, splits.test):
        assert split.schema.equals(SPLIT_SCHEMA)


def test_leave_one_out_truncates_to_most_recent():
    splits = leave_one_out([np.array([1, 2, 3, 4, 5, 6], dtype=np.int32)], max_len=2)
    assert _rows(splits.train) == [(0, 0, [1], 2), (1, 0, [1, 2], 3), (2, 0, [2, 3], 4)]
    assert _rows(splits.valid) == [(0, 0, [3, 4], 5)]
    assert _rows(splits.test) == [(0, 0, [4, 5], 6)]


def test_leave_one_out_only_short_users_has_empty_train():
    splits = leave_one_out([np.array([1, 2, 3], dtype=np.int32)], max_len=5)
    assert splits.train.num_rows == 0
    assert splits.train.schema.equals(SPLIT_SCHEMA)
    assert _rows(splits.test) == [(0, 0, [1, 2], 3)]


def test_leave_one_out_rejects_short_sequences():
    with pytest.raises(DataError, match="user_idx 1 has 2 interactions"):
        leave_one_out([np.array([1, 2, 3]), np.array([4, 5])], max_len=5)


@pytest.mark.parametrize("max_len", [1, 3, 50])
def test_leave_one_out_invariants_on_random_sequences(max_len):
    rng = np.random.default_rng(max_len)
    sequences = [rng.permutation(np.arange(1, 41, dtype=np.int32))[: rng.integers(3, 25)] for _ in range(30)]
    splits = leave_one_out(sequences, max_len)
    train, valid, test = _rows(splits.train), _rows(splits.valid), _rows(splits.test)
    assert len(train) == sum(len(s) - 3 for s in sequences)
    assert [r[0] for r in train] == list(range(len(train)))
    assert len(valid) == len(test) == len(sequences)
    by_user: dict[int, list] = {}
    for row in train:
        by_user.setdefault(row[1], []).append(row)
    for user, seq in enumerate(sequences):
        seq = seq.tolist()
        assert valid[user][1:] == (user, seq[max(0, len(seq) - 2 - max_len):-2], seq[-2])
        assert test[user][1:] == (user, seq[max(0, len(seq) - 1 - max_len):-1], seq[-1])
        rows = by_user.get(user, [])
        # every prefix of the training part seq[:-2], in order
        assert [(h, t) for _, _, h, t in rows] == [(seq[max(0, end - max_len):end], seq[end])
                                                   for end in range(1, len(seq) - 2)]
        held_out = {seq[-2], seq[-1]}
        for _, _, history, target in rows:
            assert target not in held_out
            assert not held_out & set(history)
            assert 1 <= len(history) <= max_len


# ----------------------------------------------------------------------------------------- end to end


INTERACTIONS = (
    "user_id,item_id,timestamp\n"
    "10,100,1\n10,200,2\n10,300,3\n10,100,4\n"  # user 10: the repeat of 100 is dropped -> 100 200 300
    "2,300,5\n2,200,5\n2,400,7\n2,500,8\n"  # user 2: 300 and 200 share a timestamp; file order wins
    "3,100,1\n3,200,2\n"  # user 3: 2 interactions < 3 -> removed by the k-core filter
)
ITEMS = "item_id,text\n100,Item one hundred\n200,Two hundred\n300,  Three  \n500,Five\n600,Never seen\n"


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.delenv("RDISTILL_ARTIFACT_ROOT", raising=False)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "interactions.csv").write_text(INTERACTIONS)
    (raw / "items.csv").write_text(ITEMS)
    return tmp_path


def _config(tmp: Path, *extra: str):
    return load_config(None, [f"artifact_root={tmp / 'artifacts'}", "data.format=generic", f"data.root={tmp}",
                              "data.path=raw", "data.min_user_interactions=3", "data.min_item_interactions=1",
                              *extra])


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name) if folder.exists() else []


def test_prepare_dataset_end_to_end(workspace):
    dataset = prepare_dataset(_config(workspace))
    assert dataset == workspace / "artifacts" / "dataset"
    assert sorted(p.name for p in dataset.iterdir()) == sorted([f"{t}.parquet" for t in TABLES] + [MANIFEST_NAME])
    tables = {}
    for name in TABLES:
        table = pq.read_table(dataset / f"{name}.parquet")
        assert table.schema.equals(TABLE_SCHEMAS[name], check_metadata=False), name
        tables[name] = table.to_pydict()

    assert tables["items"] == {
        "item_idx": [1, 2, 3, 4, 5],
        "item_id": ["100", "200", "300", "400", "500"],
        "text": ["Item one hundred", "Two hundred", "Three", "", "Five"],
    }
    # numeric ids in numeric order: "2" before "10"
    assert tables["users"] == {"user_idx": [0, 1], "user_id": ["2", "10"]}
    # user 0 ("2"): 3 2 4 5 ; user 1 ("10"): 1 2 3
    assert tables["train"] == {"row_id": [0], "user_idx": [0], "history": [[3]], "target": [2]}
    assert tables["valid"] == {"row_id": [0, 1], "user_idx": [0, 1], "history": [[3, 2], [1]], "target": [4, 2]}
    assert tables["test"] == {"row_id": [0, 1], "user_idx": [0, 1], "history": [[3, 2, 4], [1, 2]],
                              "target": [5, 3]}

    manifest = json.loads((dataset / MANIFEST_NAME).read_text())
    assert manifest["stage"] == "prepare"
    assert manifest["config"]["seed"] == 42
    assert manifest["config"]["data"]["format"] == "generic"
    assert manifest["config"]["data"]["min_user_interactions"] == 3
    assert manifest["config"]["data"]["max_len"] == 50
    raw = workspace / "raw"
    assert manifest["inputs"] == {
        "interactions": {"path": str(raw / "interactions.csv"),
                         "sha256": hashlib.sha256(INTERACTIONS.encode()).hexdigest()},
        "items": {"path": str(raw / "items.csv"), "sha256": hashlib.sha256(ITEMS.encode()).hexdigest()},
    }
    assert manifest["counts"] == {
        "raw_interactions": 10, "deduplicated_interactions": 9, "k_core_iterations": 2, "users": 2, "items": 5,
        "interactions": 7, "items_without_text": 1, "train_rows": 1, "valid_rows": 2, "test_rows": 2,
    }
    assert {"python", "rdistill", "torch", "pyarrow", "numpy", "pandas", "pydantic"} <= set(manifest["versions"])
    assert manifest["wall_seconds"] >= 0
    assert _leftovers(workspace / "artifacts") == []


def test_prepare_dataset_truncates_histories(workspace):
    dataset = prepare_dataset(_config(workspace, "data.max_len=2"))
    assert pq.read_table(dataset / "test.parquet").column("history").to_pylist() == [[2, 4], [1, 2]]


def test_prepare_dataset_is_deterministic_and_replaces(workspace):
    first = prepare_dataset(_config(workspace))
    before = {name: pq.read_table(first / f"{name}.parquet") for name in TABLES}
    second = prepare_dataset(_config(workspace))
    assert second == first
    for name in TABLES:
        assert pq.read_table(second / f"{name}.parquet").equals(before[name])
    assert _leftovers(workspace / "artifacts") == []


def test_prepare_failure_leaves_nothing(workspace):
    (workspace / "raw" / "interactions.csv").write_text("user_id,item_id,timestamp\n1,2,3\n1,3,yesterday\n")
    with pytest.raises(DataError, match="line 3"):
        prepare_dataset(_config(workspace))
    artifacts = workspace / "artifacts"
    assert not (artifacts / "dataset").exists()
    assert _leftovers(artifacts) == []


def test_prepare_failure_keeps_previous_dataset(workspace):
    dataset = prepare_dataset(_config(workspace))
    snapshot = {p.name: p.read_bytes() for p in dataset.iterdir()}
    (workspace / "raw" / "interactions.csv").write_text("user_id,item_id,timestamp\n1,2,3\n1,3,yesterday\n")
    with pytest.raises(DataError, match="'timestamp'"):
        prepare_dataset(_config(workspace))
    assert {p.name: p.read_bytes() for p in dataset.iterdir()} == snapshot
    assert _leftovers(workspace / "artifacts") == []


def test_prepare_k_core_removing_everything_is_an_error(workspace):
    dataset = prepare_dataset(_config(workspace))
    snapshot = {p.name: p.read_bytes() for p in dataset.iterdir()}
    with pytest.raises(DataError, match="no interactions left after the k-core filter"):
        prepare_dataset(_config(workspace, "data.min_user_interactions=10"))
    assert {p.name: p.read_bytes() for p in dataset.iterdir()} == snapshot
    assert _leftovers(workspace / "artifacts") == []


def test_prepare_keeps_repeats_when_asked(workspace):
    dataset = prepare_dataset(_config(workspace, "data.drop_duplicates=false"))
    manifest = json.loads((dataset / MANIFEST_NAME).read_text())
    assert manifest["counts"]["deduplicated_interactions"] == 10
    # user "10" keeps its repeated 100 as its test target
    test = pq.read_table(dataset / "test.parquet").to_pydict()
    assert test["history"][1] == [1, 2, 3] and test["target"][1] == 1


def test_prepare_warns_when_most_items_have_no_text(workspace, caplog):
    (workspace / "raw" / "items.csv").write_text("item_id,text\n100,Item one hundred\n200,\n")
    with caplog.at_level("WARNING", logger="rdistill.data.prepare"):
        prepare_dataset(_config(workspace))
    assert any("4 of the 5 items kept have no text" in r.getMessage() and "items.csv" in r.getMessage()
               for r in caplog.records), caplog.text
    (workspace / "raw" / "items.csv").unlink()  # an ID-only dataset: nothing to warn about
    caplog.clear()
    with caplog.at_level("WARNING", logger="rdistill.data.prepare"):
        prepare_dataset(_config(workspace))
    assert "have no text" not in caplog.text


def test_prepare_refuses_an_items_file_of_another_dataset(workspace):
    (workspace / "raw" / "items.csv").write_text("item_id,text\nB0001,a\nB0002,b\n")
    with pytest.raises(DataError) as caught:
        prepare_dataset(_config(workspace))
    assert "items.csv" in str(caught.value) and "interactions.csv" in str(caught.value)
    assert not (workspace / "artifacts" / "dataset").exists()
