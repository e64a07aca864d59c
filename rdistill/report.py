"""`rdistill report`: one Markdown and one HTML page over whatever the artifact root holds, with PNG plots.

The report only reads what the stages wrote (manifests, metrics.json files, the tuning summary, pipeline.json);
a stage that has not run is a "not run yet" line, never an error. Plots that compare or trade off models use
validation numbers only: the test split is shown where it was evaluated, but nothing is chosen on it.

<out>/ (default <artifact_root>/report/), written as a whole under a temporary name, then renamed:
  report.md, report.html     the same content; the HTML is self-contained apart from the PNGs it names
  *.png                      tuning history, Pareto front, per-model metrics, size and latency, stage timings
  report.json                which sections were found, which files were written (what the CLI prints)
  latency.json               only after --measure-latency: kept by later reports while the models are unchanged
"""

from __future__ import annotations

import html
import json
import math
import re
import statistics
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rdistill.artifacts import MANIFEST_NAME, ArtifactLayout, atomic_dir, read_json
from rdistill.errors import ArtifactError
from rdistill.tradeoff import pareto_front, sample_history, scoring_latency_ms

if TYPE_CHECKING:
    from rdistill.config import Config
    from rdistill.storage import ArtifactRoot

REPORT_DIR = "report"
SUMMARY_FILE = "report.json"
LATENCY_FILE = "latency.json"
SECTIONS = ("pipeline", "dataset", "teacher", "signals", "tuning", "serving", "students")
HOW_TO_RUN = {
    "pipeline": "`rdistill run`",
    "dataset": "`rdistill prepare`",
    "teacher": "`rdistill teacher train`",
    "signals": "`rdistill teacher infer`",
    "tuning": "`rdistill tune`",
    "serving": "`rdistill tune` (exports its winner) or `rdistill export`",
    "students": "`rdistill train-student`",
}
LATENCY_HOW_TO = ("Latency not measured: run `rdistill report --measure-latency` to time one user's scoring of the "
                  "whole catalogue on CPU (one torch thread) by the teacher and the exported student.")


# ------------------------------------------------------------------------------------------- reading the artifacts


@dataclass
class Artifacts:
    """Everything the report shows, as read from the artifact root; None where a stage has not run."""

    root: Path
    dataset: dict[str, Any] | None = None
    teacher: dict[str, Any] | None = None  # teacher/checkpoint/metrics.json
    teacher_manifest: dict[str, Any] | None = None
    signals: dict[str, Any] | None = None
    tune_name: str | None = None
    tune: dict[str, Any] | None = None  # tune/<name>/summary.json
    tune_unfinished: bool = False  # the campaign folder exists without a summary
    serving_metrics: dict[str, Any] | None = None
    serving_manifest: dict[str, Any] | None = None
    serving_parameters: int | None = None
    students: dict[str, dict[str, Any]] = field(default_factory=dict)  # run name -> metrics.json
    pipeline: dict[str, Any] | None = None
    unreadable: dict[str, str] = field(default_factory=dict)  # section -> why its file could not be read

    def present(self, section: str) -> bool:
        return {"pipeline": self.pipeline, "dataset": self.dataset, "teacher": self.teacher,
                "signals": self.signals, "tuning": self.tune, "serving": self.serving_manifest,
                "students": self.students or None}[section] is not None


def _read(path: Path, section: str, artifacts: Artifacts) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        payload = read_json(path)
    except (OSError, ValueError) as err:
        artifacts.unreadable.setdefault(section, f"{path} could not be read ({err})")
        return None
    if not isinstance(payload, dict):
        artifacts.unreadable.setdefault(section, f"{path} does not hold a JSON object")
        return None
    return payload


