"""Benchmark: popularity, SASRec, GRU4Rec and Caser on the three datasets, several seeds, full ranking.

Prints (and writes) JSON with every run plus mean ± std per dataset and model, and a markdown table. Runs are
cached in the output file, so an interrupted benchmark continues where it stopped:

    python benchmarks/students.py --out benchmarks/results/students.json
    python benchmarks/students.py --datasets amazon-beauty --models sasrec --seeds 0 1 2

Model selection uses validation NDCG@10 only; test metrics come from the selected epoch, computed once per run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from rdistill.artifacts import atomic_write_json
from rdistill.config import load_config
from rdistill.data.dataset import load_dataset_info, load_split
from rdistill.data.prepare import prepare_dataset
from rdistill.distill.train import train_student
from rdistill.evaluate import PopularityRecommender, evaluate_scorer

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("ml-latest-small", "amazon-beauty", "amazon-scientific")
MODELS = ("popularity", "sasrec", "gru4rec", "caser")
REPORTED = ("hr_at_10", "ndcg_at_10", "mrr_at_10")
# Per-student settings beside each dataset config's own (which are SASRec's). GRU4Rec sits on a popularity-like
# plateau for its first epochs at lr 1e-3 (early stopping then ends it there); 3e-3 gets it off in ~3 epochs.
STUDENT_OVERRIDES = {
    "gru4rec": ['student.params={"hidden_size": 64, "dropout": 0.3}', "train.lr=0.003"],
    "caser": ['student.params={"hidden_size": 64, "dropout": 0.5}'],
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data-dir", default=os.environ.get("RDISTILL_DATA_DIR", str(REPO_ROOT.parent / "shared" / "data")))
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "artifacts" / "bench")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "students.json")
    parser.add_argument("--max-epochs", type=int, default=None, help="cap on epochs (default: the config's)")
    parser.add_argument("--patience", type=int, default=None, help="early-stopping patience (default: the config's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    return parser.parse_args()


def run_key(dataset: str, model: str, seed: int) -> str:
    return f"{dataset}/{model}/seed{seed}"


def dataset_config(args: argparse.Namespace, dataset: str, overrides: list[str]):
    base = [f"artifact_root={args.work_dir / dataset}", f"data.root={args.data_dir}", "train.progress=false"]
    if args.max_epochs:
        base.append(f"train.epochs={args.max_epochs}")
    if args.patience:
        base.append(f"train.patience={args.patience}")
    if args.threads:
        base.append(f"train.num_threads={args.threads}")
    return load_config(REPO_ROOT / "jobs" / "configs" / f"{dataset}.yaml", base + overrides)


def run_one(args: argparse.Namespace, dataset: str, model: str, seed: int) -> dict:
    if model == "popularity":  # deterministic: the seed changes nothing, but it keeps the table uniform
        config = dataset_config(args, dataset, [f"seed={seed}"])
        dataset_dir = config.artifact_path() / "dataset"
        info = load_dataset_info(dataset_dir)
        started = time.time()
        popularity = PopularityRecommender.fit(load_split(dataset_dir, "train", info.max_len), info.n_items)
        valid = evaluate_scorer(popularity.scores, load_split(dataset_dir, "valid", info.max_len), config.eval.ks)
        test = evaluate_scorer(popularity.scores, load_split(dataset_dir, "test", info.max_len), config.eval.ks)
        return {"valid": valid, "test": test, "num_parameters": 0, "seconds_per_epoch": time.time() - started,
                "epochs_run": 1, "best_epoch": 1}
    overrides = [f"seed={seed}", f"student.name={model}", f"train.run_name={model}-seed{seed}"]
    overrides += STUDENT_OVERRIDES.get(model, [])
    config = dataset_config(args, dataset, overrides)
    result = train_student(config)
    return {"valid": result.valid, "test": result.test, "num_parameters": result.num_parameters,
            "seconds_per_epoch": result.seconds_per_epoch, "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch, "params": config.student.params,
            "train": config.train.model_dump(mode="json")}


def summarise(runs: dict[str, dict]) -> list[dict]:
    rows = []
    for dataset in DATASETS:
        for model in MODELS:
            done = [run for key, run in runs.items() if key.startswith(f"{dataset}/{model}/")]
            if not done:
                continue
            row = {"dataset": dataset, "model": model, "seeds": len(done)}
            for metric in REPORTED:
                values = [run["test"][metric] for run in done]
                row[f"test_{metric}_mean"], row[f"test_{metric}_std"] = float(np.mean(values)), float(np.std(values))
            row["valid_ndcg_at_10_mean"] = float(np.mean([run["valid"]["ndcg_at_10"] for run in done]))
            row["num_parameters"] = done[0]["num_parameters"]
            row["seconds_per_epoch_mean"] = float(np.mean([run["seconds_per_epoch"] for run in done]))
            row["epochs_run_mean"] = float(np.mean([run["epochs_run"] for run in done]))
            rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| dataset | model | seeds | test HR@10 | test NDCG@10 | test MRR@10 | params | s/epoch | epochs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [f"{row[f'test_{m}_mean']:.4f} ± {row[f'test_{m}_std']:.4f}" for m in REPORTED]
        lines.append(f"| {row['dataset']} | {row['model']} | {row['seeds']} | " + " | ".join(cells)
                     + f" | {row['num_parameters']:,} | {row['seconds_per_epoch_mean']:.1f} | "
                     f"{row['epochs_run_mean']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    command = "python benchmarks/students.py " + shlex.join(sys.argv[1:])
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    runs: dict[str, dict] = report.get("runs", {})
    for dataset in args.datasets:
        if not (args.work_dir / dataset / "dataset" / "manifest.json").is_file():
            prepare_dataset(dataset_config(args, dataset, []))
    # seed-major order: an interrupted benchmark still has every dataset and model for the first seeds
    for seed in args.seeds:
        for dataset in args.datasets:
            for model in args.models:
                key = run_key(dataset, model, seed)
                if key in runs:
                    continue
                logging.info("benchmark run %s", key)
                runs[key] = run_one(args, dataset, model, seed)
                report = {
                    "benchmark": "students",
                    "commands": sorted(set(report.get("commands", [])) | {command}),
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                    "runs": runs,
                    "summary": summarise(runs),
                }
                atomic_write_json(args.out, report)
    rows = summarise(runs)
    print(json.dumps({"summary": rows}, indent=2))
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
