"""Benchmark: how fast does TPE + ASHA find good distillation weights, against random search without early
stopping on the same space?

    python benchmarks/search.py --dataset amazon-scientific --random-trials 32 --tpe-trials 16

Runs two `rdistill tune` campaigns on the same dataset, signals and space (validation metric only): random
search + FIFO with --random-trials trials, then TPE + ASHA with --tpe-trials. The target is 98% of the best
validation NDCG@10 the random campaign found; for each campaign it reports how many trials (in completion order)
and how many trial-seconds it took to first reach the target. Goal: TPE + ASHA within 16 trials and 50% of the
compute of random search.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from rdistill.artifacts import update_json_entry
from rdistill.config import load_config
from rdistill.tune import tune_students

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-scientific",
                        choices=["amazon-scientific", "ml-latest-small", "amazon-beauty"])
    parser.add_argument("--random-trials", type=int, default=32)
    parser.add_argument("--tpe-trials", type=int, default=16)
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--data-dir", default=os.environ.get("RDISTILL_DATA_DIR", str(REPO_ROOT.parent / "shared" / "data")))
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "artifacts" / "bench-teacher",
                        help="holds <dataset>/dataset and signals/ (see benchmarks/distill.py)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "search.json")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, key.sub=value")
    return parser.parse_args()


def campaign(args: argparse.Namespace, name: str, search: str, scheduler: str, trials: int) -> dict:
    config = load_config(REPO_ROOT / "jobs" / "configs" / f"{args.dataset}.yaml", [
        f"artifact_root={args.work_dir / args.dataset}", f"data.root={args.data_dir}", f"tune.name={name}",
        f"tune.search={search}", f"tune.scheduler={scheduler}", f"tune.num_samples={trials}",
        f"tune.max_epochs={args.max_epochs}", f"tune.max_concurrent={args.concurrent}", "tune.export=false",
        *args.overrides,
    ])
    result = tune_students(config)  # resumes a campaign an earlier, interrupted run of this script left
    return {"trials": result.trials, "best": result.best_valid["ndcg_at_10"]}


def first_reach(trials: list[dict], target: float) -> dict:
    """Trials and trial-seconds spent, in completion order, until a trial's best reached the target."""
    ordered = sorted((t for t in trials if t["best"] is not None), key=lambda t: t["finished_at"] or 0)
    seconds = 0.0
    for count, trial in enumerate(ordered, start=1):
        seconds += trial["seconds"] or 0.0
        if trial["best"] >= target:
            return {"trials": count, "trial_seconds": seconds, "reached": True}
    return {"trials": len(ordered), "trial_seconds": seconds, "reached": False}


def main() -> int:
    args = parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    random = campaign(args, "search-random", "random", "fifo", args.random_trials)
    tpe = campaign(args, "search-tpe-asha", "tpe", "asha", args.tpe_trials)
    target = 0.98 * random["best"]
    random_total = sum(t["seconds"] or 0.0 for t in random["trials"])
    report = {
        "dataset": args.dataset, "target_valid_ndcg_at_10": target, "random_best": random["best"],
        "tpe_asha_best": tpe["best"],
        "random": {**first_reach(random["trials"], target), "total_trial_seconds": random_total,
                   "num_trials": len(random["trials"])},
        "tpe_asha": {**first_reach(tpe["trials"], target),
                     "total_trial_seconds": sum(t["seconds"] or 0.0 for t in tpe["trials"]),
                     "num_trials": len(tpe["trials"]),
                     "stopped_before_max_epochs": sum(1 for t in tpe["trials"] if t["epochs"] < args.max_epochs)},
        "command": "python benchmarks/search.py " + shlex.join(sys.argv[1:]),
    }
    report["tpe_asha"]["compute_vs_random_total"] = report["tpe_asha"]["trial_seconds"] / max(random_total, 1e-9)
    update_json_entry(args.out, args.dataset, report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
