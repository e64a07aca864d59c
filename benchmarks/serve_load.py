"""Benchmark: the Ray Serve endpoint against a bare single-process uvicorn app, the student against the teacher,
and autoscaling under a load step. Loopback only; every phase is capped in requests and seconds.

    python benchmarks/serve_load.py --model-dir artifacts/bench-serve/serving/model \
        --dataset-dir artifacts/bench-serve/dataset --duration-s 6 --requests 1200

Phases:
1. for each --replicas count, Ray Serve and the bare app (rdistill.serving.bare_fastapi_app under uvicorn, one
   process, one torch thread) take turns, phase by phase, so both see the same background load:
   a. open loop at each --rates (requests/s on a fixed schedule, at most --concurrency in flight): p50/p95/p99
      latency measured from each request's *scheduled* send time (a server that falls behind cannot hide its
      queueing by slowing the generator down: no coordinated omission), and the achieved throughput;
   b. closed loop, --concurrency clients as fast as they can: the saturation throughput;
2. autoscaling: a deployment with min 1 / max 4 replicas under low -> high -> low load; running replicas every
   0.5 s;
3. in-process, one thread: the student's and the teacher's (all-MiniLM-L6-v2, items mode; text mode for reference)
   latency to score one real history against the full catalogue, in torch and in ONNX Runtime, and their
   parameter counts (benchmarks/latency.py).

Histories are real: the test split of the prepared dataset, as item ids. The load generator (aiohttp) runs in
this process and shares the machine's cores with the servers: absolute numbers are lower bounds. Ray starts its
workers at nice 15 by default; the benchmark starts them at nice 0 (--ray-worker-niceness) so that Serve's proxy
and replicas run at the same priority as the uvicorn process they are compared with.
Writes the JSON (with the exact command) to --out after every phase and prints it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="an exported model (serving/model/)")
    parser.add_argument("--dataset-dir", type=Path, required=True, help="the prepared dataset/ (test histories)")
    parser.add_argument("--rates", type=float, nargs="+", default=[50, 100, 200], help="open-loop requests/s")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at most")
    parser.add_argument("--requests", type=int, default=1500, help="cap on requests per phase")
    parser.add_argument("--duration-s", type=float, default=10.0, help="cap on seconds per phase")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="Ray Serve replica counts, phases 1-2")
    parser.add_argument("--ray-worker-niceness", type=int, default=0,
                        help="Ray starts workers at nice 15 by default, which on a shared machine starves the proxy "
                             "and replicas against a nice-0 uvicorn; 0 runs both servers at the same priority")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.002)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--runtime", choices=["auto", "onnx", "torch"], default="auto",
                        help="what scores, in Serve and in the bare app alike (ServeSettings.runtime)")
    parser.add_argument("--skip-teacher", action="store_true", help="do not build and time the teacher")
    parser.add_argument("--skip-autoscaling", action="store_true")
    parser.add_argument("--serve-env", nargs="*", default=[], metavar="KEY=VALUE",
                        help="environment for the local Ray cluster, over rdistill's defaults "
                             "(rdistill.ray_runtime.RAY_ENV_DEFAULTS), e.g. RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=1")
    parser.add_argument("--access-log", action="store_true",
                        help="keep Serve's per-request access log on (rdistill's default is off)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "serve.json")
    return parser.parse_args()


def log(message: str) -> None:
    print(f"[serve_load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_bodies(dataset_dir: Path, k: int, limit: int = 5000) -> list[bytes]:
    """Request bodies from the test split's histories, as the item ids a client would send."""
    import pyarrow.parquet as pq

    items = pq.read_table(dataset_dir / "items.parquet", columns=["item_idx", "item_id"])
    item_id = dict(zip(items.column("item_idx").to_pylist(), items.column("item_id").to_pylist()))
    histories = pq.read_table(dataset_dir / "test.parquet", columns=["history"]).column("history").to_pylist()
    return [json.dumps({"history": [item_id[i] for i in history], "k": k}).encode()
            for history in histories[:limit] if history]


# ---------------------------------------------------------------------------------------------------- load


