"""Benchmark: wall time of every stage of `rdistill run` (goal for the quick profile: ≤ 20 minutes on 2 CPU cores).

    python benchmarks/pipeline.py --dataset ml-latest-small --profile quick

Runs the real command (`python -m rdistill.cli run --profile ... --serve`) in a fresh work folder, so nothing is
skipped, and reads the stage times from the pipeline.json it writes. The command's own wall time (Python and Ray
start-up, the endpoint answering one sample request) is reported as well. The JSON is printed and merged into
--out under "<dataset>/<profile>" with the exact command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from rdistill.artifacts import update_json_entry

REPO_ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS = {"quick": 20 * 60}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-latest-small",
                        choices=["ml-latest-small", "amazon-scientific", "amazon-beauty"])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--data-dir", default=os.environ.get("RDISTILL_DATA_DIR", str(REPO_ROOT.parent / "shared" / "data")))
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "artifacts" / "bench-pipeline")
    parser.add_argument("--keep", action="store_true", help="reuse the work folder (stages already done are skipped)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "pipeline.json")
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    args = parse_args()
    root = args.work_dir / f"{args.dataset}-{args.profile}"
    if root.exists() and not args.keep:
        shutil.rmtree(root)
    command = [sys.executable, "-m", "rdistill.cli", "run",
               "--config", str(REPO_ROOT / "jobs" / "configs" / f"{args.dataset}.yaml"),
               "--profile", args.profile, "--serve", "--port", str(free_port()),
               f"artifact_root={root}", f"data.root={args.data_dir}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    print(f"running: {shlex.join(command)}", file=sys.stderr, flush=True)
    started = time.time()
    process = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    wall = time.time() - started
    if process.returncode != 0:
        print(f"the pipeline failed (exit {process.returncode}); see its output above", file=sys.stderr)
        return process.returncode
    # Ray Tune prints its trial tables to stdout too: the command's JSON summary is the last thing printed
    summary, _ = json.JSONDecoder().raw_decode(process.stdout[process.stdout.rindex('{\n  "stages"'):])
    state = json.loads((root / "pipeline.json").read_text())
    stages = {stage: record["seconds"] for stage, record in state.items()}
    stages["serve"] = next((round(s["seconds"], 1) for s in summary["stages"] if s["stage"] == "serve"), None)
    goal = GOAL_SECONDS.get(args.profile)
    report = {
        "command": "python benchmarks/pipeline.py " + shlex.join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_end": list(os.getloadavg())},
        "stage_seconds": stages,
        "stages_total_seconds": round(sum(v for v in stages.values() if v is not None), 1),
        "command_wall_seconds": round(wall, 1),
        "goal_seconds": goal,
        "goal_met": None if goal is None else wall <= goal,
        "stage_results": {s["stage"]: {k: v for k, v in s.items() if k not in ("stage", "status", "seconds")}
                          for s in summary["stages"]},
        "sample": summary.get("sample"),
    }
    update_json_entry(args.out, f"{args.dataset}/{args.profile}", report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
