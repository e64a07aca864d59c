"""Starting (or joining) Ray the same way in every stage, with defaults that hold on a small, busy machine."""

from __future__ import annotations

import os
from collections.abc import Mapping

# Environment variables must be set before Ray starts: Serve's controller, proxy and replicas inherit the
# driver's environment. A value the user exported wins.
RAY_ENV_DEFAULTS = {
    # Serve kills its HTTP proxy when the proxy does not report ready within 5 s (three times in a row); on a
    # loaded 2-core machine it regularly takes longer.
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    # Serve's own throughput switches (a subset of RAY_SERVE_THROUGHPUT_OPTIMIZED, without its experimental
    # direct ingress): request handling on the replica's and the proxy's main event loop instead of a second
    # thread or loop, and request-path logs buffered. Measured here: +33% closed-loop requests/s and half the
    # p99 at 100 requests/s (benchmarks/results/serve.json). Safe for our replicas: scoring runs in a worker
    # thread (rdistill/serving/app.py), never on the event loop.
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
}

# Serve's HAProxy ingress (Ray >= 2.55): HAProxy takes the Python proxy's place and forwards requests straight to
# the replicas (3.2-4.3x the requests/s here). Not among the local defaults: besides the endpoint on
# http_options.host, Ray 2.60 binds HAProxy's stats page and Prometheus exporter on every interface, with no setting
# for their host, and keeps its state under one fixed /tmp/haproxy-serve per machine. The RayService
# (cluster/kuberay/) turns it on, where the pod network is the boundary.
HAPROXY_SWITCH = "RAY_SERVE_ENABLE_HA_PROXY"


def ensure_ray(address: str | None = None) -> None:
    """ray.init(address) unless Ray is already initialised in this process. None is Ray's default: RAY_ADDRESS
    (set by `ray job submit`), else the cluster `ray start` recorded on this machine, else a new local one."""
    import ray

    if ray.is_initialized():
        return
    set_env_defaults()
    ray.init(address=address)


def set_env_defaults() -> None:
    """RAY_ENV_DEFAULTS into this process's environment, keeping any value the user exported; call it before
    starting Ray, whose processes inherit the environment."""
    for name, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)


def haproxy_exposure_warning(host: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """What HAProxy ingress opens beyond `host`, when it is on (HAPROXY_SWITCH=1) and the endpoint is meant to be
    reachable from this machine only; None otherwise."""
    if environ.get(HAPROXY_SWITCH, "0") != "1" or host not in ("127.0.0.1", "localhost", "::1"):
        return None
    stats = environ.get("RAY_SERVE_HAPROXY_STATS_PORT") or "8404"
    metrics = environ.get("RAY_SERVE_HAPROXY_METRICS_PORT") or "9101"
    return (f"{HAPROXY_SWITCH}=1: the API listens on {host} only, but HAProxy also serves its stats page on port "
            f"{stats} and Prometheus metrics on port {metrics} of every interface (Ray has no host setting for "
            f"them; RAY_SERVE_HAPROXY_STATS_PORT and RAY_SERVE_HAPROXY_METRICS_PORT move them). Firewall those "
            f"ports if other machines can reach this one.")
