"""Benchmark: how strong would a teacher made of several teacher runs be? An upper bound for distillation.

    python benchmarks/teacher_ensemble.py --dataset amazon-scientific \
        --roots artifacts/bench-teacher-causal/amazon-scientific \
                artifacts/teacher-seeds/seed43/amazon-scientific artifacts/teacher-seeds/seed44/amazon-scientific

Each root holds a trained teacher (teacher/checkpoint, from benchmarks/teacher.py quality) and the prepared dataset
it was trained on (dataset/; every root must hold the same tables, checked by sha256). The script scores the
validation and test rows with each teacher, then with the ensemble of the first 2, 3, ... teachers: the mean of
their log-softmax scores (a geometric mean of their next-item distributions, so teachers whose logits have
different scales count alike). Full ranking, history excluded, as everywhere else. Nothing is selected on test:
the teachers are fixed, and the ensemble has no weight to tune.

Why: a distilled student here already tests above its teacher, so how much more a stronger teacher could pass on
is the open question behind the +25% goal. Several seeds of the same teacher is the cheapest stronger teacher.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rdistill.artifacts import update_json_entry
from rdistill.data.dataset import load_dataset_info, load_split
from rdistill.evaluate import mask_history
from rdistill.metrics import ranking_metrics, target_ranks

REPO_ROOT = Path(__file__).resolve().parents[1]
SPLIT_TABLES = ("items", "train", "valid", "test")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="the name results are filed under")
    parser.add_argument("--roots", type=Path, nargs="+", required=True,
                        help="artifact roots, each with teacher/checkpoint and dataset/ (at least 2)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "teacher_ensemble.json")
    args = parser.parse_args()
    if len(args.roots) < 2:
        parser.error("--roots: an ensemble needs at least 2 teachers")
    return args


def table_digests(dataset_dir: Path) -> dict[str, str]:
    return {name: hashlib.sha256((dataset_dir / f"{name}.parquet").read_bytes()).hexdigest() for name in SPLIT_TABLES}


def check_roots(roots: list[Path]) -> None:
    """Every teacher must have been trained on the very same tables, or their item indices mean different items."""
    for root in roots:
        for needed in (root / "teacher" / "checkpoint" / "model.safetensors", root / "dataset" / "manifest.json"):
            if not needed.is_file():
                raise SystemExit(f"{root}: {needed.relative_to(root)} missing (run benchmarks/teacher.py quality)")
    reference = table_digests(roots[0] / "dataset")
    for root in roots[1:]:
        differing = [name for name, digest in table_digests(root / "dataset").items() if digest != reference[name]]
        if differing:
            raise SystemExit(f"{root}/dataset: {', '.join(differing)}.parquet differ from {roots[0]}/dataset's")


@torch.no_grad()
def log_probabilities(teacher, history: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Each row's log-softmax over the whole catalogue, as float32 on the CPU."""
    return torch.cat([torch.log_softmax(teacher.scores(history[start:start + batch_size]).float(), dim=-1)
                      for start in range(0, len(history), batch_size)])


def metrics_of(log_probs: torch.Tensor, history: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    ranks = target_ranks(mask_history(log_probs.clone(), history), target)
    metrics = ranking_metrics(ranks.numpy(), [10])
    return {"hr_at_10": metrics["hr_at_10"], "ndcg_at_10": metrics["ndcg_at_10"]}


def main() -> int:
    from rdistill.models.lm_teacher import load_teacher

    args = parse_args()
    torch.set_num_threads(args.threads)
    check_roots(args.roots)
    dataset_dir = args.roots[0] / "dataset"
    max_len = load_dataset_info(dataset_dir).max_len
    started = time.time()
    report: dict = {"dataset": args.dataset, "roots": [str(root) for root in args.roots],
                    "teachers": [], "ensembles": []}
    per_split: dict[str, list[torch.Tensor]] = {}
    splits = {name: load_split(dataset_dir, name, max_len) for name in ("valid", "test")}
    for root in args.roots:
        row = {"root": str(root)}
        teacher, _ = load_teacher(root / "teacher" / "checkpoint")  # loaded once, scores both splits
        teacher.eval()
        for name, split in splits.items():
            log_probs = log_probabilities(teacher, split.history, args.batch_size)
            per_split.setdefault(name, []).append(log_probs)
            row[name] = metrics_of(log_probs, split.history, split.target)
        report["teachers"].append(row)
        print(f"{root}: valid NDCG@10 {row['valid']['ndcg_at_10']:.4f}, test {row['test']['ndcg_at_10']:.4f}",
              file=sys.stderr, flush=True)
    for size in range(2, len(args.roots) + 1):
        row = {"teachers": size}
        for name, split in splits.items():
            row[name] = metrics_of(torch.stack(per_split[name][:size]).mean(dim=0), split.history, split.target)
        report["ensembles"].append(row)
    singles = {name: float(np.mean([row[name]["ndcg_at_10"] for row in report["teachers"]])) for name in splits}
    report["single_teacher_mean_ndcg_at_10"] = singles
    report["seconds"] = round(time.time() - started, 1)
    report["command"] = "python benchmarks/teacher_ensemble.py " + shlex.join(sys.argv[1:])
    update_json_entry(args.out, args.dataset, report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