def safetensors_parameters(path: Path) -> int | None:
    """Element count of a safetensors file, from its JSON header alone (no torch)."""
    try:
        with open(path, "rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_size))
        return sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None


def _campaign_name(root: Path, tune_name: str | None) -> str | None:
    if tune_name:
        return tune_name
    from rdistill.tune import SUMMARY_FILE as TUNE_SUMMARY

    summaries = sorted((root / "tune").glob(f"*/{TUNE_SUMMARY}"), key=lambda path: path.stat().st_mtime)
    if summaries:
        return summaries[-1].parent.name  # the campaign that finished last
    campaigns = sorted(path.name for path in (root / "tune").glob("*") if path.is_dir())
    return campaigns[0] if campaigns else None


def read_artifacts(root: Path, tune_name: str | None = None) -> Artifacts:
    from rdistill.pipeline import STATE_FILE
    from rdistill.tune import SUMMARY_FILE as TUNE_SUMMARY

    layout = ArtifactLayout(Path(root))
    found = Artifacts(root=layout.root)
    found.pipeline = _read(layout.root / STATE_FILE, "pipeline", found)
    found.dataset = _read(layout.dataset_dir / MANIFEST_NAME, "dataset", found)
    found.teacher = _read(layout.teacher_checkpoint_dir / "metrics.json", "teacher", found)
    found.teacher_manifest = _read(layout.teacher_checkpoint_dir / MANIFEST_NAME, "teacher", found)
    found.signals = _read(layout.signals_dir / MANIFEST_NAME, "signals", found)
    found.tune_name = _campaign_name(layout.root, tune_name)
    if found.tune_name:
        campaign = layout.root / "tune" / found.tune_name
        found.tune = _read(campaign / TUNE_SUMMARY, "tuning", found)
        found.tune_unfinished = found.tune is None and campaign.is_dir()
    serving = layout.serving_model_dir
    found.serving_manifest = _read(serving / MANIFEST_NAME, "serving", found)
    if found.serving_manifest is not None:
        found.serving_metrics = _read(serving / "metrics.json", "serving", found) or {}
        found.serving_parameters = safetensors_parameters(serving / "model.safetensors")
    if layout.students_dir.is_dir():
        for run_dir in sorted(layout.students_dir.iterdir()):
            if run_dir.name.startswith(".") or not run_dir.is_dir():  # staging folders of a run in progress
                continue
            metrics = _read(run_dir / "metrics.json", "students", found)
            if metrics is not None:
                found.students[run_dir.name] = metrics
    return found


# ----------------------------------------------------------------------------------------- numbers the plots use


@dataclass
class ModelRow:
    """One model in the comparisons: validation (and test, where evaluated) metrics, size and cost."""

    label: str
    kind: str  # teacher | winner | exported | student | trial
    valid: dict[str, float]
    test: dict[str, float] | None = None
    parameters: int | None = None
    seconds_per_epoch: float | None = None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def _teacher_parameters(found: Artifacts) -> int | None:
    recorded = (found.teacher or {}).get("num_parameters")
    if recorded is None and found.teacher_manifest:
        recorded = found.teacher_manifest.get("counts", {}).get("num_parameters")
    return int(recorded) if _number(recorded) is not None else None


def _winner_trial(found: Artifacts) -> dict[str, Any] | None:
    if not found.tune:
        return None
    winner_id = (found.tune.get("winner") or {}).get("trial_id")
    return next((trial for trial in found.tune.get("trials", []) if trial.get("trial_id") == winner_id), None)


def _trial_seconds_per_epoch(trial: dict[str, Any]) -> float | None:
    seconds, epochs = _number(trial.get("seconds")), trial.get("epochs") or 0
    return seconds / epochs if seconds is not None and epochs else None


def _serving_is_winner(found: Artifacts) -> bool:
    if not (found.serving_manifest and found.tune):
        return False
    lineage = found.serving_manifest.get("lineage") or {}
    return lineage.get("trial_id") == (found.tune.get("winner") or {}).get("trial_id") and "campaign" in lineage


def model_rows(found: Artifacts) -> list[ModelRow]:
    """Teacher, the winner (the exported model, or the tuning summary's winner), then each student run."""
    rows = []
    if found.teacher:
        epoch_seconds = [s for s in (_number(r.get("epoch_seconds")) for r in found.teacher.get("history", []))
                         if s is not None]
        rows.append(ModelRow("teacher", "teacher", found.teacher.get("valid") or {}, found.teacher.get("test"),
                             _teacher_parameters(found),
                             statistics.mean(epoch_seconds) if epoch_seconds else None))
    winner_trial = _winner_trial(found)
    winner_cost = _trial_seconds_per_epoch(winner_trial) if winner_trial else None
    if found.serving_manifest is not None:
        metrics = found.serving_metrics or {}
        is_winner = _serving_is_winner(found)
        name = found.serving_manifest.get("name", "student")
        rows.append(ModelRow(f"winner ({name})" if is_winner else f"exported {name}",
                             "winner" if is_winner else "exported", metrics.get("valid") or {}, metrics.get("test"),
                             found.serving_parameters, winner_cost if is_winner else None))
    elif found.tune and found.tune.get("winner"):
        winner = found.tune["winner"]
        rows.append(ModelRow(f"winner (trial {winner.get('trial_id')})", "winner", winner.get("valid") or {},
                             winner.get("test"), None, winner_cost))
    for run, metrics in found.students.items():
        rows.append(ModelRow(run, "student", metrics.get("valid") or {}, metrics.get("test"),
                             metrics.get("num_parameters"), _number(metrics.get("seconds_per_epoch"))))
    return rows


def tradeoff_points(found: Artifacts) -> list[ModelRow]:
    """Every model with a validation NDCG@10 and a cost: teacher, tuning trials, student runs (no test numbers)."""
    points = [row for row in model_rows(found) if row.kind in ("teacher", "student")]
    if found.tune and found.tune.get("metric") == "valid_ndcg_at_10":
        winner_id = (found.tune.get("winner") or {}).get("trial_id")
        # a trial's size is the exported winner's unless the search changed the student itself
        same_student = not any(key.startswith("student.")
                               for trial in found.tune.get("trials", []) for key in (trial.get("params") or {}))
        size = found.serving_parameters if same_student and _serving_is_winner(found) else None
        for trial in found.tune.get("trials", []):
            best = _number(trial.get("best"))
            if best is None:
                continue
            is_winner = trial.get("trial_id") == winner_id
            points.append(ModelRow(f"{'winner' if is_winner else 'trial'} {trial.get('trial_id')}",
                                   "winner" if is_winner else "trial", {"ndcg_at_10": best}, None, size,
                                   _trial_seconds_per_epoch(trial)))
    else:
        points += [row for row in model_rows(found) if row.kind in ("winner", "exported")]
    return [point for point in points if _number(point.valid.get("ndcg_at_10")) is not None]


# ---------------------------------------------------------------------------------------------------- latency


def latency_key(found: Artifacts) -> dict[str, Any]:
    """What a recorded measurement was taken on: the exported weights and the teacher checkpoint."""
    return {"student_version": (found.serving_manifest or {}).get("version"),
            "teacher_started_at": (found.teacher_manifest or {}).get("started_at")}


def measure_latency(found: Artifacts, student_repeats: int = 50, teacher_repeats: int = 10) -> dict[str, Any]:
    """Median milliseconds for one history scored against the whole catalogue, CPU, one torch thread."""
    from rdistill.export import load_exported
    from rdistill.onnx_scoring import runtime_name, scorer_for

    layout = ArtifactLayout(found.root)
    exported = load_exported(layout.serving_model_dir)
    student = exported.model
    served = scorer_for(student, exported.directory, "auto")  # timed as the endpoint scores it
    history = sample_history(layout.table("valid"), student.n_items, student.max_len)
    result: dict[str, Any] = {
        "key": latency_key(found), "device": "cpu", "torch_threads": 1, "history_length": len(history),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "student": {"name": exported.name, "version": exported.version, "runtime": runtime_name(served),
                    "latency_ms": scoring_latency_ms(served, history, student_repeats, 5.0)},
    }
    if (layout.teacher_checkpoint_dir / "model.safetensors").is_file():
        from rdistill.models.lm_teacher import load_teacher

        teacher, _ = load_teacher(layout.teacher_checkpoint_dir)
        result["teacher"] = {"latency_ms": scoring_latency_ms(teacher, history, teacher_repeats, 20.0)}
    return result


def _latency(found: Artifacts, out_dir: Path, measure: bool) -> tuple[dict[str, Any] | None, str]:
    """(measurement or None, a sentence saying where it comes from or how to get it)."""
    if measure:
        if found.serving_manifest is None:
            return None, ("`--measure-latency`: there is no exported student in `serving/model/` to time "
                          f"(run {HOW_TO_RUN['serving']} first).")
        try:
            measured = measure_latency(found)
        except Exception as err:  # noqa: BLE001 - a report states what it could not measure and goes on
            return None, f"Latency could not be measured: {type(err).__name__}: {err}"
        return measured, (f"Measured by this report at {measured['measured_at']}: median of a short timed loop "
                          f"scoring one validation user's history ({measured['history_length']} items) against "
                          "the whole catalogue on CPU with one thread; the student as the endpoint scores it "
                          f"({measured['student']['runtime']}), the teacher with torch.")
    recorded_path = out_dir / LATENCY_FILE
    if recorded_path.is_file():
        try:
            recorded = read_json(recorded_path)
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, dict) and recorded.get("key") == latency_key(found):
            return recorded, (f"Recorded by `rdistill report --measure-latency` at {recorded.get('measured_at')} "
                              "on the same exported student and teacher (CPU, one torch thread).")
    return None, LATENCY_HOW_TO


