"""The wheel carries the library with its dataset configs and profiles, and nothing else at the top level."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_its_configs_and_reads_them_from_site_packages(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(REPO_ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "wheel").glob("rdistill-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"rdistill/configs/ml-latest-small.yaml", "rdistill/configs/profiles/quick.yaml",
            "rdistill/configs/profiles/full.yaml"} <= set(names)
    assert {name.split("/")[0] for name in names} == {"rdistill", wheel.name.split("-")[0] + "-0.1.0.dist-info"}

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    probe = ("import json, rdistill; from rdistill.config import load_config, profile_overrides; "
             "c = load_config('amazon-beauty', profile_overrides('full')); "
             "print(json.dumps({'module': rdistill.__file__, 'format': c.data.format}))")
    # from another folder, with the installed copy first on the path: no repository files can be found
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": str(target)})
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["module"].startswith(str(target)) and loaded["format"] == "s3rec"
