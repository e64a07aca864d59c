"""`rdistill run`: every stage end to end on a real local Ray, reruns that skip, and resume after a failure."""

from __future__ import annotations

import json

import pytest

from rdistill.errors import ConfigError
from rdistill.export import load_exported
from rdistill.pipeline import run_pipeline, summary_table

from tiny_data import tiny_config, write_cyclic_log

pytestmark = pytest.mark.integration


def pipeline_config(root, backbone, *overrides):
    return tiny_config(root, f"teacher.model={backbone}", "teacher.epochs=1", "teacher.max_steps_per_epoch=8",
                       "teacher.batch_size=16", "infer.top_k=5", "infer.progress=false", "student.name=gru4rec",
                       "tune.num_samples=2", "tune.max_epochs=2", "tune.max_concurrent=2",
                       "tune.space={distill.kd_weight: {type: uniform, low: 0.1, high: 1.0}}", *overrides)


def test_the_pipeline_runs_every_stage_then_skips_and_resumes_after_a_failure(ray_cluster, tiny_backbone,
                                                                              tmp_path):
    write_cyclic_log(tmp_path / "raw", seed=3)  # data generated here
    # 1. the tune stage fails (its space asks for more candidates than the signals hold) after the others ran
    bad = pipeline_config(tmp_path, tiny_backbone,
                          "tune.space={distill.top_k: {type: choice, values: [5, 9]}}")
    lines = []
    with pytest.raises(ConfigError, match="reaches 9 but the signals hold the teacher's top 5"):
        run_pipeline(bad, echo=lines.append)
    state = json.loads((tmp_path / "artifacts" / "pipeline.json").read_text())
    assert [state[s]["status"] for s in ("prepare", "teacher-train", "teacher-infer", "tune")] == ["done"] * 3 + ["failed"]
    assert "reaches 9" in state["tune"]["error"]
    outputs = {name: (tmp_path / "artifacts" / path).stat().st_mtime_ns for name, path in {
        "dataset": "dataset/manifest.json", "teacher": "teacher/checkpoint/manifest.json",
        "signals": "signals/manifest.json"}.items()}

    # 2. fixed, the rerun resumes at tune: prepare, teacher and infer are not redone
    config = pipeline_config(tmp_path, tiny_backbone)
    outcomes = run_pipeline(config, echo=lines.append)
    assert [(o.name, o.status) for o in outcomes] == [("prepare", "skipped"), ("teacher-train", "skipped"),
                                                      ("teacher-infer", "skipped"), ("tune", "ran")]
    for name, path in {"dataset": "dataset/manifest.json", "teacher": "teacher/checkpoint/manifest.json",
                       "signals": "signals/manifest.json"}.items():
        assert (tmp_path / "artifacts" / path).stat().st_mtime_ns == outputs[name]
    served = load_exported(tmp_path / "artifacts" / "serving" / "model")
    assert served.name == "gru4rec" and served.metrics["test"]["ndcg_at_10"] > 0
    assert served.manifest["lineage"]["signals"]["fingerprint"]
    assert "[4/4] tune: running" in lines and "[1/4] prepare: up to date, skipped" in lines
    table = summary_table(outcomes)
    assert table.splitlines()[0].split() == ["stage", "status", "seconds", "result"] and "tune" in table

    # 3. nothing changed: everything is skipped; a changed infer setting reruns infer and what follows
    assert {o.status for o in run_pipeline(config, echo=lines.append)} == {"skipped"}
    changed = pipeline_config(tmp_path, tiny_backbone, "infer.top_k=4")
    assert [o.status for o in run_pipeline(changed, echo=lines.append)] == ["skipped", "skipped", "ran", "ran"]

    # 4. the endpoint serves the winner and answers a sample request over HTTP
    from ray import serve

    from rdistill.artifacts import ArtifactLayout
    from rdistill.pipeline import sample_request
    from rdistill.serving import run_local

    layout = ArtifactLayout(tmp_path / "artifacts")
    url = run_local(layout.serving_model_dir, port=free_port(), blocking=False)
    try:
        answer = sample_request(url, layout)
    finally:
        serve.shutdown()
    assert len(answer["response"]["items"]) == 5
    assert not set(item["item_id"] for item in answer["response"]["items"]) & set(answer["request"]["history"])
    assert answer["response"]["model"]["version"] == load_exported(layout.serving_model_dir).version


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_quick_profile_on_a_slice_of_movielens_ends_with_the_endpoint_answering(tmp_path):
    """The README's main command, `rdistill run --profile quick --serve`, on real data with the real MiniLM teacher,
    cut further (fewer users, steps and trials) to fit a test."""
    import os
    import subprocess
    import sys

    from tiny_data import REPO_ROOT, SHARED_DATA

    if not (SHARED_DATA / "ml-latest-small" / "ratings.csv").is_file():
        pytest.skip(f"MovieLens latest-small not found under {SHARED_DATA} (set RDISTILL_DATA_DIR)")
    artifacts = tmp_path / "artifacts"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": "", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "rdistill.cli", "run", "--config", "jobs/configs/ml-latest-small.yaml",
               "--profile", "quick", "--serve", "--port", str(free_port()),
               f"artifact_root={artifacts}", f"data.root={SHARED_DATA}", "data.max_users=60",
               "teacher.max_steps_per_epoch=6", "teacher.max_eval_rows=60", "tune.num_samples=2",
               "tune.max_epochs=2", "train.num_threads=1"]
    process = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert process.returncode == 0, process.stderr[-4000:]
    summary, _ = json.JSONDecoder().raw_decode(process.stdout[process.stdout.rindex('{\n  "stages"'):])
    assert [(s["stage"], s["status"]) for s in summary["stages"]] == [
        ("prepare", "ran"), ("teacher-train", "ran"), ("teacher-infer", "ran"), ("tune", "ran"), ("serve", "ran")]
    answer, request = summary["sample"]["response"], summary["sample"]["request"]
    assert len(answer["items"]) == 5 and not {item["item_id"] for item in answer["items"]} & set(request["history"])
    assert all(item["text"] for item in answer["items"])  # MovieLens titles come back with the ids
    exported = load_exported(artifacts / "serving" / "model")
    assert answer["model"]["version"] == exported.version
    assert exported.metrics["test"]["ndcg_at_10"] >= 0 and "stage" in process.stderr  # the summary table
    teacher_manifest = json.loads((artifacts / "teacher" / "checkpoint" / "manifest.json").read_text())
    assert teacher_manifest["config"]["teacher"]["model"] == "minilm"  # the real pre-trained backbone
    assert teacher_manifest["counts"]["num_parameters"] > 20_000_000