# --------------------------------------------------------------------------------------------------- the plots


def _figure(width: float, height: float, columns: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # render with Agg, whatever backend matplotlib would pick for pyplot
    return figure, figure.subplots(1, columns, squeeze=False)[0]


def _save(figure, path: Path) -> str:
    figure.savefig(path, format="png", dpi=110, metadata={"Software": None})
    return path.name


def plot_tuning_history(tune: dict[str, Any], path: Path) -> str | None:
    trials = [trial for trial in tune.get("trials", []) if trial.get("history")]
    if not trials:
        return None
    winner_id = (tune.get("winner") or {}).get("trial_id")
    figure, (axis,) = _figure(7.5, 4.2)
    for trial in trials:
        if trial.get("trial_id") == winner_id:
            continue
        history = trial["history"]
        axis.plot(range(1, len(history) + 1), history, color="tab:gray", alpha=0.55, linewidth=1, marker=".")
    winner = next((trial for trial in trials if trial.get("trial_id") == winner_id), None)
    if winner:
        history = winner["history"]
        axis.plot(range(1, len(history) + 1), history, color="tab:red", linewidth=2.5, marker="o",
                  label=f"winner {winner_id}")
        best_epoch = max(range(len(history)), key=history.__getitem__)
        axis.scatter([best_epoch + 1], [history[best_epoch]], s=160, marker="*", color="gold", edgecolor="black",
                     zorder=5, label="selected epoch")
    axis.plot([], [], color="tab:gray", alpha=0.55, label=f"other trials ({len(trials) - (1 if winner else 0)})")
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel(tune.get("metric", "validation metric"))
    axis.set_title("Tuning history (validation, per epoch)")
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    return _save(figure, path)


def _pareto_panels(points: list[ModelRow]) -> list[tuple[str, list[ModelRow], Callable[[ModelRow], float]]]:
    """The cost axes that have something to trade off: at least two models with different costs."""
    panels = []
    for title, cost in (("seconds per training epoch", lambda row: row.seconds_per_epoch),
                        ("parameters", lambda row: row.parameters)):
        usable = [row for row in points if _number(cost(row)) is not None and cost(row) > 0]
        if len({cost(row) for row in usable}) >= 2:
            panels.append((title, usable, cost))
    return panels


def plot_pareto(points: list[ModelRow], path: Path) -> str | None:
    panels = _pareto_panels(points)
    if not panels:
        return None
    colours = {"teacher": "tab:blue", "winner": "tab:red", "exported": "tab:red", "student": "tab:green",
               "trial": "tab:gray"}
    figure, axes = _figure(6.0 * len(panels), 4.4, columns=len(panels))
    for axis, (title, rows, cost) in zip(axes, panels):
        xs, ys = [float(cost(row)) for row in rows], [row.valid["ndcg_at_10"] for row in rows]
        for kind in colours:
            chosen = [i for i, row in enumerate(rows) if row.kind == kind]
            if chosen:
                axis.scatter([xs[i] for i in chosen], [ys[i] for i in chosen], color=colours[kind], label=kind,
                             s=60 if kind != "trial" else 30, zorder=3)
        front = pareto_front(list(zip(xs, ys)))
        axis.step([xs[i] for i in front], [ys[i] for i in front], where="post", color="black", linewidth=1,
                  linestyle="--", label="Pareto front", zorder=2)
        for i in sorted(set(front) | {i for i, row in enumerate(rows) if row.kind != "trial"}):
            axis.annotate(rows[i].label, (xs[i], ys[i]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if max(xs) / min(xs) > 20:
            axis.set_xscale("log")
        axis.set_xlabel(f"{title} (lower is cheaper)")
        axis.set_ylabel("validation NDCG@10")
        axis.grid(alpha=0.3)
        axis.legend(loc="best", fontsize=8)
    figure.suptitle("Validation NDCG@10 against cost (no test numbers)")
    return _save(figure, path)


METRIC_SERIES = (("valid", "ndcg_at_10", "validation NDCG@10"), ("valid", "hr_at_10", "validation HR@10"),
                 ("test", "ndcg_at_10", "test NDCG@10"), ("test", "hr_at_10", "test HR@10"))


def plot_model_metrics(rows: list[ModelRow], path: Path) -> str | None:
    if not rows:
        return None
    figure, (axis,) = _figure(max(7.0, 1.6 * len(rows) + 2), 4.4)
    width = 0.8 / len(METRIC_SERIES)
    colours = ("tab:blue", "tab:cyan", "tab:orange", "tab:olive")
    for offset, ((split, key, label), colour) in enumerate(zip(METRIC_SERIES, colours)):
        positions, heights = [], []
        for index, row in enumerate(rows):
            value = _number((getattr(row, split) or {}).get(key))
            if value is not None:  # test only where it was evaluated
                positions.append(index + (offset - 1.5) * width)
                heights.append(value)
        if heights:
            axis.bar(positions, heights, width, color=colour, label=label, hatch="//" if split == "test" else None,
                     edgecolor="white")
    axis.set_xticks(range(len(rows)), [row.label for row in rows], rotation=15, ha="right", fontsize=8)
    axis.set_ylabel("metric @10")
    axis.set_title("Per-model metrics (test hatched, only where evaluated)")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    return _save(figure, path)


def plot_size_latency(sizes: list[tuple[str, int]], latencies: list[tuple[str, float]], path: Path) -> str | None:
    panels = [panel for panel in (("parameters", sizes), ("latency, ms per user (CPU, 1 thread)", latencies))
              if panel[1]]
    if not panels:
        return None
    figure, axes = _figure(5.0 * len(panels), 4.0, columns=len(panels))
    for axis, (title, values) in zip(axes, panels):
        labels, heights = [label for label, _ in values], [value for _, value in values]
        bars = axis.bar(labels, heights, color=["tab:blue" if label == "teacher" else "tab:red" for label in labels])
        axis.bar_label(bars, [f"{value:,.0f}" if title == "parameters" else f"{value:.2f}" for value in heights],
                       fontsize=8)
        if max(heights) / max(min(heights), 1e-12) > 20:
            axis.set_yscale("log")
        axis.set_title(title)
        axis.tick_params(axis="x", labelsize=8, rotation=15)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("Teacher vs student")
    return _save(figure, path)


STATUS_COLOURS = {"done": "tab:green", "failed": "tab:red", "running": "tab:orange"}


def plot_stage_timings(stages: list[tuple[str, str, float]], path: Path) -> str | None:
    if not stages:
        return None
    figure, (axis,) = _figure(6.5, 0.6 * len(stages) + 1.6)
    names = [name for name, _, _ in stages]
    bars = axis.barh(names, [seconds for _, _, seconds in stages],
                     color=[STATUS_COLOURS.get(status, "tab:gray") for _, status, _ in stages])
    axis.bar_label(bars, [f"{seconds:.1f} s ({status})" for _, status, seconds in stages], fontsize=8)
    axis.invert_yaxis()  # pipeline order, top to bottom
    axis.set_xlabel("seconds")
    axis.set_title("Pipeline stage timings (pipeline.json)")
    axis.margins(x=0.25)
    return _save(figure, path)


# ------------------------------------------------------------------------------------------- the document itself


@dataclass
class Document:
    """Blocks rendered twice, as Markdown and as HTML, so the two pages always say the same."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("para", text))

    def not_run(self, section: str, expected: str, found: Artifacts) -> None:
        why = found.unreadable.get(section)
        if why:
            self.para(f"Not readable: {why}.")
        else:
            self.para(f"Not run yet: no `{expected}` (run {HOW_TO_RUN[section]}).")

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        self.blocks.append(("table", (headers, [[_cell(value) for value in row] for row in rows])))

    def figure(self, file: str, caption: str) -> None:
        self.figures.append(file)
        self.blocks.append(("figure", (file, caption)))

    def markdown(self) -> str:
        lines: list[str] = []
        for kind, payload in self.blocks:
            if kind == "heading":
                lines += [f"{'#' * payload[0]} {payload[1]}", ""]
            elif kind == "para":
                lines += [payload, ""]
            elif kind == "table":
                headers, rows = payload
                lines.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
                lines.append("|" + "|".join("---" for _ in headers) + "|")
                lines += ["| " + " | ".join(_md_cell(value) for value in row) + " |" for row in rows]
                lines.append("")
            else:
                lines += [f"![{payload[1]}]({payload[0]})", "", f"*{payload[1]}*", ""]
        return "\n".join(lines).rstrip() + "\n"

    def html(self, title: str) -> str:
        body: list[str] = []
        for kind, payload in self.blocks:
            if kind == "heading":
                body.append(f"<h{payload[0]}>{_inline_html(payload[1])}</h{payload[0]}>")
            elif kind == "para":
                body.append(f"<p>{_inline_html(payload)}</p>")
            elif kind == "table":
                headers, rows = payload
                head = "".join(f"<th>{_inline_html(h)}</th>" for h in headers)
                cells = "".join("<tr>" + "".join(f"<td>{_inline_html(v)}</td>" for v in row) + "</tr>" for row in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
            else:
                file, caption = (html.escape(part, quote=True) for part in payload)
                body.append(f'<figure><img src="{file}" alt="{caption}"><figcaption>{caption}</figcaption></figure>')
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
                + "\n".join(body) + "\n</body>\n</html>\n")


_CSS = ("body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}"
        "table{border-collapse:collapse;margin:0.5rem 0 1rem}th,td{border:1px solid #ccc;padding:0.25rem 0.6rem;"
        "text-align:left;font-size:0.9rem}th{background:#f3f3f3}code{background:#f3f3f3;padding:0 0.2rem}"
        "figure{margin:1rem 0}img{max-width:100%}figcaption{font-size:0.85rem;color:#555}")


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _inline_html(text: str) -> str:
    """Escape everything, then turn `code` spans into <code> (the only markup the blocks use)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=True))


def _seconds(value: Any) -> str:
    number = _number(value)
    return f"{number:.1f}" if number is not None else "–"


def _utc(timestamp: Any) -> str | None:
    number = _number(timestamp)
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(number)) if number is not None else None


