"""Serve an exported student with Ray Serve from this process: `rdistill serve` and `rdistill run --serve`.

Ray is imported inside the functions only, so `import rdistill.serving` (which re-exports run_local) never pulls
Ray in; the Serve application itself is built by rdistill/serving/app.py.

- `run_local(model_dir, ...)`: joins or starts Ray, starts Serve's HTTP proxy, deploys the application and
  returns its URL, or with blocking=True serves until interrupted first.
- `serve_until_interrupted()`: the one "serve until Ctrl-C" loop: blocks until Ctrl-C or SIGTERM, then shuts
  Serve down. run_local(blocking=True) and `rdistill run --serve --keep-serving` both end this way.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rdistill.ray_runtime import ensure_ray, haproxy_exposure_warning
from rdistill.serving.service import DEFAULT_TOKEN_ENV, ServeSettings, is_loopback, log


def run_local(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, *, app_name: str = "rdistill",
              route_prefix: str = "/", num_replicas: int | None = 1, autoscaling_config: dict | None = None,
              max_ongoing_requests: int = 32, num_cpus_per_replica: float = 0.5, max_batch_size: int = 16,
              batch_wait_timeout_s: float = 0.005, max_body_bytes: int = 64 * 1024, body_timeout_s: float = 10.0,
              auth_token_env: str = DEFAULT_TOKEN_ENV, require_auth: bool | None = None, torch_threads: int = 1,
              runtime: str = "auto",
              ray_address: str | None = None, access_log: bool = False, blocking: bool = True) -> str:
    """Serve an exported student with Ray Serve at http://host:port/ (the `rdistill serve` command).

    Starts (or joins, see ray_address) a Ray cluster, starts Serve's HTTP proxy on host:port (127.0.0.1 by
    default: only this machine can reach it) and deploys the application as `app_name`. Calling it again with
    another model_dir and the same app_name swaps models without dropping requests (a rolling update).

    Args:
        model_dir: an exported model (serving/model/, from `rdistill export` or `rdistill tune`): a local path,
            or a URI (s3://bucket/run/serving/model) that each replica pulls to its own node.
        host, port: where the HTTP proxy listens; fixed for the lifetime of Serve on this cluster.
        num_replicas: fixed replica count; ignored when autoscaling_config is given.
        autoscaling_config: Serve's autoscaling options (min_replicas, max_replicas,
            target_ongoing_requests, upscale_delay_s, downscale_delay_s, ...).
        max_ongoing_requests: per-replica admission limit; must be >= max_batch_size.
        num_cpus_per_replica: CPUs Ray reserves per replica (fractional on a small machine).
        max_batch_size, batch_wait_timeout_s, max_body_bytes, body_timeout_s, auth_token_env, torch_threads,
            runtime: see ServeSettings.
            Auth is on when the environment variable auth_token_env is set (in the environment Ray's workers
            see: set it before the cluster starts, or in the replica's runtime_env).
        require_auth: replicas refuse to start when auth_token_env is unset or empty (fail closed). None (the
            default) turns it on for a host that is not loopback (`rdistill serve --host 0.0.0.0`): reachable
            from other machines means a token is required.
        ray_address: passed to ray.init when Ray is not initialised yet: None is Ray's default (RAY_ADDRESS,
            else a running local cluster, else a new one), "local" always starts a new one.
        access_log: one log line per request in the proxy's and the replica's log files. Off by default: on a
            small CPU the two file writes per request cost noticeable throughput (benchmarks/serve_load.py).
        blocking: serve until interrupted (Ctrl-C or SIGTERM), then shut Serve down; otherwise return at once.

    Returns:
        The base URL, e.g. "http://127.0.0.1:8000" (returned after the interrupt when blocking).
    """
    from rdistill.serving.app import build_app

    if require_auth is None:
        require_auth = not is_loopback(host)
    settings = ServeSettings(model_dir=absolute_model_dir(model_dir), max_batch_size=max_batch_size,
                             batch_wait_timeout_s=batch_wait_timeout_s, max_body_bytes=max_body_bytes,
                             body_timeout_s=body_timeout_s, auth_token_env=auth_token_env,
                             require_auth=require_auth, torch_threads=torch_threads, runtime=runtime)
    # built before Ray starts, so a bad setting (ConfigError from check_batching) fails without a cluster
    application = build_app(settings, num_replicas=num_replicas, autoscaling_config=autoscaling_config,
                            max_ongoing_requests=max_ongoing_requests, num_cpus_per_replica=num_cpus_per_replica)
    def start() -> str:
        return deploy(application, host, port, app_name=app_name, route_prefix=route_prefix,
                      ray_address=ray_address, access_log=access_log)

    if not blocking:
        return start()
    # ray.init installs Ray's own SIGTERM handler (which aborts the driver): start Ray first, so that ours replaces
    # it before the deployment starts, and a SIGTERM at any moment after that ends as cleanly as Ctrl-C
    ensure_ray(ray_address)
    serve_until_interrupted(start)
    return f"http://{host}:{port}{route_prefix.rstrip('/')}"


def absolute_model_dir(model_dir: str | Path) -> str:
    """A URI as is (each replica pulls it); a local path made absolute, since replicas run in directories that
    Ray chooses, not in the caller's."""
    from rdistill.storage import is_uri

    return str(model_dir) if is_uri(str(model_dir)) else str(Path(model_dir).resolve())


def deploy(application, host: str, port: int, *, app_name: str, route_prefix: str, ray_address: str | None,
           access_log: bool) -> str:
    """Join or start Ray, start Serve's proxy on host:port and run `application` as app_name; its base URL."""
    from ray import serve

    ensure_ray(ray_address)
    warning = haproxy_exposure_warning(host)
    if warning:
        log.warning(warning)
    serve.start(http_options={"host": host, "port": port})
    serve.run(application, name=app_name, route_prefix=route_prefix,
              logging_config={"enable_access_log": access_log})
    return f"http://{host}:{port}{route_prefix.rstrip('/')}"


def serve_until_interrupted(start: Callable[[], object] | None = None) -> None:
    """Block until Ctrl-C or SIGTERM, then shut Serve down (its proxy and every application on this cluster).

    SIGTERM is what `kill`, systemd and Kubernetes send to stop a process; it is turned into the same
    KeyboardInterrupt as Ctrl-C while this runs, so both end the same way: Serve shut down and the caller's
    code after this call still runs (Ray's own driver handler would exit the process at once). `start`, when
    given, deploys under the same handler, so a signal during start-up ends the same way."""
    from ray import serve

    restore = sigterm_raises_keyboard_interrupt()
    try:
        if start is not None:
            start()
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        restore()
        serve.shutdown()


def sigterm_raises_keyboard_interrupt() -> Callable[[], None]:
    """Make SIGTERM raise KeyboardInterrupt like Ctrl-C; returns the function that puts the old handler back.

    Python lets only the main thread set signal handlers (and raises KeyboardInterrupt only there): called from
    another thread, this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    # None: the old handler was not set from Python; SIG_DFL is then the closest thing to put back
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
