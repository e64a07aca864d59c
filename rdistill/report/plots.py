"""The report's PNG plots, drawn on matplotlib `Figure`s with the Agg canvas (no pyplot state), matplotlib imported
inside the functions. Each function saves one file and returns its name, or None when there is nothing to draw."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rdistill.report.compare import ModelRow, number
from rdistill.tradeoff import pareto_front


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


def pareto_panels(points: list[ModelRow]) -> list[tuple[str, list[ModelRow], Callable[[ModelRow], float]]]:
    """The cost axes that have something to trade off: at least two models with different costs."""
    panels = []
    for title, cost in (("seconds per training epoch", lambda row: row.seconds_per_epoch),
                        ("parameters", lambda row: row.parameters)):
        usable = [row for row in points if number(cost(row)) is not None and cost(row) > 0]
        if len({cost(row) for row in usable}) >= 2:
            panels.append((title, usable, cost))
    return panels


def plot_pareto(points: list[ModelRow], path: Path) -> str | None:
    panels = pareto_panels(points)
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
            value = number((getattr(row, split) or {}).get(key))
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
