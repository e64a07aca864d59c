"""The numbers the comparisons use: one row per model (teacher, winner or exported student, student runs, tuning
trials), with validation (and, where evaluated, test) metrics, size and cost. Test numbers never choose anything."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from rdistill.report.collect import Collected


@dataclass
class ModelRow:
    """One model in the comparisons: validation (and test, where evaluated) metrics, size and cost."""

    label: str
    kind: str  # teacher | winner | exported | student | trial
    valid: dict[str, float]
    test: dict[str, float] | None = None
    parameters: int | None = None
    seconds_per_epoch: float | None = None


def number(value: Any) -> float | None:
    """A finite int or float as float; None for anything else (missing, bool, NaN, text)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def teacher_parameters(found: Collected) -> int | None:
    recorded = (found.teacher or {}).get("num_parameters")
    if recorded is None and found.teacher_manifest:
        recorded = found.teacher_manifest.get("counts", {}).get("num_parameters")
    return int(recorded) if number(recorded) is not None else None


def winner_trial(found: Collected) -> dict[str, Any] | None:
    if not found.tune:
        return None
    winner_id = (found.tune.get("winner") or {}).get("trial_id")
    return next((trial for trial in found.tune.get("trials", []) if trial.get("trial_id") == winner_id), None)


def trial_seconds_per_epoch(trial: dict[str, Any]) -> float | None:
    seconds, epochs = number(trial.get("seconds")), trial.get("epochs") or 0
    return seconds / epochs if seconds is not None and epochs else None


def serving_is_winner(found: Collected) -> bool:
    if not (found.serving_manifest and found.tune):
        return False
    lineage = found.serving_manifest.get("lineage") or {}
    return lineage.get("trial_id") == (found.tune.get("winner") or {}).get("trial_id") and "campaign" in lineage


def _teacher_row(teacher: dict[str, Any], found: Collected) -> ModelRow:
    epoch_seconds = [s for s in (number(r.get("epoch_seconds")) for r in teacher.get("history", [])) if s is not None]
    return ModelRow("teacher", "teacher", teacher.get("valid") or {}, teacher.get("test"), teacher_parameters(found),
                    statistics.mean(epoch_seconds) if epoch_seconds else None)


def _winner_row(found: Collected) -> ModelRow | None:
    """The exported student (the winner when its lineage says so), else the tuning summary's winner."""
    trial = winner_trial(found)
    winner_cost = trial_seconds_per_epoch(trial) if trial else None
    if found.serving_manifest is not None:
        metrics, is_winner = found.serving_metrics or {}, serving_is_winner(found)
        name = found.serving_manifest.get("name", "student")
        return ModelRow(f"winner ({name})" if is_winner else f"exported {name}", "winner" if is_winner else "exported",
                        metrics.get("valid") or {}, metrics.get("test"), found.serving_parameters,
                        winner_cost if is_winner else None)
    if found.tune and found.tune.get("winner"):
        winner = found.tune["winner"]
        return ModelRow(f"winner (trial {winner.get('trial_id')})", "winner", winner.get("valid") or {},
                        winner.get("test"), None, winner_cost)
    return None


def model_rows(found: Collected) -> list[ModelRow]:
    """Teacher, the winner (the exported model, or the tuning summary's winner), then each student run."""
    rows = [_teacher_row(found.teacher, found)] if found.teacher else []
    if (winner := _winner_row(found)) is not None:
        rows.append(winner)
    for run, metrics in found.students.items():
        rows.append(ModelRow(run, "student", metrics.get("valid") or {}, metrics.get("test"),
                             metrics.get("num_parameters"), number(metrics.get("seconds_per_epoch"))))
    return rows


def _trial_points(found: Collected) -> list[ModelRow]:
    tune = found.tune or {}
    winner_id = (tune.get("winner") or {}).get("trial_id")
    # a trial's size is the exported winner's unless the search changed the student itself
    same_student = not any(key.startswith("student.")
                           for trial in tune.get("trials", []) for key in (trial.get("params") or {}))
    size = found.serving_parameters if same_student and serving_is_winner(found) else None
    points = []
    for trial in tune.get("trials", []):
        best = number(trial.get("best"))
        if best is None:
            continue
        is_winner = trial.get("trial_id") == winner_id
        points.append(ModelRow(f"{'winner' if is_winner else 'trial'} {trial.get('trial_id')}",
                               "winner" if is_winner else "trial", {"ndcg_at_10": best}, None, size,
                               trial_seconds_per_epoch(trial)))
    return points


def tradeoff_points(found: Collected) -> list[ModelRow]:
    """Every model with a validation NDCG@10 and a cost: teacher, tuning trials, student runs (no test numbers)."""
    rows = model_rows(found)
    points = [row for row in rows if row.kind in ("teacher", "student")]
    if found.tune and found.tune.get("metric") == "valid_ndcg_at_10":
        points += _trial_points(found)
    else:
        points += [row for row in rows if row.kind in ("winner", "exported")]
    return [point for point in points if number(point.valid.get("ndcg_at_10")) is not None]
