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
seen = ray.get(ray.remote(lambda: os.environ.get("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S")).remote())
print(json.dumps({"worker": seen}))
ray.shutdown()
"""


@pytest.mark.parametrize("exported, expected", [(None, "60"), ("90", "90")])
def test_workers_inherit_the_serve_proxy_timeout_and_a_user_value_wins(exported, expected):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", None)
    if exported:
        env["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"] = exported
    process = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    assert json.loads(process.stdout.strip().splitlines()[-1]) == {"worker": expected}
