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


STAGE_NAMES = ["prepare", "teacher-train", "teacher-infer", "train-student", "evaluate", "tune", "export", "serve",
               "report", "compare"]


@pytest.mark.parametrize("command", [*STAGE_NAMES, "run", "teacher train"])
def test_every_command_explains_itself(command):
    result = subprocess.run([*RDISTILL, *command.split(), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--config" in result.stdout and "key.sub=value" in result.stdout


def test_every_stage_has_one_name_for_command_job_and_pipeline():
    """The registry is the one list: each stage is a command, a job module and (for pipeline stages) a record."""
    from rdistill.stages.registry import pipeline_stages, stages

    assert [stage.name for stage in stages()] == STAGE_NAMES
    assert [stage.name for stage in pipeline_stages()] == ["prepare", "teacher-train", "teacher-infer", "tune"]
    jobs = Path(__file__).resolve().parents[1] / "jobs"
    modules = {path.stem for path in jobs.glob("*.py")} - {"__init__", "_entry"}
    assert modules == {name.replace("-", "_") for name in STAGE_NAMES} | {"run"}
    for stage in stages():
        assert f'run_command("{stage.name}")' in (jobs / f"{stage.job_module.split('.')[1]}.py").read_text()
    listed = json.loads(run("stages").stdout)
    assert [row["stage"] for row in listed] == STAGE_NAMES
    assert next(row for row in listed if row["stage"] == "teacher-infer")["writes"] == ["signals"]


def test_the_old_two_word_teacher_commands_still_work():
    result = subprocess.run([*RDISTILL, "teacher", "infer", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage: rdistill teacher-infer" in result.stdout
    assert "`teacher infer` is now `teacher-infer`" in result.stderr


def test_a_packaged_config_is_found_by_name(tmp_path):
    result = run("prepare", "--config", "no-such-dataset", check=False)
    assert result.returncode == 2
    assert "packaged configs, usable by name: ['amazon-beauty', 'amazon-scientific', 'ml-latest-small']" in result.stderr


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