def _params_text(params: dict[str, Any] | None) -> str:
    return ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in sorted((params or {}).items()))


# ------------------------------------------------------------------------------------------------- the sections


def _pipeline_section(doc: Document, found: Artifacts, out: Path) -> None:
    from rdistill.pipeline import STAGES

    doc.heading("Pipeline stages")
    if found.pipeline is None:
        doc.not_run("pipeline", "pipeline.json", found)
        return
    names = [name for name in STAGES if name in found.pipeline] + sorted(set(found.pipeline) - set(STAGES))
    rows, timed = [], []
    for name in names:
        record = found.pipeline[name] if isinstance(found.pipeline[name], dict) else {}
        status, seconds = str(record.get("status", "?")), _number(record.get("seconds"))
        rows.append([name, status, _seconds(seconds), _utc(record.get("finished_at") or record.get("started_at")),
                     (record.get("error") or "")[:200]])
        if seconds is not None:
            timed.append((name, status, seconds))
    doc.table(["stage", "status", "seconds", "finished (or started) at", "error"], rows)
    total = sum(seconds for _, _, seconds in timed)
    doc.para(f"Total recorded stage time: {total:.1f} s. Seconds are those of each stage's last run; a stage "
             "skipped as up to date keeps its earlier record.")
    if plot := plot_stage_timings(timed, out / "stage_timings.png"):
        doc.figure(plot, "Stage timings from pipeline.json")
    missing = [name for name in STAGES if name not in found.pipeline]
    if missing:
        doc.para(f"Stages not run yet: {', '.join(missing)}.")


