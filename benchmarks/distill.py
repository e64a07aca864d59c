"""Benchmark: do students learn from the teacher? Plain vs distilled students, an ablation per loss term.

Needs a trained teacher and its signals under the work dir (benchmarks/teacher.py quality, then
`rdistill teacher infer`), and optionally a tuning campaign whose winner gives the distillation weights
(`rdistill tune`; else the defaults below are used and the output says so):

    python benchmarks/distill.py --dataset amazon-scientific --seeds 0 1 2

Variants (rows): the teacher (one run, from teacher/checkpoint/metrics.json); plain students (sasrec, gru4rec,
caser); sasrec with item embeddings initialised from the teacher's item table (PCA) and nothing else; sasrec with
each distillation term alone (kd, rank, embed) and with all tuned terms but one (no_kd, no_rank, no_embed); every
student with all tuned terms; sasrec with all tuned terms and the teacher-initialised item table (init_distill); and
slm. Selection on
validation, test computed once per run. Runs are cached in --out, so an interrupted benchmark continues.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import shlex
import sys
from pathlib import Path

import numpy as np

from rdistill.artifacts import atomic_write_json
from rdistill.config import load_config
from rdistill.distill.train import train_student

REPO_ROOT = Path(__file__).resolve().parents[1]
REPORTED = ("hr_at_10", "ndcg_at_10")
# Used when no tuning campaign exists; the output records which weights were used.
DEFAULT_WEIGHTS = {"distill.kd_weight": 1.0, "distill.temperature": 2.0, "distill.rank_weight": 1.0,
                   "distill.embed_weight": 0.3, "distill.top_k": 20}
STUDENT_OVERRIDES = {  # as in benchmarks/students.py
    "gru4rec": ['student.params={"hidden_size": 64, "dropout": 0.3}', "train.lr=0.003"],
    "caser": ['student.params={"hidden_size": 64, "dropout": 0.5}'],
    "slm": ['student.params={"num_layers": 2, "feature_blocks": 2, "dropout": 0.1}', "train.lr=0.0003",
            "train.batch_size=64", "train.patience=3"],
}
VARIANTS = ("plain-sasrec", "plain-gru4rec", "plain-caser", "init-sasrec", "kd-sasrec", "rank-sasrec",
            "embed-sasrec", "no_kd-sasrec", "no_rank-sasrec", "no_embed-sasrec", "distill-sasrec",
            "init_distill-sasrec", "distill-gru4rec", "distill-caser", "slm")
# The tuned keys each term owns (top_k is shared by kd and rank: it stays while either is on).
TERM_KEYS = {"kd": ("distill.kd_weight", "distill.temperature"),
             "rank": ("distill.rank_weight", "distill.gamma_position", "distill.gamma_confidence",
                      "distill.gamma_consistency", "distill.position_lambda"),
             "embed": ("distill.embed_weight",)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-scientific",
                        choices=["amazon-scientific", "ml-latest-small", "amazon-beauty"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data-dir", default=os.environ.get("RDISTILL_DATA_DIR", str(REPO_ROOT.parent / "shared" / "data")))
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "artifacts" / "bench-teacher",
                        help="holds <dataset>/dataset, teacher/checkpoint and signals (benchmarks/teacher.py's)")
    parser.add_argument("--tuned", type=Path, default=None,
                        help="a tune summary.json, or a benchmarks/results/tune-*.json holding one, whose winner "
                             "gives the weights (default: <work>/<dataset>/tune/distill/summary.json when present)")
    parser.add_argument("--name", default="",
                        help="a variant of the benchmark (e.g. another teacher): results go under <dataset>/<name>")
    parser.add_argument("--plain-runs-from", default=None, metavar="ENTRY_OR_FILE",
                        help="take the plain-* runs (which never read the teacher) from another entry of --out "
                             "(e.g. amazon-scientific) or from a benchmarks/students.py results file (e.g. "
                             "benchmarks/results/students.json), when both were prepared from the same data; a run "
                             "this entry holds too must have the same test metrics")
    parser.add_argument("--teacher-entry", default=None,
                        help="the teacher row's entry in benchmarks/results/teacher.json (default "
                             "quality/<dataset>/items)")
    parser.add_argument("--overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides for every run of this entry, e.g. train.loss=bce "
                             "train.objective=last_position (DLLM2Rec's protocol); give the entry its own --name")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "distill.json")
    return parser.parse_args()


def tuned_weights(args: argparse.Namespace) -> tuple[dict, str]:
    path = args.tuned or args.work_dir / args.dataset / "tune" / "distill" / "summary.json"
    if path.is_file():
        summary = json.loads(path.read_text())
        summary = summary.get("summary", summary)  # benchmarks/results/tune-*.json wrap the campaign's summary.json
        params = summary["winner"]["params"]
        return {k: v for k, v in params.items() if k.startswith("distill.")}, str(path)
    return dict(DEFAULT_WEIGHTS), "defaults (no tuning campaign found)"


def variant_overrides(variant: str, weights: dict) -> list[str]:
    kind, _, student = variant.partition("-")
    if kind == "slm":
        return ["student.name=slm", *STUDENT_OVERRIDES["slm"], "distill.feature_weight=1.0",
                f"distill.kd_weight={weights.get('distill.kd_weight', 1.0)}",
                f"distill.temperature={weights.get('distill.temperature', 2.0)}"]
    overrides = [f"student.name={student}", *STUDENT_OVERRIDES.get(student, [])]
    if kind == "plain":
        terms = {}
    elif kind == "init":
        terms = {"distill.init_item_embeddings": "teacher"}
    elif kind == "distill":
        terms = weights
    elif kind == "init_distill":  # every tuned term, and the item table initialised from the teacher's too
        terms = weights | {"distill.init_item_embeddings": "teacher"}
    elif kind.startswith("no_"):  # every tuned term but one; the dropped one's weight is set to 0
        dropped = TERM_KEYS[kind.removeprefix("no_")]
        terms = {k: v for k, v in weights.items() if k not in dropped} | {dropped[0]: 0.0}
    else:  # one term alone
        terms = {k: v for k, v in weights.items() if k in TERM_KEYS[kind] + ("distill.top_k",)}
    return overrides + [f"{key}={value}" for key, value in terms.items()]


def run_one(args: argparse.Namespace, variant: str, seed: int, weights: dict) -> dict:
    base = [f"artifact_root={args.work_dir / args.dataset}", f"data.root={args.data_dir}", "train.progress=false",
            f"seed={seed}", f"train.run_name=bench-{variant}-seed{seed}"]
    if args.max_epochs:
        base.append(f"train.epochs={args.max_epochs}")
    if args.threads:
        base.append(f"train.num_threads={args.threads}")
    config = load_config(REPO_ROOT / "jobs" / "configs" / f"{args.dataset}.yaml",
                         base + variant_overrides(variant, weights) + args.overrides)
    result = train_student(config)
    return {"valid": result.valid, "test": result.test, "num_parameters": result.num_parameters,
            "seconds_per_epoch": result.seconds_per_epoch, "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch, "distill": config.distill.model_dump(mode="json"),
            "student": config.student.model_dump(mode="json")}


def plain_runs(args: argparse.Namespace, results: dict) -> dict:
    """The plain-* runs of another entry of --out, or those of a benchmarks/students.py results file (its runs
    are keyed <dataset>/<model>/seed<n>, and train the same students with the same settings)."""
    source = Path(args.plain_runs_from)
    if source.suffix != ".json":
        return {key: run for key, run in results[args.plain_runs_from]["runs"].items() if key.startswith("plain-")}
    runs = {}
    for key, run in json.loads(source.read_text())["runs"].items():
        dataset, model, seed = key.split("/")
        if dataset == args.dataset and f"plain-{model}" in VARIANTS:
            runs[f"plain-{model}/{seed}"] = run
    return runs


def run_key(variant: str, seed: int, weights: dict) -> str:
    """Runs that depend on the distillation weights are cached per weights, so new weights never mix in."""
    if variant.startswith(("plain-", "init-")):
        return f"{variant}/seed{seed}"
    digest = hashlib.sha256(json.dumps(weights, sort_keys=True).encode()).hexdigest()[:8]
    return f"{variant}/seed{seed}/w{digest}"


def summarise(runs: dict, teacher: dict | None, weights: dict) -> list[dict]:
    rows = []
    if teacher:
        rows.append({"variant": "teacher", "seeds": 1, **{f"test_{m}_mean": teacher["test"][m] for m in REPORTED},
                     **{f"test_{m}_std": 0.0 for m in REPORTED}, "num_parameters": teacher["num_parameters"]})
    for variant in VARIANTS:
        done = [runs[run_key(variant, seed, weights)] for seed in range(1000)
                if run_key(variant, seed, weights) in runs]
        if not done:
            continue
        row = {"variant": variant, "seeds": len(done), "num_parameters": done[0]["num_parameters"]}
        for metric in REPORTED:
            values = [run["test"][metric] for run in done]
            row[f"test_{metric}_mean"], row[f"test_{metric}_std"] = float(np.mean(values)), float(np.std(values))
        row["seconds_per_epoch_mean"] = float(np.mean([run["seconds_per_epoch"] for run in done]))
        rows.append(row)
    plain = next((row for row in rows if row["variant"] == "plain-sasrec"), None)
    for row in rows:
        if plain:
            row["ndcg_vs_plain_sasrec"] = row["test_ndcg_at_10_mean"] / plain["test_ndcg_at_10_mean"] - 1
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| variant | seeds | test HR@10 | test NDCG@10 | vs plain SASRec | params |", "|---|---|---|---|---|---|"]
    for row in rows:
        cells = [f"{row[f'test_{m}_mean']:.4f} ± {row[f'test_{m}_std']:.4f}" for m in REPORTED]
        change = f"{row['ndcg_vs_plain_sasrec']:+.1%}" if "ndcg_vs_plain_sasrec" in row else ""
        lines.append(f"| {row['variant']} | {row['seeds']} | " + " | ".join(cells)
                     + f" | {change} | {row['num_parameters']:,} |")
    return "\n".join(lines)


def teacher_quality(args: argparse.Namespace) -> dict | None:
    """The teacher row: the quality run of benchmarks/teacher.py (the checkpoint the signals came from), else the
    checkpoint in the work folder."""
    quality = REPO_ROOT / "benchmarks" / "results" / "teacher.json"
    key = args.teacher_entry or f"quality/{args.dataset}/items"
    entry = json.loads(quality.read_text()).get(key) if quality.is_file() else None
    if entry:
        return {"test": entry["test"], "valid": entry["valid"], "num_parameters": entry["num_parameters"]}
    metrics = args.work_dir / args.dataset / "teacher" / "checkpoint" / "metrics.json"
    return json.loads(metrics.read_text()) if metrics.is_file() else None


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    command = "python benchmarks/distill.py " + shlex.join(sys.argv[1:])
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    entry = f"{args.dataset}/{args.name}" if args.name else args.dataset
    report = results.get(entry, {})
    runs = report.get("runs", {})
    if sorted(report.get("overrides", [])) != sorted(args.overrides) and runs:
        raise SystemExit(f"entry {entry} was run with overrides {report.get('overrides', [])}, not "
                         f"{args.overrides}: give these runs their own --name")
    report["overrides"] = args.overrides
    if args.plain_runs_from:  # plain students never read the teacher: the same data gives the same runs
        shared = args.plain_runs_from
        shared_overrides = [] if shared.endswith(".json") else results.get(shared, {}).get("overrides", [])
        if sorted(shared_overrides) != sorted(args.overrides):
            raise SystemExit(f"--plain-runs-from {shared} holds runs trained with overrides {shared_overrides}, "
                             f"not {args.overrides}: they cannot be shared")
        for key, run in plain_runs(args, results).items():
            if key in runs and runs[key]["test"] != run["test"]:
                raise SystemExit(f"{key}: this entry's run and the one in {args.plain_runs_from} differ on test "
                                 "(not the same data or training code), so the plain runs cannot be shared")
            runs.setdefault(key, run)
        report["plain_runs_from"] = args.plain_runs_from
    weights, source = tuned_weights(args)
    teacher = teacher_quality(args)
    for seed in args.seeds:
        for variant in args.variants:
            key = run_key(variant, seed, weights)
            if key in runs:
                continue
            logging.info("benchmark run %s/%s", args.dataset, key)
            runs[key] = run_one(args, variant, seed, weights)
            report = {**report, "commands": sorted(set(report.get("commands", [])) | {command}), "weights": weights,
                      "weights_from": source, "runs": runs, "summary": summarise(runs, teacher, weights),
                      "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
            results[entry] = report
            atomic_write_json(args.out, results)
    rows = summarise(runs, teacher, weights)
    if runs:
        results[entry] = {**report, "summary": rows}
        atomic_write_json(args.out, results)
    print(json.dumps({"dataset": args.dataset, "weights": weights, "weights_from": source, "summary": rows},
                     indent=2))
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
