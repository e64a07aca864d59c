"""`rdistill compare`: does distillation beat an equally tuned plain student on this data? The verdict, whatever it is.

For each student: a search of the plain student's own hyper-parameters (tune.preset=plain), then a search of the
distillation weights starting from the plain winner's settings, with the same number of trials and the same epoch
cap; then `compare.seeds` runs of each winner (and of the plain winner with its item table initialised from the
teacher), each tested once. The teacher comes from teacher-train (its own test metrics, one run) and the popularity
baseline is counted from the training data. Model selection uses validation only, inside every search and every
seed run; the table's test figures are each run's single look at the test split.

The upstream stages (prepare, teacher-train, teacher-infer) run through the pipeline first, so they are skipped
when up to date. The result is <artifact_root>/compare/<compare.name>/: compare.json (every run, the table, the
seconds of every step), compare.md (the table and the verdict) and manifest.json.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rdistill import layout
from rdistill.artifacts import atomic_dir, atomic_write_json, build_manifest, read_json
from rdistill.config import Config, DistillConfig, config_to_dict, default_search_space, set_dotted

log = logging.getLogger(__name__)

UPSTREAM = ("prepare", "teacher-train", "teacher-infer")
METRICS = ("ndcg_at_10", "hr_at_10")


@dataclass
class Row:
    """One line of the table: a model and its runs (one per seed)."""

    model: str
    runs: list[dict[str, Any]] = field(default_factory=list)  # {"seed", "valid", "test"} each
    params: dict[str, Any] = field(default_factory=dict)

    def stat(self, split: str, metric: str) -> tuple[float, float]:
        values = [run[split][metric] for run in self.runs if run.get(split)]
        return (statistics.fmean(values), statistics.pstdev(values)) if values else (float("nan"), float("nan"))


def _with(config: Config, overrides: dict[str, Any], plain: bool = False) -> Config:
    raw = config_to_dict(config)
    if plain:  # no distillation term at all, whatever the user's config switched on
        raw["distill"] = config_to_dict(DistillConfig()) | {"top_k": raw["distill"]["top_k"]}
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    return Config.model_validate(raw)


def distill_space(config: Config) -> dict[str, Any]:
    """The default distillation space, its choices of top-K cut to what the signals hold (infer.top_k)."""
    space = {key: dimension.model_dump(exclude_none=True) for key, dimension in default_search_space().items()}
    top_k = space.get("distill.top_k")
    if top_k is not None:
        top_k["values"] = [k for k in top_k["values"] if k <= config.infer.top_k] or [config.infer.top_k]
    return space


def _search(config: Config, student: str, kind: str, base: dict[str, Any]) -> dict[str, Any]:
    """One campaign (plain or distill) with the compare budget; returns the tune stage's summary."""
    from rdistill.stages.registry import StageContext, run_stage

    budget = config.compare
    campaign = _with(config, {
        **base, "student.name": student, "tune.name": f"{budget.name}-{student}-{kind}",
        "tune.space": distill_space(config) if kind == "distill" else {}, "tune.preset": kind, "tune.num_samples": budget.num_samples, "tune.max_epochs": budget.max_epochs,
        "tune.export": False, "train.progress": False,
    }, plain=kind == "plain")
    return run_stage("tune", StageContext(campaign))


def _seed_runs(config: Config, student: str, variant: str, params: dict[str, Any], plain: bool) -> Row:
    """`compare.seeds` train-student runs of one setting, each tested once."""
    from rdistill.stages.registry import StageContext, run_stage

    row = Row(model=f"{student} {variant}", params=params)
    for seed in range(config.seed, config.seed + config.compare.seeds):
        run_config = _with(config, {**params, "student.name": student, "seed": seed,
                                    "train.epochs": config.compare.max_epochs, "train.progress": False,
                                    "train.run_name": f"{config.compare.name}-{student}-{variant}-seed{seed}"},
                           plain=plain)
        summary = run_stage("train-student", StageContext(run_config))
        row.runs.append({"seed": seed, "valid": summary["valid"], "test": summary["test"],
                         "best_epoch": summary["best_epoch"], "run_dir": summary["run_dir"]})
    return row


