"""Starting (or joining) Ray the same way in every stage, with defaults that hold on a small, busy machine."""

from __future__ import annotations

import os

# Serve kills its HTTP proxy when the proxy does not report ready within 5 s (three times in a row); on a loaded
# 2-core machine it regularly takes longer. Environment variables must be set before Ray starts: the Serve
# controller inherits the driver's environment. A value the user exported wins.
RAY_ENV_DEFAULTS = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60"}


def ensure_ray(address: str | None = None) -> None:
    """ray.init(address) unless Ray is already initialised in this process. None is Ray's default: RAY_ADDRESS
    (set by `ray job submit`), else the cluster `ray start` recorded on this machine, else a new local one."""
    import ray

    if ray.is_initialized():
        return
    for name, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    ray.init(address=address)