def _dataset_section(doc: Document, found: Artifacts) -> None:
    doc.heading("Dataset")
    if found.dataset is None:
        doc.not_run("dataset", "dataset/manifest.json", found)
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


def _teacher_section(doc: Document, found: Artifacts) -> None:
    doc.heading("Teacher")
    if found.teacher is None:
        doc.not_run("teacher", "teacher/checkpoint/metrics.json", found)
        return
    doc.table(METRIC_HEADERS, _metrics_rows([("validation", found.teacher.get("valid")),
                                             ("test", found.teacher.get("test"))]))
    parameters = _teacher_parameters(found)
    model = ((found.teacher_manifest or {}).get("config") or {}).get("teacher", {})
    facts = [f"best epoch {found.teacher.get('best_epoch', '?')}", f"{found.teacher.get('global_steps', '?')} steps"]
    if parameters is not None:
        facts.append(f"{parameters:,} parameters")
    if model:
        facts.append(f"backbone `{model.get('model', '?')}`, mode `{model.get('mode', '?')}`")
    if found.teacher_manifest:
        facts.append(f"trained in {_seconds(found.teacher_manifest.get('wall_seconds'))} s")
    doc.para("; ".join(facts) + ".")


def _signals_section(doc: Document, found: Artifacts) -> None:
    doc.heading("Teacher signals")
    if found.signals is None:
        doc.not_run("signals", "signals/manifest.json", found)
        return
    counts = found.signals.get("counts") or {}
    rows = counts.get("rows") if isinstance(counts.get("rows"), dict) else {}
    doc.table(["split", "rows"], [[split, value] for split, value in rows.items()])
    doc.para(f"Top-{counts.get('top_k', '?')} of {_cell(counts.get('items'))} items per row, embedding width "
             f"{counts.get('embedding_dim', '?')}, hidden layers {found.signals.get('hidden_layers') or 'none'}; "
             f"{_seconds(found.signals.get('rows_per_second'))} rows/s, "
             f"{_seconds(found.signals.get('wall_seconds'))} s in all.")