def summarize(latencies_s: list[float], errors: int, wall_s: float) -> dict:
    ms = np.array(latencies_s) * 1000.0
    done = len(latencies_s)
    return {
        "requests": done + errors, "errors": errors, "wall_s": round(wall_s, 3),
        "throughput_rps": round(done / wall_s, 1) if wall_s > 0 else 0.0,
        **({f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)} if done else {}),
        "mean_ms": round(float(ms.mean()), 2) if done else None,
    }


REQUEST_TIMEOUT_S = 10.0  # a request slower than this counts as an error; it also bounds every phase


async def post(session, url: str, body: bytes) -> bool:
    """One request; False on a non-200 answer, a connection error or a timeout."""
    import aiohttp

    try:
        async with session.post(url, data=body, headers={"content-type": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as response:
            await response.read()
            return response.status == 200
    except (TimeoutError, aiohttp.ClientError):
        return False


async def open_loop(url: str, bodies: list[bytes], rate: float, concurrency: int, max_requests: int,
                    duration_s: float) -> dict:
    """Requests on a fixed schedule (i / rate); at most `concurrency` in flight; latency from the schedule."""
    import aiohttp

    n = min(max_requests, int(rate * duration_s))
    latencies, errors = [], 0
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        start = time.perf_counter()
        give_up = start + n / rate + REQUEST_TIMEOUT_S  # a server that falls behind cannot stretch the phase

        async def one(i: int) -> None:
            nonlocal errors
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            async with gate:
                ok = time.perf_counter() < give_up and await post(session, url, bodies[i % len(bodies)])
            if ok:
                latencies.append(time.perf_counter() - scheduled)
            else:
                errors += 1

        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - start
    return {"rate_rps": rate, **summarize(latencies, errors, wall)}


async def closed_loop(url: str, bodies: list[bytes], concurrency: int, max_requests: int, duration_s: float) -> dict:
    """`concurrency` clients, each sending its next request when the last one is answered."""
    import aiohttp

    latencies, errors, counter = [], 0, iter(range(max_requests))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        start = time.perf_counter()
        deadline = start + duration_s

        async def client() -> None:
            nonlocal errors
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                sent = time.perf_counter()
                ok = await post(session, url, bodies[i % len(bodies)])
                if ok:
                    latencies.append(time.perf_counter() - sent)
                else:
                    errors += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"concurrency": concurrency, **summarize(latencies, errors, wall)}


async def wait_until_up(url: str, timeout_s: float = 120) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise TimeoutError(f"{url} did not come up in {timeout_s}s")


def compare_servers(servers: dict[str, str], bodies: list[bytes], args) -> dict:
    """Every phase runs on each server in turn, back to back, so both see the same background load (this
    machine is shared): open loop at each rate, then the closed loop."""

    async def run() -> dict:
        results = {name: {"open_loop": []} for name in servers}
        for name, base in servers.items():
            await wait_until_up(f"{base}/healthz")
            await closed_loop(f"{base}/recommend", bodies, args.concurrency, 200, 5)  # warm-up
        for rate in args.rates:
            for name, base in servers.items():
                result = await open_loop(f"{base}/recommend", bodies, rate, args.concurrency, args.requests,
                                         args.duration_s)
                results[name]["open_loop"].append(result)
                log(f"{name} open loop: {result}")
        for name, base in servers.items():
            result = await closed_loop(f"{base}/recommend", bodies, args.concurrency, args.requests, args.duration_s)
            results[name]["closed_loop"] = result
            log(f"{name} closed loop: {result}")
        return results

    return asyncio.run(run())


# ---------------------------------------------------------------------------------------------------- servers


def start_bare(model_dir: Path, runtime: str) -> tuple[subprocess.Popen, str]:
    """The same student behind a plain FastAPI app in one uvicorn process, one torch thread, no batching.

    One thread, not two: with other busy processes on the machine, torch's OpenMP threads spin against each
    other and a forward pass that takes 3 ms on one thread took ~1 s on two (measured while writing this)."""
    port = free_port()
    code = ("import uvicorn; from rdistill.serving import ServeSettings, bare_fastapi_app; "
            f"uvicorn.run(bare_fastapi_app(ServeSettings(model_dir={str(model_dir)!r}, torch_threads=1, "
            f"runtime={runtime!r})), "
            f"host='127.0.0.1', port={port}, log_level='warning')")
    return subprocess.Popen([sys.executable, "-c", code]), f"http://127.0.0.1:{port}"


def bench_servers(args, bodies: list[bytes]) -> tuple[list[dict], dict | None]:
    """For each Ray Serve replica count: Serve and the bare app under the same phases, interleaved; then an
    autoscaling deployment under a load step."""
    import ray
    from ray import serve

    from rdistill.serving import ServeSettings
    from rdistill.serving.app import build_app

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["RAY_worker_niceness"] = str(args.ray_worker_niceness)
    for assignment in args.serve_env:  # before ray.init: Serve's processes read these at start-up
        key, _, value = assignment.partition("=")
        os.environ[key] = value
    from rdistill.ray_runtime import set_env_defaults

    set_env_defaults()  # what `rdistill serve` runs with (proxy patience, Serve switches)
    bare, bare_url = start_bare(args.model_dir, args.runtime)
    # "local": a cluster of our own, never one another process left running on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
    settings = ServeSettings(model_dir=str(args.model_dir), max_batch_size=args.max_batch_size,
                             batch_wait_timeout_s=args.batch_wait_timeout_s, torch_threads=1,
                             runtime=args.runtime)
    serve_url = f"http://127.0.0.1:{port}"
    try:
        comparisons = []
        for replicas in args.replicas:
            log(f"Ray Serve with {replicas} replicas against bare uvicorn")
            # 0.5 CPU each: CPUs are only Ray's bookkeeping here, and a rolling update needs room for both sets
            serve.run(build_app(settings, num_replicas=replicas, max_ongoing_requests=32, num_cpus_per_replica=0.5),
                      name="bench", route_prefix="/", logging_config={"enable_access_log": args.access_log})
            results = compare_servers({"bare_uvicorn": bare_url, "ray_serve": serve_url}, bodies, args)
            comparisons.append({
                "replicas": replicas,
                "ray_serve_setup": f"{replicas} replicas x 1 torch thread, max_batch_size {args.max_batch_size}, "
                                   f"batch_wait_timeout_s {args.batch_wait_timeout_s}, nice {args.ray_worker_niceness}",
                "bare_setup": "uvicorn, 1 process, 1 torch thread, no batching, nice 0",
                **results,
                "serve_over_bare_throughput": round(results["ray_serve"]["closed_loop"]["throughput_rps"]
                                                    / max(results["bare_uvicorn"]["closed_loop"]["throughput_rps"], 1e-9), 3),
            })
        bare.terminate()
        log("autoscaling")
        scaling = None if args.skip_autoscaling else autoscaling_step(serve, settings, serve_url, bodies, args)
        return comparisons, scaling
    finally:
        bare.terminate()
        bare.wait(timeout=30)
        serve.shutdown()
        ray.shutdown()


def replica_states(serve, app_name: str) -> dict[str, int]:
    """Replicas by state, e.g. {"RUNNING": 1, "STARTING": 3}: STARTING shows when the autoscaler decided."""
    app = serve.status().applications.get(app_name)
    states: dict[str, int] = {}
    for deployment in (app.deployments.values() if app else []):
        for state, count in deployment.replica_states.items():
            states[str(getattr(state, "value", state))] = states.get(str(getattr(state, "value", state)), 0) + count
    return states


def autoscaling_step(serve, settings, base: str, bodies: list[bytes], args) -> dict:
    """min 1, max 4 replicas; 8 s at 10 requests/s, 25 s of 32 closed-loop clients, 20 s at 10 requests/s."""
    from rdistill.serving.app import build_app

    autoscaling = {"min_replicas": 1, "max_replicas": 4, "initial_replicas": 1, "target_ongoing_requests": 2,
                   "upscale_delay_s": 2, "downscale_delay_s": 10, "metrics_interval_s": 0.5,
                   "look_back_period_s": 2}
    serve.run(build_app(settings, autoscaling_config=autoscaling, max_ongoing_requests=32,
                        num_cpus_per_replica=0.5), name="bench", route_prefix="/",
              logging_config={"enable_access_log": args.access_log})
    timeline, phase = [], {"name": "low"}
    start = time.perf_counter()

    async def sample() -> None:
        while phase["name"] != "done":
            states = await asyncio.to_thread(replica_states, serve, "bench")
            timeline.append({"t_s": round(time.perf_counter() - start, 1), "phase": phase["name"],
                             "running_replicas": states.get("RUNNING", 0), "replica_states": states})
            await asyncio.sleep(0.5)

    async def run() -> dict:
        url = f"{base}/recommend"
        await wait_until_up(f"{base}/healthz")
        sampler = asyncio.create_task(sample())
        low1 = await open_loop(url, bodies, 10, 4, 80, 8)
        phase["name"] = "high"
        high = await closed_loop(url, bodies, 32, 100_000, 25)
        phase["name"] = "low"
        low2 = await open_loop(url, bodies, 10, 4, 200, 20)
        phase["name"] = "done"
        await sampler
        return {"low_before": low1, "high": high, "low_after": low2}

    phases = asyncio.run(run())
    counts = [point["running_replicas"] for point in timeline]
    first = lambda test: next((p["t_s"] for p in timeline if test(p)), None)
    high_start = first(lambda p: p["phase"] == "high")
    return {"autoscaling_config": autoscaling, "phases": phases, "max_replicas_seen": max(counts),
            "replicas_at_end": counts[-1],
            "high_load_from_s": high_start,
            "first_upscale_decision_s": first(lambda p: sum(p["replica_states"].values()) > 1),
            "first_extra_replica_running_s": first(lambda p: p["running_replicas"] > 1),
            "timeline": timeline}


# ---------------------------------------------------------------------------------------------------- models


def bench_models(args) -> dict:
    """The served student against the teacher in-process (benchmarks/latency.py: torch and ONNX Runtime)."""
    from latency import measure  # the sibling script: run as a script, benchmarks/ is first on sys.path

    return measure(args.dataset_dir, [args.model_dir], skip_teacher=args.skip_teacher, repeats=200)


# ---------------------------------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args()
    args.model_dir, args.dataset_dir = args.model_dir.resolve(), args.dataset_dir.resolve()
    bodies = load_bodies(args.dataset_dir, args.k)
    started = time.time()
    report = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "request_bodies": len(bodies),
    }
    def save(complete: bool) -> None:  # after every phase, so a cut-off run still leaves its numbers
        report["complete"] = complete
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")

    report["comparisons"], report["autoscaling"] = bench_servers(args, bodies)
    report["ray_serve_env"] = {key: os.environ.get(key) for key in sorted(os.environ) if key.startswith("RAY_SERVE_")}
    save(False)
    log("student and teacher in-process")
    report["models"] = bench_models(args)

    best = max(report["comparisons"], key=lambda run: run["serve_over_bare_throughput"])
    at_100 = next((r for r in best["ray_serve"]["open_loop"] if r["rate_rps"] == 100), None)
    report["goals"] = {
        "serve_replicas": best["replicas"],
        "serve_over_bare_throughput": best["serve_over_bare_throughput"],
        "serve_over_bare_throughput_goal": 0.8,
        "serve_p99_ms_at_100rps": at_100 and at_100.get("p99_ms"),
        "serve_p99_ms_at_100rps_goal": 50,
    }
    models = report["models"]
    if "teacher" in models:
        over = models["students"][0]["over_teacher"]
        report["goals"].update({"student_over_teacher_latency_torch": over["latency_torch"],
                                "student_over_teacher_latency_onnx": over["latency_onnx"],
                                "student_over_teacher_latency_goal": 0.01,
                                "student_over_teacher_parameters": over["parameters"],
                                "student_over_teacher_parameters_goal": 0.05})
    report["wall_s"] = round(time.time() - started, 1)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    save(True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
