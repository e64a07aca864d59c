"""Two Ray nodes on this machine (ray.cluster_utils.Cluster): the teacher's workers and the tune trials spread
over both, every artifact under the one artifact root that all nodes see."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from rdistill.config import load_config
from rdistill.errors import ConfigError

from tiny_data import REPO_ROOT

SCENARIO = Path(__file__).with_name("multinode_scenario.py")


def test_an_unknown_placement_strategy_is_refused():
    assert load_config(None, ["teacher.placement_strategy=SPREAD"]).teacher.placement_strategy == "SPREAD"
    with pytest.raises(ConfigError, match="teacher.placement_strategy"):
        load_config(None, ["teacher.placement_strategy=SIDEWAYS"])


@pytest.mark.integration
def test_teacher_workers_and_tune_trials_run_on_both_nodes(tiny_backbone, tmp_path):
    # the scenario runs in a process of its own, so the session's in-process Ray is never touched; its Ray files
    # (sockets, logs, the "current cluster" record) go to a short private folder: socket paths have a length limit
    ray_tmp = tempfile.mkdtemp(prefix="rdmn-", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    result_path = tmp_path / "result.json"
    scenario = subprocess.Popen([sys.executable, str(SCENARIO), str(tmp_path), tiny_backbone, str(result_path)],
                                cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    try:
        output, _ = scenario.communicate(timeout=1800)  # minutes on an idle 2-core machine; slack for a busy one
    except subprocess.TimeoutExpired:
        os.killpg(scenario.pid, signal.SIGKILL)  # the script and the Ray nodes it started
        output, _ = scenario.communicate()
        pytest.fail(f"the multi-node scenario timed out:\n{output[-6000:]}")
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert scenario.returncode == 0, output[-6000:]
    result = json.loads(result_path.read_text())

    assert result["nodes"] == ["node_a", "node_b"]
    # one teacher worker per node (teacher.placement_strategy=STRICT_SPREAD), as the workers reported it
    assert sorted(result["teacher_worker_nodes"]) == ["node_a", "node_b"], result
    # two concurrent trials, each needing more than half a node: one on each
    assert sorted(result["trial_nodes"]) == ["node_a", "node_b"], result
    assert result["trial_errors"] == [None, None]

    artifacts = tmp_path / "artifacts"
    teacher_manifest = json.loads((artifacts / "teacher" / "checkpoint" / "manifest.json").read_text())
    assert teacher_manifest["counts"]["worker_nodes"] == 2
    assert Path(result["teacher_checkpoint"]) == artifacts / "teacher" / "checkpoint"
    assert Path(result["campaign_dir"]).parent == (artifacts / "tune").resolve()
    summary = json.loads((Path(result["campaign_dir"]) / "summary.json").read_text())
    assert len({trial["node_id"] for trial in summary["trials"]}) == 2
    assert (artifacts / "serving" / "model" / "manifest.json").is_file()
