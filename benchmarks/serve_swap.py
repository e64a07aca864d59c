"""Benchmark: zero-downtime model swaps, counted. Rolling updates under a steady request stream, with Serve's
Python proxy (the default) or another ingress (e.g. --serve-env RAY_SERVE_ENABLE_HA_PROXY=1).

    python benchmarks/serve_swap.py --dataset-dir artifacts/bench-teacher-causal/amazon-scientific/dataset \
        --name python-proxy
    python benchmarks/serve_swap.py --dataset-dir artifacts/bench-teacher-causal/amazon-scientific/dataset \
        --name haproxy --serve-env RAY_SERVE_ENABLE_HA_PROXY=1

Two SASRec students with random weights (a swap does not depend on what the weights learned) are exported over the
dataset's item table. One is deployed; --threads clients (each one keep-alive connection, no retries, as
tests/test_serve.py's swap test) post real test histories to /recommend in a loop; every --interval-s the app is
redeployed with the other model (a rolling update), --swaps times. Every answer is counted by status, every failed
request by exception type, with its time after the latest swap. Loopback only; the run is bounded by --swaps and
--interval-s. The result goes under --name in --out (other entries are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from rdistill.artifacts import update_json_entry

# the sibling benchmark's helpers: run as a script, benchmarks/ is first on sys.path
from serve_load import REPO_ROOT, free_port, load_bodies, log


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", type=Path, required=True, help="a prepared dataset/ (items, test histories)")
    parser.add_argument("--name", required=True, help="the entry in --out, e.g. python-proxy or haproxy")
    parser.add_argument("--swaps", type=int, default=8)
    parser.add_argument("--interval-s", type=float, default=4.0, help="seconds between swaps (and after the last)")
    parser.add_argument("--threads", type=int, default=3, help="clients, each on its own keep-alive connection")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="a request slower than this fails")
    parser.add_argument("--serve-env", nargs="*", default=[], metavar="KEY=VALUE",
                        help="environment for the local Ray cluster, over rdistill's defaults")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "serve-swap.json")
    return parser.parse_args()


def export_random_students(dataset_dir: Path, folder: Path) -> list[Path]:
    import pyarrow.parquet as pq
    import torch

    from rdistill.data.dataset import load_dataset_info
    from rdistill.export import export_student
    from rdistill.models import build_student

    items = pq.read_table(dataset_dir / "items.parquet")
    max_len = load_dataset_info(dataset_dir).max_len
    dirs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = build_student("sasrec", n_items=items.num_rows, max_len=max_len,
                              params={"hidden_size": 64}).eval()
        dirs.append(export_student(model, items, folder / f"model-{seed}", metrics={}, config={"seed": seed},
                                   lineage={"source": f"random weights, seed {seed} (benchmarks/serve_swap.py)"}))
    return dirs


class Stream:
    """Client threads posting in a loop; (seconds since start at the send, seconds taken, status or exception
    name, model version) per request."""

    def __init__(self, url: str, bodies: list[bytes], threads: int, timeout_s: float):
        import httpx

        self.url, self.bodies, self.stop = url, bodies, threading.Event()
        self.results: list[tuple[float, float, int | str, str | None]] = []
        self.lock = threading.Lock()
        self.clients = [httpx.Client(timeout=timeout_s) for _ in range(threads)]
        self.threads = [threading.Thread(target=self.run, args=(c, n), daemon=True) for n, c in enumerate(self.clients)]
        self.start = time.perf_counter()

    def run(self, http, n: int) -> None:
        while not self.stop.is_set():
            body = self.bodies[n % len(self.bodies)]
            sent = time.perf_counter()
            try:
                response = http.post(self.url, content=body, headers={"content-type": "application/json"})
                outcome = response.status_code
                version = response.json()["model"]["version"] if outcome == 200 else None
            except Exception as err:  # noqa: BLE001 - a dropped connection is a failed request, named
                outcome, version = type(err).__name__, None
            with self.lock:
                self.results.append((sent - self.start, time.perf_counter() - sent, outcome, version))
            n += len(self.threads)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        for http in self.clients:
            http.close()


def main() -> None:
    args = parse_args()
    import ray
    from ray import serve

    from rdistill.export import load_exported
    from rdistill.ray_runtime import set_env_defaults
    from rdistill.serving import ServeSettings
    from rdistill.serving.app import build_app

    bodies = load_bodies(args.dataset_dir.resolve(), k=10)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    for assignment in args.serve_env:  # before ray.init: Serve's processes read these at start-up
        key, _, value = assignment.partition("=")
        os.environ[key] = value
    set_env_defaults()
    started = time.time()
    with tempfile.TemporaryDirectory() as folder:
        model_dirs = export_random_students(args.dataset_dir.resolve(), Path(folder))
        versions = [load_exported(d).version for d in model_dirs]
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})

        def deploy(model_dir: Path) -> None:
            settings = ServeSettings(model_dir=str(model_dir), max_batch_size=8, batch_wait_timeout_s=0.005)
            serve.run(build_app(settings, num_replicas=1, max_ongoing_requests=16, num_cpus_per_replica=0.25),
                      name="swap", route_prefix="/swap")

        swap_times = []
        try:
            deploy(model_dirs[0])
            with Stream(f"http://127.0.0.1:{port}/swap/recommend", bodies, args.threads, args.timeout_s) as stream:
                for swap in range(args.swaps):
                    time.sleep(args.interval_s)
                    log(f"swap {swap + 1}/{args.swaps}")
                    swap_times.append(time.perf_counter() - stream.start)
                    deploy(model_dirs[(swap + 1) % 2])
                time.sleep(args.interval_s)
        finally:
            serve.shutdown()
            ray.shutdown()

    outcomes = Counter(str(outcome) for _, _, outcome, _ in stream.results)

    def since_swap(sent: float) -> float:
        return round(sent - max([s for s in swap_times if s <= sent], default=0.0), 2)

    # failed requests, and answers slower than one second: (sent, seconds after the latest swap, seconds taken)
    slow_or_failed = [{"sent_s": round(sent, 2), "after_swap_s": since_swap(sent), "took_s": round(took, 2),
                       "outcome": outcome} for sent, took, outcome, _ in stream.results if outcome != 200 or took > 1]
    took_ms = sorted(took * 1000 for _, took, outcome, _ in stream.results if outcome == 200)
    entry = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "serve_env": {key: os.environ[key] for key in sorted(os.environ) if key.startswith("RAY_SERVE_")},
        "swaps": args.swaps, "interval_s": args.interval_s, "client_threads": args.threads,
        "requests": len(stream.results), "outcomes": dict(outcomes),
        "failed": sum(1 for row in slow_or_failed if row["outcome"] != 200),
        "answered_ms": {"p50": round(took_ms[len(took_ms) // 2], 1), "p99": round(took_ms[int(len(took_ms) * 0.99)], 1),
                        "max": round(took_ms[-1], 1)} if took_ms else None,
        "slow_or_failed": slow_or_failed,
        "versions_answered": {version[:12]: sum(1 for *_, v in stream.results if v == version) for version in versions},
        "wall_s": round(time.time() - started, 1),
    }
    update_json_entry(args.out, args.name, entry)
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
