"""ensure_ray: the Ray that rdistill starts gives its workers (and so Serve's controller) the patient defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tiny_data import REPO_ROOT

pytestmark = pytest.mark.integration

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