def _popularity_row(config: Config) -> Row:
    from rdistill.evaluate import evaluate_saved

    dataset_dir = layout.ArtifactLayout(config.artifact_path()).dataset_dir
    valid, test = (evaluate_saved(config, dataset_dir, None, True, split) for split in ("valid", "test"))
    return Row(model="popularity", runs=[{"seed": None, "valid": valid, "test": test}])


def _teacher_row(config: Config) -> Row:
    metrics = read_json(layout.ArtifactLayout(config.artifact_path()).teacher_checkpoint_dir / layout.METRICS)
    return Row(model=f"teacher ({config.teacher.model}, {config.teacher.mode} mode)",
               runs=[{"seed": config.seed, "valid": metrics["valid"], "test": metrics["test"]}])


class _Clock:
    """Seconds of each step, for the table's cost column and the JSON."""

    def __init__(self, echo: Callable[[str], None]):
        self.echo, self.seconds = echo, {}

    def step(self, name: str, work: Callable[[], Any]) -> Any:
        self.echo(f"compare: {name}")
        started = time.time()
        result = work()
        self.seconds[name] = round(time.time() - started, 1)
        return result


def _student_rows(config: Config, student: str, clock: _Clock) -> list[Row]:
    plain = clock.step(f"{student}: plain search", lambda: _search(config, student, "plain", {}))
    plain_params = plain["best_params"]
    distilled = clock.step(f"{student}: distillation search",
                           lambda: _search(config, student, "distill", plain_params))
    rows = [clock.step(f"{student}: tuned plain, {config.compare.seeds} seeds",
                       lambda: _seed_runs(config, student, "tuned plain", plain_params, plain=True))]
    if config.compare.initialised:
        init = {**plain_params, "distill.init_item_embeddings": "teacher"}
        rows.append(clock.step(f"{student}: initialised from the teacher",
                               lambda: _seed_runs(config, student, "initialised from the teacher", init, False)))
    distilled_params = {**plain_params, **distilled["best_params"]}
    rows.append(clock.step(f"{student}: distilled, {config.compare.seeds} seeds",
                           lambda: _seed_runs(config, student, "distilled", distilled_params, plain=False)))
    return rows


