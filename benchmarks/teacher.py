"""Benchmark the language-model teacher: quality beside the students, and DeepSpeed-under-Ray throughput.

    python benchmarks/teacher.py quality --dataset amazon-scientific --mode items
    python benchmarks/teacher.py throughput --dataset amazon-scientific --steps 40 --batch-size 32
    python benchmarks/teacher.py quality --dataset amazon-scientific --name causal \
        --work-dir artifacts/bench-teacher-causal teacher.causal=true teacher.objective=all_positions

quality: trains the MiniLM teacher with `rdistill teacher train` (Ray Train + DeepSpeed) and reports validation
and test HR@10 / NDCG@10 and seconds per epoch, beside popularity and SASRec taken from the students benchmark
(benchmarks/results/students.json) when present.

throughput: the same teacher, batch and cores, measured in one run: (a) a plain single-process torch loop,
(b) DeepSpeed under Ray Train with N workers; reports training samples/s of each and their ratio. Validation is
excluded from both. Results are merged into the --out JSON with the exact command.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rdistill.artifacts import update_json_entry
from rdistill.config import load_config
from rdistill.data.dataset import load_dataset_info, load_split
from rdistill.data.prepare import prepare_dataset
from rdistill.data.schema import read_table

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["quality", "throughput"])
    parser.add_argument("--dataset", default="amazon-scientific",
                        choices=["amazon-scientific", "ml-latest-small", "amazon-beauty"])
    parser.add_argument("--mode", default="items", choices=["items", "text"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="throughput: optimizer steps per measurement")
    parser.add_argument("--batch-size", type=int, default=32, help="per worker (and of the single-process loop)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", default=os.environ.get("RDISTILL_DATA_DIR", str(REPO_ROOT.parent / "shared" / "data")))
    parser.add_argument("--name", default="",
                        help="a variant's name: results go to the key quality/<dataset>/<mode>/<name>")
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "artifacts" / "bench-teacher")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "teacher.json")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, key.sub=value")
    return parser.parse_intermixed_args()


def config_for(args: argparse.Namespace, *extra: str):
    return load_config(REPO_ROOT / "jobs" / "configs" / f"{args.dataset}.yaml", [
        f"artifact_root={args.work_dir / args.dataset}", f"data.root={args.data_dir}", "train.progress=false",
        f"teacher.mode={args.mode}", f"teacher.epochs={args.epochs}", f"teacher.batch_size={args.batch_size}",
        f"teacher.num_workers={args.workers}", *extra, *args.overrides,
    ])


def ensure_dataset(config) -> Path:
    dataset_dir = config.artifact_path() / "dataset"
    if not (dataset_dir / "manifest.json").is_file():
        prepare_dataset(config)
    return dataset_dir


def quality(args: argparse.Namespace) -> dict:
    from rdistill.teacher.train import train_teacher

    config = config_for(args)
    ensure_dataset(config)
    result = train_teacher(config)
    metrics = json.loads((result.checkpoint_dir / "metrics.json").read_text())
    report = {
        "dataset": args.dataset, "mode": args.mode, "seed": config.seed, "best_epoch": result.best_epoch,
        "valid": {k: metrics["valid"][k] for k in ("hr_at_10", "ndcg_at_10")},
        "test": {k: metrics["test"][k] for k in ("hr_at_10", "ndcg_at_10")},
        "seconds_per_epoch": float(np.mean([row["epoch_seconds"] for row in metrics["history"]])),
        "num_parameters": metrics["num_parameters"], "teacher": config.teacher.model_dump(mode="json"),
    }
    students = REPO_ROOT / "benchmarks" / "results" / "students.json"
    if students.is_file():
        summary = json.loads(students.read_text()).get("summary", [])
        report["baselines"] = {row["model"]: {"test_hr_at_10": row["test_hr_at_10_mean"],
                                              "test_ndcg_at_10": row["test_ndcg_at_10_mean"], "seeds": row["seeds"]}
                               for row in summary if row["dataset"] == args.dataset}
    return report


def single_process_samples_per_second(config, dataset_dir: Path, steps: int, batch_size: int) -> float:
    """The reference: one process, all cores, the same teacher, optimizer and batch, no Ray, no DeepSpeed."""
    from rdistill.models.lm_teacher import build_teacher
    from rdistill.teacher.train import item_text_vectors

    info = load_dataset_info(dataset_dir)
    teacher, _ = build_teacher(config.teacher.architecture(), read_table(dataset_dir, "items"), info.max_len,
                               torch.from_numpy(item_text_vectors(config, dataset_dir)))
    teacher.train()
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=config.teacher.lr_backbone)
    train = load_split(dataset_dir, "train", info.max_len)
    batches = train.batches(batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    for step, (history, target) in enumerate(batches):
        if step == 2:  # two warm-up steps
            started = time.time()
        if step == steps + 2:
            break
        loss = teacher(history, target)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(teacher.parameters(), config.teacher.grad_clip)
        optimizer.step()
    return steps * batch_size / (time.time() - started)


def throughput(args: argparse.Namespace) -> dict:
    from rdistill.teacher.train import train_teacher

    # its own folder: a short throughput run must never replace the quality run's teacher (whose signals
    # benchmarks/distill.py uses)
    args.work_dir = args.work_dir / "throughput"
    config = config_for(args, f"teacher.max_steps_per_epoch={args.steps}", "teacher.epochs=1",
                        "teacher.max_eval_rows=64")
    dataset_dir = ensure_dataset(config)
    # a fresh run every time: the run's name comes from its config, so a kept folder would resume the last
    # measurement's finished run instead of training
    shutil.rmtree(config.artifact_path() / "teacher", ignore_errors=True)
    torch.set_num_threads(os.cpu_count() or 1)
    # the same samples per optimizer step on both sides
    single_batch = args.batch_size * args.workers * config.teacher.gradient_accumulation_steps
    # the single-process loop runs before and after the Ray run (with Ray shut down), so a drift in the
    # machine's speed during the measurement shows up as a spread instead of skewing the ratio
    single_before = single_process_samples_per_second(config, dataset_dir, args.steps, single_batch)
    result = train_teacher(config)
    import ray
    ray.shutdown()
    single_after = single_process_samples_per_second(config, dataset_dir, args.steps, single_batch)
    single = (single_before + single_after) / 2
    history = json.loads((result.checkpoint_dir / "metrics.json").read_text())["history"]
    # rank 0's training steps after its first one (Ray Data start-up, warm-up and validation excluded), times
    # the number of workers: every worker runs the same number of equal-sized steps in lockstep
    distributed = history[0]["worker_samples_per_second"] * args.workers
    return {
        "dataset": args.dataset, "mode": args.mode, "steps": args.steps, "batch_size_per_worker": args.batch_size,
        "gradient_accumulation_steps": config.teacher.gradient_accumulation_steps,
        "workers": args.workers, "cpus": os.cpu_count(), "zero_stage": config.teacher.zero_stage,
        "single_process_samples_per_s": single,
        "single_process_samples_per_s_before_after": [single_before, single_after],
        "ray_deepspeed_samples_per_s": distributed,
        "ratio": distributed / single,
        "note": "both exclude start-up: the single-process loop skips two warm-up steps, the Ray workers their "
                "first step; the single-process rate is the mean of a run before and one after the Ray run",
    }


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    report = quality(args) if args.what == "quality" else throughput(args)
    report["command"] = "python benchmarks/teacher.py " + shlex.join(sys.argv[1:])
    entry = "/".join([args.what, args.dataset, args.mode] + ([args.name] if args.name else []))
    update_json_entry(args.out, entry, report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
