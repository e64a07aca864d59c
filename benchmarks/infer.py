"""Benchmark: teacher-signal inference with Ray Data against a plain single-process torch loop.

    python benchmarks/infer.py --dataset amazon-scientific --batch-size 256 --actors 2

Both sides score the same train rows with the same MiniLM teacher (a freshly initialised one by default: speed
does not depend on the weights; --teacher-dir uses a trained one) on the same cores, do the same work per batch
(full-catalogue scores, history masked, top-K, user vectors, Arrow conversion, one Parquet file) and are measured
in one run. The single-process loop uses every core for torch's intra-op threads; Ray Data runs `--actors` actors
with `cpus_per_actor` CPUs and `max(1, floor(cpus_per_actor))` threads each. Reports rows/s of each and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from rdistill.artifacts import update_json_entry
from rdistill.config import load_config
from rdistill.data.dataset import load_dataset_info, pad_histories
from rdistill.data.prepare import prepare_dataset
from rdistill.data.schema import read_table

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-scientific",
                        choices=["amazon-scientific", "ml-latest-small", "amazon-beauty"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--cpus-per-actor", type=float, default=0.5)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--teacher-dir", type=Path, default=None, help="a trained teacher/checkpoint to use")
    parser.add_argument("--data-dir", default=os.environ.get("RDISTILL_DATA_DIR", str(REPO_ROOT.parent / "shared" / "data")))
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "artifacts" / "bench-infer")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "infer.json")
    return parser.parse_args()


def single_process_rows_per_second(config, checkpoint_dir: Path, out_file: Path) -> tuple[float, int]:
    from rdistill.models.lm_teacher import load_teacher
    from rdistill.teacher.infer import signals_table, teacher_signals_batch
    from rdistill.teacher.signals import TOPK_SCHEMA

    torch.set_num_threads(os.cpu_count() or 1)
    teacher, _ = load_teacher(checkpoint_dir)
    info = load_dataset_info(config.artifact_path() / "dataset")
    table = read_table(config.artifact_path() / "dataset", "train").select(["row_id", "history"])
    item_table = teacher.item_embeddings().detach()
    started = time.time()
    with pq.ParquetWriter(out_file, TOPK_SCHEMA) as writer:
        for start in range(0, table.num_rows, config.infer.batch_size):
            batch = table.slice(start, config.infer.batch_size)
            history = torch.from_numpy(pad_histories(batch.column("history"), info.max_len))
            signals = teacher_signals_batch(teacher, history, item_table, config.infer.top_k, True, [])
            writer.write_table(signals_table(batch.column("row_id").combine_chunks(), signals, []))
    return table.num_rows / (time.time() - started), table.num_rows


def main() -> int:
    args = parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    root = args.work_dir / args.dataset
    config = load_config(REPO_ROOT / "jobs" / "configs" / f"{args.dataset}.yaml", [
        f"artifact_root={root}", f"data.root={args.data_dir}", "infer.progress=false",
        f"infer.batch_size={args.batch_size}", f"infer.num_actors={args.actors}",
        f"infer.cpus_per_actor={args.cpus_per_actor}", f"infer.top_k={args.top_k}",
    ])
    if not (root / "dataset" / "manifest.json").is_file():
        prepare_dataset(config)
    checkpoint_dir = root / "teacher" / "checkpoint"
    if args.teacher_dir:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        shutil.copytree(args.teacher_dir, checkpoint_dir)
    elif not checkpoint_dir.is_dir():
        from rdistill.models.lm_teacher import build_teacher, save_teacher

        torch.manual_seed(0)
        info = load_dataset_info(root / "dataset")
        teacher, tokenizer = build_teacher(config.teacher.architecture(), read_table(root / "dataset", "items"),
                                           info.max_len, progress=True)
        save_teacher(teacher, tokenizer, checkpoint_dir)

    single, rows = single_process_rows_per_second(config, checkpoint_dir, root / "single-process-topk.parquet")

    import ray

    from rdistill.teacher.infer import infer_teacher

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    result = infer_teacher(config, force=True)  # rows/s of the Ray Data stage itself (Ray start-up excluded)
    ray.shutdown()
    report = {
        "dataset": args.dataset, "rows": rows, "cpus": os.cpu_count(), "batch_size": args.batch_size,
        "actors": args.actors, "cpus_per_actor": args.cpus_per_actor, "top_k": args.top_k,
        "teacher": str(args.teacher_dir) if args.teacher_dir else "minilm, untrained (speed does not depend on weights)",
        "single_process_rows_per_s": single, "ray_data_rows_per_s": result.rows_per_second,
        "ratio": result.rows_per_second / single,
        "note": "Ray Data timing includes actor start-up (each loads the teacher) and the streamed Parquet write; "
                "the single-process loop times scoring and writing only",
        "command": "python benchmarks/infer.py " + shlex.join(sys.argv[1:]),
    }
    update_json_entry(args.out, f"{args.dataset}/batch{args.batch_size}/actors{args.actors}", report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
