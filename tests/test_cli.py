"""The command line, run as a user runs it: a real subprocess of the installed `rdistill` script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_data import write_cyclic_log

RDISTILL = [sys.executable, "-m", "rdistill.cli"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*RDISTILL, "-q", *args], capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"rdistill {args} failed ({result.returncode}):\n{result.stderr}")
    return result


@pytest.fixture
def tiny_config_file(tmp_path) -> Path:
    write_cyclic_log(tmp_path / "raw")
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"artifact_root: {tmp_path / 'artifacts'}\n"
        "data: {format: generic, path: raw, min_user_interactions: 3, min_item_interactions: 1, max_len: 8}\n"
        "student: {name: gru4rec, params: {hidden_size: 16, dropout: 0.0}}\n"
        "train: {epochs: 2, batch_size: 32, progress: false, num_threads: 1}\n"
    )
    return config


@pytest.mark.parametrize("command", ["prepare", "train-student", "evaluate", "export",
                                     "teacher train", "teacher infer"])
def test_every_command_explains_itself(command):
    result = subprocess.run([*RDISTILL, *command.split(), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--config" in result.stdout and "key.sub=value" in result.stdout


def test_prepare_train_evaluate(tiny_config_file, tmp_path):
    root = f"data.root={tmp_path}"
    prepared = json.loads(run("prepare", "--config", str(tiny_config_file), root).stdout)
    assert prepared["users"] == 120 and prepared["items"] == 40
    assert Path(prepared["dataset_dir"], "train.parquet").is_file()

    trained = json.loads(run("train-student", "--config", str(tiny_config_file), "train.run_name=cli").stdout)
    assert trained["epochs_run"] == 2
    assert set(trained["valid"]) >= {"hr_at_10", "ndcg_at_10", "mrr_at_10"}

    evaluated = json.loads(run("evaluate", "--config", str(tiny_config_file), "--model-dir", trained["run_dir"],
                               "--split", "valid").stdout)
    assert evaluated["rows"] == 120
    assert evaluated["ndcg_at_10"] == pytest.approx(trained["valid"]["ndcg_at_10"])

    popularity = json.loads(run("evaluate", "--config", str(tiny_config_file), "--popularity").stdout)
    assert popularity["model"] == "popularity" and 0 <= popularity["hr_at_10"] <= 1

    exported = json.loads(run("export", "--config", str(tiny_config_file), "--model-dir", trained["run_dir"]).stdout)
    from rdistill.export import load_exported

    served = load_exported(Path(exported["serving_dir"]))
    assert served.name == "gru4rec" and served.version == exported["version"] and len(served.version) == 12
    assert served.items.num_rows == 40 and served.items.column("item_id").to_pylist()[:2] == ["i0", "i1"]
    assert served.metrics["valid"]["ndcg_at_10"] == pytest.approx(trained["valid"]["ndcg_at_10"])
    assert served.manifest["lineage"]["student_dir"] == str(Path(trained["run_dir"]).resolve())


def test_bad_override_is_one_clear_line(tiny_config_file):
    result = run("prepare", "--config", str(tiny_config_file), "train.lr_rate=0.1", check=False)
    assert result.returncode == 2
    assert "train.lr_rate: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_dataset_names_the_file(tiny_config_file, tmp_path):
    result = run("train-student", "--config", str(tiny_config_file), f"artifact_root={tmp_path / 'nowhere'}",
                 check=False)
    assert result.returncode == 2
    assert "nowhere/dataset/items.parquet is missing" in result.stderr
