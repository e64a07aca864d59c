"""The pipeline as a real Ray job: `ray start --head` on 127.0.0.1, the Job Submission API, artifacts checked."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tiny_data import REPO_ROOT, write_cyclic_log

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """A separate Ray head on 127.0.0.1 (its own ports), stopped at the end without touching other clusters:
    `ray start --block` keeps its processes as children, so ending it ends them (no `ray stop`). The dashboard
    agent's HTTP port is fixed (52365) by default: the session Ray holds it, and a head whose agent cannot bind it
    refuses every job with "No available agent", so this head gets a free one."""
    ray_cli = Path(sys.executable).with_name("ray")
    gcs_port, dashboard_port, agent_port = free_port(), free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
         f"--dashboard-agent-listen-port={agent_port}", "--num-cpus=2", "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    from ray.job_submission import JobSubmissionClient

    address = f"http://127.0.0.1:{dashboard_port}"
    deadline, client = time.time() + 180, None
    while time.time() < deadline and client is None:
        if head.poll() is not None:
            raise RuntimeError(f"ray start failed:\n{head.stdout.read()}")
        try:
            client = JobSubmissionClient(address)
        except Exception:  # the dashboard is not up yet
            time.sleep(2)
    if client is None:
        head.kill()
        raise RuntimeError("the Ray head's dashboard did not come up in 180 s")
    yield client
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    # `ray start` recorded this head as the machine's current cluster; a later bare ray.init() (a CLI subprocess
    # in another test) would try to join the dead head, so forget it the way `ray stop` would
    current = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
    if current.is_file() and current.read_text().strip().endswith(f":{gcs_port}"):
        current.unlink()


def test_the_pipeline_runs_as_a_submitted_job(ray_head, tiny_backbone, tmp_path):
    from ray.job_submission import JobStatus

    write_cyclic_log(tmp_path / "raw", seed=5)
    config = {
        "artifact_root": str(tmp_path / "artifacts"), "seed": 7,
        "data": {"format": "generic", "root": str(tmp_path), "path": "raw", "min_user_interactions": 3,
                 "min_item_interactions": 1, "max_len": 8},
        "student": {"name": "gru4rec", "params": {"hidden_size": 16, "dropout": 0.0}},
        "train": {"batch_size": 32, "num_threads": 1, "progress": False},
        "teacher": {"model": tiny_backbone, "epochs": 1, "max_steps_per_epoch": 6, "batch_size": 16},
        "infer": {"top_k": 5, "progress": False},
        "tune": {"num_samples": 2, "max_epochs": 2, "space": {
            "distill.kd_weight": {"type": "uniform", "low": 0.1, "high": 1.0}}},
    }
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(config))
    runtime_env = yaml.safe_load((REPO_ROOT / "cluster" / "runtime_env.yaml").read_text())
    runtime_env["working_dir"] = str(REPO_ROOT)
    runtime_env["env_vars"]["RAY_AUTH_MODE"] = "disabled"
    deadline, job_id = time.time() + 480, None  # slow on a loaded 2-core machine
    while job_id is None:
        try:
            job_id = ray_head.submit_job(entrypoint=f"{sys.executable} -m jobs.run --config {config_file}",
                                         runtime_env=runtime_env)
        except (RuntimeError, ConnectionError, OSError) as err:
            # "No available agent to submit job": the head's job agent is still starting
            if time.time() > deadline or (isinstance(err, RuntimeError) and "No available agent" not in str(err)):
                raise
            time.sleep(3)
    deadline = time.time() + 1200
    status = JobStatus.PENDING
    while time.time() < deadline and not status.is_terminal():
        time.sleep(3)
        try:
            status = ray_head.get_job_status(job_id)
        except (ConnectionError, OSError):  # the dashboard can drop a poll on a loaded machine; ask again
            continue
    logs = ray_head.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-4000:]

    artifacts = tmp_path / "artifacts"
    summary, _ = json.JSONDecoder().raw_decode(logs[logs.index('{\n  "stages"'):])
    assert [stage["stage"] for stage in summary["stages"]] == ["prepare", "teacher-train", "teacher-infer", "tune"]
    for manifest in ("dataset/manifest.json", "teacher/checkpoint/manifest.json", "signals/manifest.json",
                     "serving/model/manifest.json"):
        assert (artifacts / manifest).is_file(), manifest
    state = json.loads((artifacts / "pipeline.json").read_text())
    assert {record["status"] for record in state.values()} == {"done"}
    shutil.rmtree(artifacts / "teacher" / "ray", ignore_errors=True)
