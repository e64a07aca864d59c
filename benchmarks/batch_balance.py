"""Benchmark: train.batch_balance=targets (equal targets per length-grouped batch) against rows (the earlier scheme).

Plain SASRec with the dataset config's settings, several seeds of each, full ranking, test evaluated once per run.
Each run is an ordinary `rdistill train-student` run under --work-dir, named sasrec-<balance>-<seed>; a run already
there with the same config is read, not trained again. Prints and writes JSON with every run and mean ± std:

    python benchmarks/batch_balance.py --dataset amazon-scientific --seeds 42 43 44 --work-dir /tmp/bb/sci \
        --threads 1 --out benchmarks/results/batch_balance.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
from pathlib import Path

from rdistill import layout
from rdistill.artifacts import read_json, update_json_entry
from rdistill.config import config_to_dict, load_config
from rdistill.stages.registry import StageContext, run_stage

REPO_ROOT = Path(__file__).resolve().parents[1]
BALANCES = ("targets", "rows")
REPORTED = ("hr_at_10", "ndcg_at_10")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a packaged config name, e.g. amazon-scientific")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--work-dir", type=Path, required=True, help="the artifact root (prepared if needed)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "batch_balance.json")
    return parser.parse_args()


def run_config(args: argparse.Namespace, balance: str, seed: int):
    overrides = [f"artifact_root={args.work_dir}", f"train.batch_balance={balance}", f"seed={seed}",
                 f"train.run_name=sasrec-{balance}-{seed}", "train.progress=false", "student.name=sasrec"]
    if args.threads:
        overrides.append(f"train.num_threads={args.threads}")
    return load_config(args.dataset, overrides)


def one_run(args: argparse.Namespace, balance: str, seed: int) -> dict:
    """The run's metrics: read when an identical run is already in the work dir, trained otherwise."""
    config = run_config(args, balance, seed)
    folder = layout.ArtifactLayout(args.work_dir).student_dir(config.train.run_name)
    manifest = folder / layout.MANIFEST
    if not (manifest.is_file() and read_json(manifest)["config"] == config_to_dict(config)):
        print(f"training {folder.name}", file=sys.stderr, flush=True)
        run_stage("train-student", StageContext(config))
    metrics = read_json(folder / layout.METRICS)
    return {"seed": seed, "best_epoch": metrics["best_epoch"], "epochs_run": metrics["epochs_run"],
            "seconds_per_epoch": round(metrics["seconds_per_epoch"], 3),
            "valid": {key: metrics["valid"][key] for key in REPORTED},
            "test": {key: metrics["test"][key] for key in REPORTED}}


def summary(runs: list[dict]) -> dict:
    pooled = {}
    for split in ("valid", "test"):
        for key in REPORTED:
            values = [run[split][key] for run in runs]
            pooled[f"{split}_{key}"] = {"mean": statistics.fmean(values), "std": statistics.pstdev(values)}
    return pooled


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (args.work_dir / layout.DATASET / layout.MANIFEST).is_file():
        run_stage("prepare", StageContext(run_config(args, "targets", args.seeds[0])))
    entry = {"command": "python benchmarks/batch_balance.py " + shlex.join(sys.argv[1:]),
             "dataset": args.dataset, "student": "sasrec", "balances": {}}
    for balance in BALANCES:
        runs = [one_run(args, balance, seed) for seed in args.seeds]
        entry["balances"][balance] = {"runs": runs, **summary(runs)}
    targets, rows = (entry["balances"][b]["test_ndcg_at_10"]["mean"] for b in BALANCES)
    entry["test_ndcg_at_10_gain"] = targets / rows - 1
    update_json_entry(args.out, args.dataset, entry)
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