def _tuning_section(doc: Document, found: Artifacts, out: Path) -> None:
    doc.heading("Tuning")
    if found.tune is None:
        if found.tune_unfinished:
            doc.para(f"Not finished yet: `tune/{found.tune_name}/` has no `summary.json` (the campaign is running or "
                     "was interrupted; `rdistill tune` resumes it).")
        else:
            doc.not_run("tuning", f"tune/{found.tune_name or '<tune.name>'}/summary.json", found)
        return
    tune, winner = found.tune, found.tune.get("winner") or {}
    metric = tune.get("metric", "valid_ndcg_at_10")
    selected = metric.removeprefix("valid_")
    trials = tune.get("trials", [])
    doc.para(f"Campaign `{found.tune_name}`: {len(trials)} trials, search `{tune.get('search', '?')}`, scheduler "
             f"`{tune.get('scheduler', '?')}`, seed {tune.get('seed', '?')}, {_seconds(tune.get('seconds'))} s"
             f"{' (resumed)' if tune.get('restored') else ''}. Winner: trial `{winner.get('trial_id')}` at epoch "
             f"{winner.get('epoch')}, {metric} {_cell(_number((winner.get('valid') or {}).get(selected)))} "
             f"(chosen on validation; test {_cell(_number((winner.get('test') or {}).get(selected)))}, "
             "evaluated once after the search).")
    if plot := plot_tuning_history(tune, out / "tuning_history.png"):
        doc.figure(plot, f"Tuning history: {metric} per epoch per trial, winner highlighted")
    rows = []
    for trial in sorted(trials, key=lambda t: -(_number(t.get("best")) or -math.inf)):
        rows.append([f"{trial.get('trial_id')}{' (winner)' if trial.get('trial_id') == winner.get('trial_id') else ''}",
                     _number(trial.get("best")), trial.get("epochs"), _seconds(trial.get("seconds")),
                     _params_text(trial.get("params")), (trial.get("error") or "")[:200]])
    doc.table(["trial", f"best {metric}", "epochs", "seconds", "settings", "error"], rows)


