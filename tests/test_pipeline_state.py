"""Pipeline bookkeeping without Ray: what makes a stage's key change, and when a stage counts as finished."""

from __future__ import annotations

import json
import os

from rdistill.artifacts import ArtifactLayout
from rdistill.pipeline import stage_finished, stage_key

from tiny_data import tiny_config, write_cyclic_log


def test_prepare_key_follows_the_raw_files_and_the_data_section(tmp_path):
    write_cyclic_log(tmp_path / "raw", seed=1)
    config = tiny_config(tmp_path)
    key = stage_key("prepare", config)
    assert stage_key("prepare", tiny_config(tmp_path)) == key  # same files, same settings
    assert stage_key("prepare", tiny_config(tmp_path, "data.max_len=9")) != key

    raw_file = next(path for path in (tmp_path / "raw").iterdir() if path.is_file())
    stat = raw_file.stat()
    os.utime(raw_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # the data was replaced
    assert stage_key("prepare", config) != key


def test_keys_chain_through_the_input_manifests(tmp_path):
    config = tiny_config(tmp_path)
    layout = ArtifactLayout(config.artifact_path())
    before = {stage: stage_key(stage, config) for stage in ("teacher-train", "teacher-infer", "tune")}
    layout.signals_dir.mkdir(parents=True)
    (layout.signals_dir / "manifest.json").write_text(json.dumps({"fingerprint": "a"}))
    after = {stage: stage_key(stage, config) for stage in ("teacher-train", "teacher-infer", "tune")}
    assert after["teacher-train"] == before["teacher-train"] and after["teacher-infer"] == before["teacher-infer"]
    assert after["tune"] != before["tune"]  # new signals: the campaign must rerun


def test_a_tune_stage_without_export_is_finished_by_its_summary(tmp_path):
    exporting, not_exporting = tiny_config(tmp_path), tiny_config(tmp_path, "tune.export=false")
    layout = ArtifactLayout(exporting.artifact_path())
    assert not stage_finished("tune", exporting) and not stage_finished("tune", not_exporting)
    summary = layout.root / "tune" / "distill" / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text("{}")
    assert stage_finished("tune", not_exporting)
    assert not stage_finished("tune", exporting)  # still waits for serving/model/
    layout.serving_model_dir.mkdir(parents=True)
    (layout.serving_model_dir / "manifest.json").write_text("{}")
    assert stage_finished("tune", exporting)
