"""The report's sections, each a function that adds its blocks to the Document from what collect found. A section
is keyed by the stage that writes what it shows (collect.SECTIONS); its "not run yet" line names that stage's
command."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from rdistill import layout
from rdistill.report.collect import HOW_TO_RUN, Collected, tune_summary
from rdistill.report.compare import model_rows, number, teacher_parameters, tradeoff_points
from rdistill.report.plots import (pareto_panels, plot_model_metrics, plot_pareto, plot_size_latency,
                                   plot_stage_timings, plot_tuning_history)
from rdistill.report.render import Document, cell
from rdistill.tradeoff import pareto_front


def _stage_names(pipeline_only: bool) -> list[str]:
    """The registered stages in pipeline order (those `rdistill run` records in pipeline.json, or all)."""
    from rdistill.stages.registry import pipeline_stages, stages

    return [stage.name for stage in (pipeline_stages() if pipeline_only else stages())]


def not_run(doc: Document, section: str, expected: str, found: Collected) -> None:
    why = found.unreadable.get(section)
    if why:
        doc.para(f"Not readable: {why}.")
    else:
        doc.para(f"Not run yet: no `{expected}` (run {HOW_TO_RUN[section]}).")


def _seconds(value: Any) -> str:
    seconds = number(value)
    return f"{seconds:.1f}" if seconds is not None else "–"


def _utc(timestamp: Any) -> str | None:
    seconds = number(timestamp)
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(seconds)) if seconds is not None else None


def _params_text(params: dict[str, Any] | None) -> str:
    return ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in sorted((params or {}).items()))


def _pipeline_section(doc: Document, found: Collected, out: Path) -> None:
    doc.heading("Pipeline stages")
    if found.pipeline is None:
        not_run(doc, "run", layout.PIPELINE_STATE, found)
        return
    known = _stage_names(pipeline_only=False)
    names = [name for name in known if name in found.pipeline] + sorted(set(found.pipeline) - set(known))
    rows, timed = [], []
    for name in names:
        record = found.pipeline[name] if isinstance(found.pipeline[name], dict) else {}
        status, seconds = str(record.get("status", "?")), number(record.get("seconds"))
        rows.append([name, status, _seconds(seconds), _utc(record.get("finished_at") or record.get("started_at")),
                     (record.get("error") or "")[:200]])
        if seconds is not None:
            timed.append((name, status, seconds))
    doc.table(["stage", "status", "seconds", "finished (or started) at", "error"], rows)
    total = sum(seconds for _, _, seconds in timed)
    doc.para(f"Total recorded stage time: {total:.1f} s. Seconds are those of each stage's last run; a stage "
             "skipped as up to date keeps its earlier record.")
    if plot := plot_stage_timings(timed, out / "stage_timings.png"):
        doc.figure(plot, f"Stage timings from {layout.PIPELINE_STATE}")
    missing = [name for name in _stage_names(pipeline_only=True) if name not in found.pipeline]
    if missing:
        doc.para(f"Stages not run yet: {', '.join(missing)}.")


def _dataset_section(doc: Document, found: Collected) -> None:
    doc.heading("Dataset")
    if found.dataset is None:
        not_run(doc, "prepare", layout.manifest_of(layout.DATASET), found)
        return
    counts = found.dataset.get("counts") or {}
    doc.table(["count", "value"], [[key, value] for key, value in sorted(counts.items())])
    data = (found.dataset.get("config") or {}).get("data") or {}
    doc.para(f"Format `{data.get('format', '?')}`, max_len {data.get('max_len', '?')}; prepared at "
             f"{found.dataset.get('started_at', '?')} in {_seconds(found.dataset.get('wall_seconds'))} s.")


def _metrics_rows(blocks: list[tuple[str, dict[str, Any] | None]]) -> list[list[Any]]:
    return [[split, *(block.get(key) for key in ("ndcg_at_10", "hr_at_10", "mrr_at_10", "ndcg_at_20"))]
            for split, block in blocks if block]


METRIC_HEADERS = ["split", "NDCG@10", "HR@10", "MRR@10", "NDCG@20"]


def _teacher_section(doc: Document, found: Collected) -> None:
    doc.heading("Teacher")
    if found.teacher is None:
        not_run(doc, "teacher-train", layout.metrics_of(layout.TEACHER_CHECKPOINT), found)
        return
    doc.table(METRIC_HEADERS, _metrics_rows([("validation", found.teacher.get("valid")),
                                             ("test", found.teacher.get("test"))]))
    parameters = teacher_parameters(found)
    model = ((found.teacher_manifest or {}).get("config") or {}).get("teacher", {})
    facts = [f"best epoch {found.teacher.get('best_epoch', '?')}", f"{found.teacher.get('global_steps', '?')} steps"]
    if parameters is not None:
        facts.append(f"{parameters:,} parameters")
    if model:
        facts.append(f"backbone `{model.get('model', '?')}`, mode `{model.get('mode', '?')}`")
    if found.teacher_manifest:
        facts.append(f"trained in {_seconds(found.teacher_manifest.get('wall_seconds'))} s")
    doc.para("; ".join(facts) + ".")


def _signals_section(doc: Document, found: Collected) -> None:
    doc.heading("Teacher signals")
    if found.signals is None:
        not_run(doc, "teacher-infer", layout.manifest_of(layout.SIGNALS), found)
        return
    counts = found.signals.get("counts") or {}
    rows = counts.get("rows") if isinstance(counts.get("rows"), dict) else {}
    doc.table(["split", "rows"], [[split, value] for split, value in rows.items()])
    doc.para(f"Top-{counts.get('top_k', '?')} of {cell(counts.get('items'))} items per row, embedding width "
             f"{counts.get('embedding_dim', '?')}, hidden layers {found.signals.get('hidden_layers') or 'none'}; "
             f"{_seconds(found.signals.get('rows_per_second'))} rows/s, "
             f"{_seconds(found.signals.get('wall_seconds'))} s in all.")


def _tuning_section(doc: Document, found: Collected, out: Path) -> None:
    doc.heading("Tuning")
    if found.tune is None:
        if found.tune_unfinished:
            doc.para(f"Not finished yet: `{layout.tune_campaign(found.tune_name)}/` has no "
                     f"`{layout.TUNE_SUMMARY_FILE}` (the campaign is running or was interrupted; "
                     f"{HOW_TO_RUN['tune']} resumes it).")
        else:
            not_run(doc, "tune", tune_summary(found.tune_name or "<tune.name>"), found)
        return
    tune, winner = found.tune, found.tune.get("winner") or {}
    metric = tune.get("metric", "valid_ndcg_at_10")
    selected = metric.removeprefix("valid_")
    trials = tune.get("trials", [])
    doc.para(f"Campaign `{found.tune_name}`: {len(trials)} trials, search `{tune.get('search', '?')}`, scheduler "
             f"`{tune.get('scheduler', '?')}`, seed {tune.get('seed', '?')}, {_seconds(tune.get('seconds'))} s"
             f"{' (resumed)' if tune.get('restored') else ''}. Winner: trial `{winner.get('trial_id')}` at epoch "
             f"{winner.get('epoch')}, {metric} {cell(number((winner.get('valid') or {}).get(selected)))} "
             f"(chosen on validation; test {cell(number((winner.get('test') or {}).get(selected)))}, "
             "evaluated once after the search).")
    if plot := plot_tuning_history(tune, out / "tuning_history.png"):
        doc.figure(plot, f"Tuning history: {metric} per epoch per trial, winner highlighted")
    rows = []
    for trial in sorted(trials, key=lambda t: -(number(t.get("best")) or -math.inf)):
        rows.append([f"{trial.get('trial_id')}{' (winner)' if trial.get('trial_id') == winner.get('trial_id') else ''}",
                     number(trial.get("best")), trial.get("epochs"), _seconds(trial.get("seconds")),
                     _params_text(trial.get("params")), (trial.get("error") or "")[:200]])
    doc.table(["trial", f"best {metric}", "epochs", "seconds", "settings", "error"], rows)


def _serving_section(doc: Document, found: Collected) -> None:
    doc.heading(f"Exported model ({layout.SERVING_MODEL}/)")
    if found.serving_manifest is None:
        not_run(doc, "export", layout.manifest_of(layout.SERVING_MODEL), found)
        return
    manifest, metrics = found.serving_manifest, found.serving_metrics or {}
    doc.table(METRIC_HEADERS, _metrics_rows([("validation", metrics.get("valid")), ("test", metrics.get("test"))]))
    facts = [f"`{manifest.get('name', '?')}` version `{manifest.get('version', '?')}`",
             f"exported at {manifest.get('trained_at', '?')}"]
    if found.serving_parameters is not None:
        facts.append(f"{found.serving_parameters:,} parameters")
    if metrics.get("params"):
        facts.append(f"settings {_params_text(metrics['params'])}")
    doc.para("; ".join(facts) + ".")


def _students_section(doc: Document, found: Collected) -> None:
    doc.heading(f"Student runs ({layout.STUDENTS}/)")
    if not found.students:
        not_run(doc, "train-student", layout.metrics_of(layout.student_run("*")), found)
        return
    rows = [[run, metrics.get("student"), number((metrics.get("valid") or {}).get("ndcg_at_10")),
             number((metrics.get("test") or {}).get("ndcg_at_10")), metrics.get("best_epoch"),
             metrics.get("epochs_run"), metrics.get("num_parameters"), number(metrics.get("seconds_per_epoch"))]
            for run, metrics in found.students.items()]
    doc.table(["run", "student", "valid NDCG@10", "test NDCG@10", "best epoch", "epochs", "parameters",
               "s/epoch"], rows)


def _comparison_section(doc: Document, found: Collected, out: Path) -> None:
    doc.heading("Per-model metrics")
    rows = model_rows(found)
    if not rows:
        doc.para("Not run yet: no teacher, exported model, tuning winner or student run to compare.")
        return
    doc.table(["model", "validation NDCG@10", "validation HR@10", "test NDCG@10", "test HR@10", "parameters"],
              [[row.label, number(row.valid.get("ndcg_at_10")), number(row.valid.get("hr_at_10")),
                number((row.test or {}).get("ndcg_at_10")), number((row.test or {}).get("hr_at_10")),
                row.parameters] for row in rows])
    if plot := plot_model_metrics(rows, out / "model_metrics.png"):
        doc.figure(plot, "Validation and test NDCG@10 / HR@10 per model (test only where evaluated)")


def _pareto_section(doc: Document, found: Collected, out: Path) -> None:
    doc.heading("Trade-offs (validation only)")
    points = tradeoff_points(found)
    panels = pareto_panels(points)
    if not panels:
        doc.para(f"Pareto plot skipped: {len(points)} model(s) with a validation NDCG@10 and a recorded cost "
                 "(seconds per epoch or parameters), so there is nothing to trade off yet.")
        return
    plot = plot_pareto(points, out / "pareto.png")
    doc.figure(plot, "Validation NDCG@10 against seconds per epoch and parameters; dashed: the Pareto front")
    front_names = []
    for _, rows, cost in panels:
        front = pareto_front([(float(cost(row)), row.valid["ndcg_at_10"]) for row in rows])
        front_names.append(", ".join(f"`{rows[i].label}`" for i in front))
    doc.para("On the front (no model is both cheaper and better on validation): "
             + "; ".join(f"by {title}: {names}" for (title, _, _), names in zip(panels, front_names)) + ". "
             "Seconds per epoch compare wall time of differently parallelised runs (the teacher trains on several "
             "workers), so read them as cost, not speed.")


def _sizes(found: Collected, student_label: str) -> list[tuple[str, int]]:
    teacher_size = teacher_parameters(found)
    sizes = [("teacher", teacher_size)] if teacher_size is not None else []
    if found.serving_parameters is not None:
        sizes.append((f"student ({student_label})", found.serving_parameters))
    return sizes


def _latencies(latency: dict[str, Any] | None, student_label: str) -> list[tuple[str, float]]:
    latencies: list[tuple[str, float]] = []
    for key, label in (("teacher", "teacher"), ("student", f"student ({student_label})")):
        if number(((latency or {}).get(key) or {}).get("latency_ms")) is not None:
            latencies.append((label, latency[key]["latency_ms"]))
    return latencies


def _size_latency_section(doc: Document, found: Collected, out: Path,
                          latency: dict[str, Any] | None, latency_note: str) -> None:
    doc.heading("Teacher vs student: size and latency")
    student_label = (found.serving_manifest or {}).get("name", "student")
    sizes, latencies = _sizes(found, student_label), _latencies(latency, student_label)
    if not sizes:
        doc.para(f"Not run yet: neither a teacher (`{layout.TEACHER_CHECKPOINT}/`) nor an exported student "
                 f"(`{layout.SERVING_MODEL}/`) to compare.")
        return
    doc.table(["model", "parameters", "latency, ms per user"],
              [[label, value, dict(latencies).get(label)] for label, value in sizes])
    teacher_size = teacher_parameters(found)
    if teacher_size and found.serving_parameters:
        doc.para(f"The student has {found.serving_parameters / teacher_size:.2%} of the teacher's parameters"
                 + (f" and takes {latencies[1][1] / latencies[0][1]:.2%} of its time per user"
                    if len(latencies) == 2 and latencies[0][1] > 0 else "") + ".")
    elif found.serving_parameters is None:
        doc.para(f"No exported student in `{layout.SERVING_MODEL}/` yet (run {HOW_TO_RUN['export']}).")
    else:
        doc.para(f"No teacher in `{layout.TEACHER_CHECKPOINT}/` yet (run {HOW_TO_RUN['teacher-train']}).")
    doc.para(latency_note)
    if plot := plot_size_latency(sizes, latencies, out / "size_latency.png"):
        doc.figure(plot, "Parameters" + (" and CPU latency" if latencies else "") + ": teacher vs exported student")


def add_sections(doc: Document, found: Collected, out: Path, latency: dict[str, Any] | None,
                 latency_note: str) -> None:
    """Every section in page order; plots are written into `out`."""
    _pipeline_section(doc, found, out)
    _dataset_section(doc, found)
    _teacher_section(doc, found)
    _signals_section(doc, found)
    _tuning_section(doc, found, out)
    _serving_section(doc, found)
    _students_section(doc, found)
    _comparison_section(doc, found, out)
    _pareto_section(doc, found, out)
    _size_latency_section(doc, found, out, latency, latency_note)
