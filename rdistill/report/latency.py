"""--measure-latency: the exported student and the teacher timed on one history (rdistill.tradeoff.time_saved_model,
the measure benchmarks/latency.py uses too), kept in report/latency.json and reused while both models are the same."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rdistill import layout
from rdistill.artifacts import read_json
from rdistill.report.collect import HOW_TO_RUN, LATENCY_SPLIT, Collected, recorded_latency

LATENCY_HOW_TO = ("Latency not measured: run `rdistill report --measure-latency` to time one user's scoring of the "
                  "whole catalogue on CPU (one torch thread) by the teacher and the exported student.")
NO_EXPORT = (f"`--measure-latency`: there is no exported student in `{layout.SERVING_MODEL}/` to time "
             f"(run {HOW_TO_RUN['export']} first).")


def latency_key(found: Collected) -> dict[str, Any]:
    """What a recorded measurement was taken on: the exported weights and the teacher checkpoint."""
    return {"student_version": (found.serving_manifest or {}).get("version"),
            "teacher_started_at": (found.teacher_manifest or {}).get("started_at")}


def measure_latency(found: Collected, student_repeats: int = 50, teacher_repeats: int = 10) -> dict[str, Any]:
    """Median milliseconds for one validation history scored against the whole catalogue, CPU, one torch thread:
    the exported student as the endpoint scores it, the teacher (when its weights are there) with torch."""
    from rdistill.tradeoff import time_saved_model

    student = time_saved_model(found.path(layout.SERVING_MODEL), split_path=found.path(layout.table(LATENCY_SPLIT)),
                               runtimes=("served",), repeats=student_repeats, budget_s=5.0)
    result: dict[str, Any] = {
        "key": latency_key(found), "device": "cpu", "torch_threads": 1, "history_length": len(student.history),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "student": {"name": student.saved.name, "version": student.saved.version,
                    "runtime": student.runtimes["served"], "latency_ms": student.ms["served"]},
    }
    teacher_dir = found.path(layout.TEACHER_CHECKPOINT)
    if (teacher_dir / layout.WEIGHTS).is_file():
        teacher = time_saved_model(teacher_dir, history=student.history, runtimes=("torch",),
                                   repeats=teacher_repeats, budget_s=20.0)
        result["teacher"] = {"latency_ms": teacher.ms["torch"]}
    return result


def _measured(found: Collected) -> tuple[dict[str, Any] | None, str]:
    if found.serving_manifest is None:
        return None, NO_EXPORT
    try:
        measured = measure_latency(found)
    except Exception as err:  # noqa: BLE001 - a report states what it could not measure and goes on
        return None, f"Latency could not be measured: {type(err).__name__}: {err}"
    return measured, (f"Measured by this report at {measured['measured_at']}: median of a short timed loop "
                      f"scoring one validation user's history ({measured['history_length']} items) against "
                      "the whole catalogue on CPU with one thread; the student as the endpoint scores it "
                      f"({measured['student']['runtime']}), the teacher with torch.")


def _recorded(found: Collected, out_dir: Path) -> tuple[dict[str, Any] | None, str]:
    in_root = out_dir.resolve() == found.layout.report_dir.resolve()  # else --out: not an artifact
    path = found.path(recorded_latency()) if in_root else out_dir / layout.LATENCY_FILE
    try:
        recorded = read_json(path) if path.is_file() else None
    except (OSError, ValueError):
        recorded = None
    if isinstance(recorded, dict) and recorded.get("key") == latency_key(found):
        return recorded, (f"Recorded by `rdistill report --measure-latency` at {recorded.get('measured_at')} "
                          "on the same exported student and teacher (CPU, one torch thread).")
    return None, LATENCY_HOW_TO


def latency(found: Collected, out_dir: Path, measure: bool) -> tuple[dict[str, Any] | None, str]:
    """(measurement or None, a sentence saying where it comes from or how to get it)."""
    return _measured(found) if measure else _recorded(found, Path(out_dir))
