"""Benchmark: per-request scoring latency and size of the students against the teacher, in torch and in ONNX Runtime.

    python benchmarks/latency.py --dataset-dir artifacts/bench-teacher-causal/ml-latest-small/dataset \
        --models artifacts/bench-teacher-causal/ml-latest-small/serving/model \
                 artifacts/bench-teacher-causal/ml-latest-small/students/bench-distill-caser-seed0

One real history (the longest of the test split's first 200, up to max_len items) scored against the whole
catalogue, in-process, on one thread, median milliseconds (rdistill/tradeoff.py, the measure `rdistill tune` and
`rdistill report` use). Each model is timed twice: torch eager, and its ONNX graph under ONNX Runtime (the export
writes the graph; a saved student without one is exported to a temporary folder first). The teacher is the default
all-MiniLM-L6-v2 in items mode, timed the same two ways, plus text mode (prompts of item titles) in torch for
reference: its tokenizer runs in Python, so text mode has no graph. Ratios are given within each runtime (the
same runtime for both models) and for the student as served (ONNX) against the teacher in torch.
Prints the JSON and writes it to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset-dir", type=Path, required=True, help="the prepared dataset/ (items, test split)")
    parser.add_argument("--models", type=Path, nargs="+", required=True,
                        help="exported models (serving/model/) or saved students (students/<run>/)")
    parser.add_argument("--skip-teacher", action="store_true", help="time the students only")
    parser.add_argument("--repeats", type=int, default=300, help="timed calls per student and runtime")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "latency.json")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"[latency {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def time_both(model, folder: Path | None, history: list[int], repeats: int, budget_s: float) -> dict[str, float]:
    from rdistill.tradeoff import history_latency_ms

    return {f"{runtime}_ms": history_latency_ms(model, history, runtime, folder, repeats, budget_s)[0]
            for runtime in ("torch", "onnx")}


def measure(dataset_dir: Path, model_dirs: list[Path], skip_teacher: bool = False, repeats: int = 300
            ) -> dict:
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoConfig

    from rdistill.config import TeacherParams
    from rdistill.models.lm_teacher import build_teacher, resolve_backbone_path
    from rdistill.tradeoff import scoring_latency_ms, time_saved_model

    result: dict = {"threads": 1, "students": []}
    history = None
    for folder in model_dirs:  # loaded from the folder and timed the way rdistill report does
        log(f"student {folder.name}")
        timed = time_saved_model(folder, history, dataset_dir / "test.parquet", ("torch", "onnx"), repeats, 60.0)
        if history is None:
            history = timed.history
            result["history_length"] = len(history)
        model = timed.saved.model
        name = f"{timed.saved.name} ({folder.name})" if timed.saved.kind == "export" else folder.name
        result["students"].append({"name": name, "model": model.name, "parameters": model.num_parameters(),
                                   "torch_ms": timed.ms["torch"], "onnx_ms": timed.ms["onnx"]})
    if skip_teacher:
        return result
    # Item text vectors only fill a frozen buffer: random ones of the right width time the same as encoded
    # ones (and skip encoding the whole catalogue); they are not parameters, so the count is unaffected too.
    params = TeacherParams()  # the default: all-MiniLM-L6-v2, items mode
    width = AutoConfig.from_pretrained(str(resolve_backbone_path(params.model)),
                                       local_files_only=True).hidden_size
    items = pq.read_table(dataset_dir / "items.parquet")
    vectors = torch.randn(items.num_rows + 1, width)
    log("teacher, items mode")
    teacher, _ = build_teacher(params, items, model.max_len, item_text_vectors=vectors)
    result["teacher"] = {"model": params.model, "mode": params.mode, "parameters": teacher.num_parameters(),
                         **time_both(teacher, None, history, 30, 120.0)}
    log("teacher, text mode (torch)")
    text_params = TeacherParams(mode="text")
    text_teacher, _ = build_teacher(text_params, items, model.max_len, item_text_vectors=vectors)
    result["teacher_text_mode"] = {
        "parameters": text_teacher.num_parameters(), "prompt_max_tokens": text_params.prompt_max_tokens,
        "torch_ms": scoring_latency_ms(text_teacher, history, repeats=10, budget_s=120.0)}
    teacher = result["teacher"]
    for student in result["students"]:
        student["over_teacher"] = {
            "parameters": round(student["parameters"] / teacher["parameters"], 4),
            "latency_torch": round(student["torch_ms"] / teacher["torch_ms"], 4),
            "latency_onnx": round(student["onnx_ms"] / teacher["onnx_ms"], 4),
            "latency_served_vs_teacher_torch": round(student["onnx_ms"] / teacher["torch_ms"], 4),
            "latency_served_vs_text_teacher": round(student["onnx_ms"] / result["teacher_text_mode"]["torch_ms"],
                                                    4)}
    return result


def main() -> None:
    args = parse_args()
    started = time.time()
    report = {"command": shlex.join([Path(sys.executable).name, *sys.argv]),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
              **measure(args.dataset_dir.resolve(), [d.resolve() for d in args.models], args.skip_teacher,
                        args.repeats)}
    report["goals"] = {"latency_goal": 0.01, "parameters_goal": 0.05}
    report["wall_s"] = round(time.time() - started, 1)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