def run_compare(config: Config, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every step (upstream stages skipped when up to date), write compare/<name>/; returns compare.json."""
    from rdistill.pipeline import run_pipeline
    from rdistill.stages.registry import pull_addresses

    started = time.time()
    clock = _Clock(echo or (lambda line: log.info(line)))
    for outcome in clock.step("upstream stages", lambda: run_pipeline(config, stages=UPSTREAM, echo=clock.echo)):
        clock.seconds[outcome.name] = round(outcome.seconds, 1)
    # the upstream stages may have been skipped on this machine: what the rows read must be in its mirror
    pull_addresses(config.storage(), [layout.Address(layout.DATASET), layout.Address(layout.TEACHER_CHECKPOINT)])
    rows = [_popularity_row(config), _teacher_row(config)]
    for student in config.compare.students:
        rows += _student_rows(config, student, clock)
    result = compare_table(config, rows, clock.seconds)
    _write(config, result, started)
    return result


def compare_table(config: Config, rows: list[Row], seconds: dict[str, float]) -> dict[str, Any]:
    """compare.json: every row's runs and mean ± std, the gains over each student's tuned plain row, the verdict."""
    table = []
    for row in rows:
        entry = {"model": row.model, "seeds": [run["seed"] for run in row.runs], "params": row.params,
                 "runs": row.runs}
        for split, metric in (("valid", "ndcg_at_10"), ("test", "ndcg_at_10"), ("test", "hr_at_10")):
            mean, std = row.stat(split, metric)
            entry[f"{split}_{metric}"] = {"mean": mean, "std": std}
        table.append(entry)
    for student in config.compare.students:
        baseline = next(e for e in table if e["model"] == f"{student} tuned plain")["test_ndcg_at_10"]["mean"]
        for entry in table:
            if entry["model"].startswith(f"{student} ") or entry["model"].split()[0] not in config.compare.students:
                entry.setdefault("gain_vs_tuned_plain", {})[student] = entry["test_ndcg_at_10"]["mean"] / baseline - 1
    return {"dataset": config.data.path or config.data.format, "seed": config.seed,
            "budget": config_to_dict(config.compare), "rows": table, "verdicts": _verdicts(config, table),
            "seconds": seconds}


def _verdicts(config: Config, table: list[dict[str, Any]]) -> list[str]:
    by_model = {entry["model"]: entry for entry in table}
    lines = []
    for student in config.compare.students:
        plain, distilled = by_model[f"{student} tuned plain"], by_model[f"{student} distilled"]
        gain = distilled["gain_vs_tuned_plain"][student]
        (p_mean, p_std), (d_mean, d_std) = (plain["test_ndcg_at_10"].values(), distilled["test_ndcg_at_10"].values())
        # apart by more than one standard deviation each: a difference the seeds do not explain
        if d_mean - d_std > p_mean + p_std:
            verdict = "beats"
        elif d_mean + d_std < p_mean - p_std:
            verdict = "is below"
        else:
            verdict = "is level with (within one std of)"
        lines.append(f"distilled {student} {verdict} the equally tuned plain {student}: test NDCG@10 "
                     f"{d_mean:.4f} ± {d_std:.4f} against {p_mean:.4f} ± {p_std:.4f} ({gain:+.1%}, "
                     f"{len(distilled['seeds'])} seeds each)")
    return lines


def compare_markdown(result: dict[str, Any]) -> str:
    students = result["budget"]["students"]
    header = ["model", "seeds", "valid NDCG@10", "test HR@10", "test NDCG@10",
              *[f"vs tuned plain {student}" for student in students]]
    lines = [f"# Distillation against tuned baselines: {result['dataset']}", "",
             f"Each search: {result['budget']['num_samples']} trials, at most {result['budget']['max_epochs']} epochs "
             "a trial; full ranking over all items; mean ± population std over the seeds; test evaluated once per run.",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in result["rows"]:
        cells = [entry["model"], str(len(entry["seeds"])), _fmt(entry["valid_ndcg_at_10"]),
                 _fmt(entry["test_hr_at_10"]), _fmt(entry["test_ndcg_at_10"])]
        cells += [f"{entry['gain_vs_tuned_plain'][s]:+.1%}" if s in entry.get("gain_vs_tuned_plain", {}) else ""
                  for s in students]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *[f"- {verdict}" for verdict in result["verdicts"]], "", "| step | seconds |", "|---|---|"]
    lines += [f"| {step} | {seconds} |" for step, seconds in result["seconds"].items()]
    return "\n".join(lines) + "\n"


def _fmt(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}" if stat["mean"] == stat["mean"] else "—"


def _write(config: Config, result: dict[str, Any], started: float) -> None:
    target = layout.ArtifactLayout(config.artifact_path()).path(layout.compare_run(config.compare.name))
    with atomic_dir(target) as staging:
        atomic_write_json(staging / layout.COMPARE_TABLE_FILE, result)
        (staging / layout.COMPARE_MARKDOWN_FILE).write_text(compare_markdown(result))
        atomic_write_json(staging / layout.MANIFEST, build_manifest(
            stage="compare", config=config_to_dict(config), inputs={}, counts={"rows": len(result["rows"])},
            started_at=started))
    log.info("compare: %s", json.dumps(result["verdicts"]))