def _serving_section(doc: Document, found: Artifacts) -> None:
    doc.heading("Exported model (serving/model/)")
    if found.serving_manifest is None:
        doc.not_run("serving", "serving/model/manifest.json", found)
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


def _students_section(doc: Document, found: Artifacts) -> None:
    doc.heading("Student runs (students/)")
    if not found.students:
        doc.not_run("students", "students/*/metrics.json", found)
        return
    rows = [[run, metrics.get("student"), _number((metrics.get("valid") or {}).get("ndcg_at_10")),
             _number((metrics.get("test") or {}).get("ndcg_at_10")), metrics.get("best_epoch"),
             metrics.get("epochs_run"), metrics.get("num_parameters"), _number(metrics.get("seconds_per_epoch"))]
            for run, metrics in found.students.items()]
    doc.table(["run", "student", "valid NDCG@10", "test NDCG@10", "best epoch", "epochs", "parameters",
               "s/epoch"], rows)


def _comparison_section(doc: Document, found: Artifacts, out: Path) -> None:
    doc.heading("Per-model metrics")
    rows = model_rows(found)
    if not rows:
        doc.para("Not run yet: no teacher, exported model, tuning winner or student run to compare.")
        return
    doc.table(["model", "validation NDCG@10", "validation HR@10", "test NDCG@10", "test HR@10", "parameters"],
              [[row.label, _number(row.valid.get("ndcg_at_10")), _number(row.valid.get("hr_at_10")),
                _number((row.test or {}).get("ndcg_at_10")), _number((row.test or {}).get("hr_at_10")),
                row.parameters] for row in rows])
    if plot := plot_model_metrics(rows, out / "model_metrics.png"):
        doc.figure(plot, "Validation and test NDCG@10 / HR@10 per model (test only where evaluated)")


def _pareto_section(doc: Document, found: Artifacts, out: Path) -> None:
    doc.heading("Trade-offs (validation only)")
    points = tradeoff_points(found)
    panels = _pareto_panels(points)
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


def _size_latency_section(doc: Document, found: Artifacts, out: Path,
                          latency: dict[str, Any] | None, latency_note: str) -> None:
    doc.heading("Teacher vs student: size and latency")
    teacher_parameters = _teacher_parameters(found)
    sizes: list[tuple[str, int]] = []
    if teacher_parameters is not None:
        sizes.append(("teacher", teacher_parameters))
    student_label = (found.serving_manifest or {}).get("name", "student")
    if found.serving_parameters is not None:
        sizes.append((f"student ({student_label})", found.serving_parameters))
    if not sizes:
        doc.para("Not run yet: neither a teacher (`teacher/checkpoint/`) nor an exported student "
                 "(`serving/model/`) to compare.")
        return
    latencies: list[tuple[str, float]] = []
    if latency:
        if _number((latency.get("teacher") or {}).get("latency_ms")) is not None:
            latencies.append(("teacher", latency["teacher"]["latency_ms"]))
        if _number((latency.get("student") or {}).get("latency_ms")) is not None:
            latencies.append((f"student ({student_label})", latency["student"]["latency_ms"]))
    table = [[label, value, dict(latencies).get(label)] for label, value in sizes]
    doc.table(["model", "parameters", "latency, ms per user"], table)
    if teacher_parameters and found.serving_parameters:
        doc.para(f"The student has {found.serving_parameters / teacher_parameters:.2%} of the teacher's parameters"
                 + (f" and takes {latencies[1][1] / latencies[0][1]:.2%} of its time per user"
                    if len(latencies) == 2 and latencies[0][1] > 0 else "") + ".")
    elif found.serving_parameters is None:
        doc.para(f"No exported student in `serving/model/` yet (run {HOW_TO_RUN['serving']}).")
    else:
        doc.para("No teacher in `teacher/checkpoint/` yet (run `rdistill teacher train`).")
    doc.para(latency_note)
    if plot := plot_size_latency(sizes, latencies, out / "size_latency.png"):
        doc.figure(plot, "Parameters" + (" and CPU latency" if latencies else "") + ": teacher vs exported student")


