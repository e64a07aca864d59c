"""ensure_ray: the Ray that rdistill starts gives its workers (and so Serve's controller) the patient defaults;
the warning `rdistill serve` gives when HAProxy ingress opens ports beyond a loopback endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tiny_data import REPO_ROOT

SCRIPT = """
import json, os, ray
from rdistill.ray_runtime import ensure_ray
ensure_ray("local")
ensure_ray("local")  # a second call joins nothing new
names = ["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"]
seen = ray.get(ray.remote(lambda: [os.environ.get(name) for name in names]).remote())
print(json.dumps({"worker": seen}))
ray.shutdown()
"""


@pytest.mark.integration
@pytest.mark.parametrize("exported, expected", [(None, "60"), ("90", "90")])
def test_workers_inherit_the_serve_defaults_and_a_user_value_wins(exported, expected):
    from rdistill.ray_runtime import RAY_ENV_DEFAULTS

    env = {key: value for key, value in os.environ.items() if key not in RAY_ENV_DEFAULTS}
    env["RAY_AUTH_MODE"] = "disabled"
    if exported:
        env["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"] = exported
    process = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    # the proxy's patience (or the user's value), and Serve's throughput switch
    assert json.loads(process.stdout.strip().splitlines()[-1]) == {"worker": [expected, "0"]}


def test_haproxy_warning_names_the_ports_it_opens_on_every_interface():
    from rdistill.ray_runtime import HAPROXY_SWITCH, haproxy_exposure_warning

    warning = haproxy_exposure_warning("127.0.0.1", {HAPROXY_SWITCH: "1"})
    assert "port 8404" in warning and "port 9101" in warning and "127.0.0.1 only" in warning
    moved = haproxy_exposure_warning("localhost", {HAPROXY_SWITCH: "1", "RAY_SERVE_HAPROXY_STATS_PORT": "18404",
                                                   "RAY_SERVE_HAPROXY_METRICS_PORT": "19101"})
    assert "port 18404" in moved and "port 19101" in moved


@pytest.mark.parametrize("host, environ", [
    ("127.0.0.1", {}),  # the Python proxy (the local default) opens nothing else
    ("127.0.0.1", {"RAY_SERVE_ENABLE_HA_PROXY": "0"}),
    ("0.0.0.0", {"RAY_SERVE_ENABLE_HA_PROXY": "1"}),  # the endpoint is public already: nothing new to say
])
def test_no_haproxy_warning_when_nothing_more_is_exposed(host, environ):
    from rdistill.ray_runtime import haproxy_exposure_warning

    assert haproxy_exposure_warning(host, environ) is None
