"""benchmarks/distill_table.py: pooling benchmark runs of one dataset across entries (teacher runs)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from distill import run_key  # noqa: E402
from distill_table import markdown, pooled_runs, table_rows, teacher_row  # noqa: E402

WEIGHTS = {"distill.kd_weight": 0.5, "distill.embed_weight": 0.8}


def _run(ndcg: float, hr: float, valid: float = 0.05) -> dict:
    return {"test": {"ndcg_at_10": ndcg, "hr_at_10": hr}, "valid": {"ndcg_at_10": valid}}


def _results() -> dict:
    first = {run_key("plain-sasrec", 0, WEIGHTS): _run(0.040, 0.08),
             run_key("plain-sasrec", 1, WEIGHTS): _run(0.060, 0.10),
             run_key("kd-sasrec", 0, WEIGHTS): _run(0.050, 0.09),
             run_key("kd-sasrec", 1, {"distill.kd_weight": 9.0}): _run(0.9, 0.9),  # cached under earlier weights
             run_key("distill-sasrec", 0, WEIGHTS): _run(0.055, 0.095, valid=0.07)}
    second = {run_key("kd-sasrec", 0, WEIGHTS): _run(0.7, 0.7),  # the first entry holds seed 0: never read
              run_key("kd-sasrec", 1, WEIGHTS): _run(0.070, 0.11),
              run_key("distill-sasrec", 1, WEIGHTS): _run(0.065, 0.105, valid=0.08)}
    return {"beauty/a": {"weights": WEIGHTS, "runs": first}, "beauty/b": {"weights": dict(WEIGHTS), "runs": second},
            "beauty/other-weights": {"weights": {"distill.kd_weight": 1.0}, "runs": {}},
            "beauty/bce": {"weights": WEIGHTS, "overrides": ["train.loss=bce"], "runs": {}},
            "scientific/a": {"weights": WEIGHTS, "runs": {}}}


def test_first_entry_wins_a_seed_and_later_entries_fill_the_rest():
    pooled = pooled_runs(_results(), ["beauty/a", "beauty/b"])
    assert {seed: entry for seed, (entry, _) in pooled["kd-sasrec"].items()} == {0: "beauty/a", 1: "beauty/b"}
    rows = {row["variant"]: row for row in table_rows(pooled, ["beauty/a", "beauty/b"])}
    # mean and population std of 0.050 and 0.070; plain SASRec is 0.050 on average
    assert rows["kd-sasrec"]["ndcg_at_10"] == pytest.approx((0.060, 0.010))
    assert rows["kd-sasrec"]["vs_plain_sasrec"] == pytest.approx(0.2)
    assert rows["distill-sasrec"]["vs_same_plain"] == pytest.approx(0.2)
    assert rows["distill-sasrec"]["valid"] == pytest.approx(0.075)
    assert "vs_same_plain" not in rows["kd-sasrec"]


def test_markdown_marks_rows_pooled_over_entries():
    entries = ["beauty/a", "beauty/b"]
    teacher = teacher_row({"t42": _run(0.045, 0.085, 0.06), "t43": _run(0.055, 0.095, 0.07)}, ["t42", "t43"])
    text = markdown(table_rows(pooled_runs(_results(), entries), entries, teacher), entries)
    lines = text.splitlines()
    assert "| teacher | 2 | 0.0650 | 0.0900 ± 0.0050 | 0.0500 ± 0.0050 | +0.0% |  |" in lines
    assert "| plain SASRec | 2 | 0.0500 | 0.0900 ± 0.0100 | 0.0500 ± 0.0100 | — |  |" in lines
    assert "| SASRec + KD only | 2 ᵃ | 0.0500 | 0.1000 ± 0.0100 | 0.0600 ± 0.0100 | +20.0% |  |" in lines
    assert "- SASRec + KD only: seed 0 from beauty/a; seed 1 from beauty/b" in lines


@pytest.mark.parametrize("entries, message", [
    (["beauty/a", "beauty/missing"], "no entry ['beauty/missing']"),
    (["beauty/a", "scientific/a"], "different datasets"),
    (["beauty/a", "beauty/other-weights"], "entry beauty/other-weights ran with weights"),
    (["beauty/a", "beauty/bce"], "runs of different overrides cannot be pooled"),
])
def test_entries_that_cannot_be_pooled_are_refused(entries, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        pooled_runs(_results(), entries)