# ---------------------------------------------------------------------------------------------------- entry point


def _pull_for_report(root: ArtifactRoot, tune_name: str, measure_latency: bool) -> None:
    """A URI root: bring into the mirror what the report reads. Small files where a section needs only those
    (a later stage's pull completes a folder: pulls compare every file); whole folders for latency."""
    if not root.is_remote:
        return
    from rdistill.pipeline import STATE_FILE
    from rdistill.tune import CAMPAIGN_FILE
    from rdistill.tune import SUMMARY_FILE as TUNE_SUMMARY

    files = [STATE_FILE, f"dataset/{MANIFEST_NAME}", f"signals/{MANIFEST_NAME}",
             f"teacher/checkpoint/{MANIFEST_NAME}", "teacher/checkpoint/metrics.json",
             f"tune/{tune_name}/{TUNE_SUMMARY}", f"tune/{tune_name}/{CAMPAIGN_FILE}",
             f"{REPORT_DIR}/{LATENCY_FILE}"]
    root.pull(*files)
    students = [f"students/{run}" for run in root.list_dirs("students")]  # small: the students are
    root.pull("serving/model", *students, *(["dataset", "teacher/checkpoint"] if measure_latency else []))


def report_dir(root: Path, out: Path | None = None) -> Path:
    return Path(out) if out is not None else Path(root) / REPORT_DIR


def write_report(source: Config | str | Path, out: Path | None = None, measure_latency: bool = False,
                 tune_name: str | None = None) -> Path:
    """Read the artifact root of `source` (a Config or the root folder), write the report folder; return it."""
    storage = None
    if isinstance(source, (str, Path)):
        root = Path(source)
    else:
        storage, tune_name = source.storage(), tune_name or source.tune.name
        root = storage.local
        _pull_for_report(storage, tune_name, measure_latency)
    if not root.is_dir():
        raise ArtifactError(f"artifact root {root} does not exist: nothing to report (check artifact_root)")
    found = read_artifacts(root, tune_name)
    target = report_dir(root, out)
    latency, latency_note = _latency(found, target, measure_latency)
    title = f"rdistill report: {root}"
    with atomic_dir(target) as staging:
        doc = Document()
        doc.heading(title, 1)
        present = [section for section in SECTIONS if found.present(section)]
        missing = [section for section in SECTIONS if section not in present]
        doc.para(f"Generated at {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())} from `{root}`. Found: "
                 f"{', '.join(present) or 'nothing'}; not run yet: {', '.join(missing) or 'nothing'}.")
        _pipeline_section(doc, found, staging)
        _dataset_section(doc, found)
        _teacher_section(doc, found)
        _signals_section(doc, found)
        _tuning_section(doc, found, staging)
        _serving_section(doc, found)
        _students_section(doc, found)
        _comparison_section(doc, found, staging)
        _pareto_section(doc, found, staging)
        _size_latency_section(doc, found, staging, latency, latency_note)
        (staging / "report.md").write_text(doc.markdown())
        (staging / "report.html").write_text(doc.html(title))
        if latency:
            (staging / LATENCY_FILE).write_text(json.dumps(latency, indent=2, sort_keys=True) + "\n")
        summary = {"report_dir": str(target), "markdown": str(target / "report.md"),
                   "html": str(target / "report.html"), "plots": [str(target / name) for name in doc.figures],
                   "sections_present": present, "sections_missing": missing,
                   "unreadable": found.unreadable, "latency": "measured" if measure_latency and latency else
                   "recorded" if latency else "not measured"}
        (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if storage is not None and storage.relative(target) is not None:
        storage.push(target, marker=SUMMARY_FILE)
    return target


def report_summary(target: Path) -> dict[str, Any]:
    """What write_report wrote into `target` (its report.json)."""
    return read_json(Path(target) / SUMMARY_FILE)
