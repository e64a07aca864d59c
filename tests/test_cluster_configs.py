"""cluster/ and serve/ configs: every YAML parses, and the fields that must agree do."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tiny_data import REPO_ROOT

CLUSTER = REPO_ROOT / "cluster"
YAML_FILES = sorted([*CLUSTER.rglob("*.yaml"), *(REPO_ROOT / "serve").glob("*.yaml"),
                     *(REPO_ROOT / "jobs" / "configs").rglob("*.yaml")])


def load(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_yaml_parses(path):
    assert load(path) is not None


@pytest.mark.parametrize("config", sorted((REPO_ROOT / "jobs" / "configs").glob("*.yaml")), ids=lambda p: p.name)
@pytest.mark.parametrize("profile", [None, "quick", "full"])
def test_job_configs_and_profiles_validate(config, profile):
    from rdistill.config import load_config, profile_overrides

    load_config(config, profile_overrides(profile) if profile else [])


def entrypoint_modules(command: str) -> list[str]:
    return re.findall(r"python -m (jobs\.\w+)", command)


def test_rayjob_entrypoint_exists_and_its_arguments_validate():
    from rdistill.config import load_config, profile_overrides

    job = load(CLUSTER / "kuberay" / "rayjob.yaml")
    assert job["kind"] == "RayJob"
    entrypoint = job["spec"]["entrypoint"]
    modules = entrypoint_modules(entrypoint)
    assert modules == ["jobs.run"]
    for module in modules:
        assert (REPO_ROOT / (module.replace(".", "/") + ".py")).is_file()
    words = shlex.split(entrypoint)
    config = REPO_ROOT / words[words.index("--config") + 1]
    profile = words[words.index("--profile") + 1]
    overrides = [word for word in words if "=" in word]
    loaded = load_config(config, profile_overrides(profile) + overrides)
    assert loaded.teacher.use_gpu and loaded.infer.use_gpu
    # GPUs asked of Ray exist in the pods
    for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits.get("nvidia.com/gpu") == "1"
    assert job["spec"]["rayClusterSpec"]["rayVersion"].startswith("2.60")


def test_rayservice_serves_what_serve_config_says():
    service = load(CLUSTER / "kuberay" / "rayservice.yaml")
    assert service["kind"] == "RayService"
    applications = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    local = load(REPO_ROOT / "serve" / "config.yaml")["applications"]
    for remote, mine in zip(applications, local, strict=True):
        assert remote["args"]["model_dir"].startswith("/mnt/artifacts/")
        assert {**remote, "args": {**remote["args"], "model_dir": None}} == \
            {**mine, "args": {**mine["args"], "model_dir": None}}, "run python cluster/make_rayservice.py"
        module, _, attribute = remote["import_path"].partition(":")
        assert callable(getattr(importlib.import_module(module), attribute))
        deployment = remote["deployments"][0]
        assert deployment["max_ongoing_requests"] >= remote["args"]["max_batch_size"]
    secret_env = {env["name"] for env in
                  service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert local[0]["args"]["auth_token_env"] in secret_env


def test_cluster_launcher_has_cpu_head_and_gpu_workers():
    cluster = load(CLUSTER / "cluster.yaml")
    types = cluster["available_node_types"]
    assert "GPU" not in types[cluster["head_node_type"]]["resources"]
    assert any(node["resources"].get("GPU", 0) >= 1 and node["max_workers"] > node["min_workers"]
               for node in types.values() if "max_workers" in node)
    pins = " ".join(cluster["setup_commands"])
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert "torch==2.13.0" in pins and "torch==2.13.0" in pyproject
    assert "ray[train,tune,serve,data]==2.60.*" in pins and "==2.60.*" in pyproject


def test_runtime_env_excludes_local_artifacts():
    runtime_env = load(CLUSTER / "runtime_env.yaml")
    assert {"artifacts/", ".venv/"} <= set(runtime_env["excludes"])
    assert runtime_env["env_vars"]["HF_HUB_OFFLINE"] == "1"


def test_every_job_module_named_in_the_docs_exists():
    text = (REPO_ROOT / "README.md").read_text() + (CLUSTER / "README.md").read_text()
    for module in set(re.findall(r"python -m (jobs\.\w+)", text)):
        assert (REPO_ROOT / (module.replace(".", "/") + ".py")).is_file(), module


def test_rayservice_nodes_get_serves_throughput_switches():
    from rdistill.ray_runtime import HAPROXY_SWITCH, RAY_ENV_DEFAULTS

    service = load(CLUSTER / "kuberay" / "rayservice.yaml")
    cluster = service["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    switches = {k: v for k, v in RAY_ENV_DEFAULTS.items() if k.startswith("RAY_SERVE_RUN_") or "LOG_BUFFER" in k}
    assert len(switches) == 3
    for group in groups:
        env = {item["name"]: item.get("value") for item in group["template"]["spec"]["containers"][0]["env"]}
        assert {name: env.get(name) for name in switches} == switches
        assert env.get(HAPROXY_SWITCH) == "1"  # HAProxy ingress: on in the cluster, opt-in locally
