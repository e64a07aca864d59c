"""`rdistill report` over a hand-built artifact tree in the formats the stages write (no Ray, no training)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiny_data import tiny_config, write_cyclic_log
from rdistill.artifacts import atomic_write_json, read_json
from rdistill.config import config_to_dict
from rdistill.data.prepare import prepare_dataset
from rdistill.data.schema import read_table
from rdistill.export import export_student
from rdistill.models import build_student
from rdistill import layout
from rdistill.report import report_summary, write_report
from rdistill.report.collect import collect, report_inputs, student_runs
from rdistill.report.latency import latency
from rdistill.tradeoff import pareto_front

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_OPENED: list[str] | None = None  # while a list: every file Python opens for reading


def _record_opens(event: str, args: tuple) -> None:
    if event == "open" and _OPENED is not None and isinstance(args[0], (str, Path)) \
            and not any(flag in str(args[1] or "r") for flag in "wax+"):
        _OPENED.append(str(args[0]))


sys.addaudithook(_record_opens)  # observes real opens (json reads, safetensors headers); inert outside a test
WINNER_VALID_NDCG = 0.23456789
TEACHER_PARAMETERS = 1_002_496


def _metrics(ndcg: float, hr: float) -> dict[str, float]:
    return {"ndcg_at_10": ndcg, "hr_at_10": hr, "mrr_at_10": ndcg / 2, "ndcg_at_20": ndcg + 0.05,
            "hr_at_20": hr + 0.1}


def _trial(trial_id: str, history: list[float], seconds: float, kd_weight: float, error=None) -> dict:
    # tune.trial_table's row
    return {"trial_id": trial_id, "params": {"distill.kd_weight": kd_weight, "train.lr": 0.001},
            "best": max(history) if history else None, "epochs": len(history), "history": history,
            "seconds": seconds, "finished_at": 1795608111, "error": error}


def _build_tree(root: Path) -> Path:
    """Every stage's output as the code writes it: a real dataset and export, hand-written metrics and states."""
    write_cyclic_log(root / "raw")
    config = tiny_config(root)
    prepare_dataset(config)
    artifacts = config.artifact_path()

    teacher = artifacts / "teacher" / "checkpoint"
    atomic_write_json(teacher / "metrics.json", {  # teacher/train.py
        "best_epoch": 2, "global_steps": 12, "valid": _metrics(0.15940212, 0.3667), "test": _metrics(0.19195, 0.408),
        "history": [{"epoch": 1, "epoch_seconds": 18.0, "global_step": 6, "train_loss": 3.9,
                     "valid_ndcg_at_10": 0.12}, {"epoch": 2, "epoch_seconds": 16.0, "global_step": 12,
                                                 "train_loss": 3.5, "valid_ndcg_at_10": 0.1594}],
        "num_parameters": TEACHER_PARAMETERS})
    atomic_write_json(teacher / "manifest.json", {
        "stage": "teacher-train", "config": {"teacher": {"model": "minilm", "mode": "items"}},
        "counts": {"epochs_run": 2, "global_steps": 12, "num_parameters": TEACHER_PARAMETERS, "workers": 2},
        "started_at": "2026-11-25T12:03:45Z", "wall_seconds": 75.6})
    atomic_write_json(artifacts / "signals" / "manifest.json", {  # teacher/infer.py
        "stage": "teacher-infer", "counts": {"rows": {"train": 793}, "items": 40, "top_k": 5, "embedding_dim": 32},
        "fingerprint": "abc", "hidden_layers": [], "rows_per_second": 12.78, "wall_seconds": 62.09,
        "started_at": "2026-11-25T12:05:00Z"})

    trials = [_trial("3a1df94f", [0.20, WINNER_VALID_NDCG, 0.22], 8.5, 0.21),
              _trial("412412fa", [0.097, 0.092], 7.5, 0.95), _trial("762efec0", [0.09, 0.096, 0.0964], 12.0, 0.16)]
    winner = {"trial_id": "3a1df94f", "params": {"distill.kd_weight": 0.21, "train.lr": 0.001}, "epoch": 2,
              "valid": _metrics(WINNER_VALID_NDCG, 0.41), "test": _metrics(0.2109, 0.39)}
    atomic_write_json(artifacts / "tune" / "distill" / "summary.json", {  # tune._finish
        "metric": "valid_ndcg_at_10", "winner": winner, "trials": trials, "restored": False, "seconds": 32.5,
        "search": "tpe", "scheduler": "asha", "seed": 42})

    info = read_table(artifacts / "dataset", "items")
    student = build_student("gru4rec", info.num_rows, 8, {"hidden_size": 16, "dropout": 0.0})
    export_student(student, info, artifacts / "serving" / "model",
                   metrics={"valid": winner["valid"], "test": winner["test"], "best_epoch": 2,
                            "params": winner["params"]},
                   config=config_to_dict(config),
                   lineage={"campaign": str(artifacts / "tune" / "distill"), "trial_id": "3a1df94f"})

    atomic_write_json(artifacts / "students" / "sasrec-seed42" / "metrics.json", {  # distill/train.py
        "student": "sasrec", "seed": 42, "best_epoch": 3, "epochs_run": 5, "select_metric": "ndcg_at_10",
        "valid": _metrics(0.1876, 0.35), "test": _metrics(0.1799, 0.33), "num_parameters": 5_000,
        "seconds_per_epoch": 1.25, "history": []})

    now = time.time()
    atomic_write_json(artifacts / "pipeline.json", {  # pipeline.run_pipeline
        "prepare": {"key": "1", "status": "done", "seconds": 0.9, "summary": {}, "finished_at": now - 300},
        "teacher-train": {"key": "2", "status": "done", "seconds": 78.8, "summary": {}, "finished_at": now - 200},
        "teacher-infer": {"key": "3", "status": "done", "seconds": 62.1, "summary": {}, "finished_at": now - 100},
        "tune": {"key": "4", "status": "failed", "seconds": 41.3, "error": "stopped", "started_at": now - 50}})
    return artifacts


@pytest.fixture(scope="module")
def built_tree(tmp_path_factory) -> Path:
    return _build_tree(tmp_path_factory.mktemp("report"))


@pytest.fixture
def artifacts(built_tree, tmp_path) -> Path:
    """A private copy of the tree, for tests that change it."""
    return Path(shutil.copytree(built_tree, tmp_path / "artifacts"))


def _pngs_referenced(report: Path) -> list[str]:
    markdown, page = (report / "report.md").read_text(), (report / "report.html").read_text()
    names = sorted(path.name for path in report.glob("*.png"))
    for name in names:
        assert (report / name).read_bytes()[:8] == PNG_MAGIC
        assert f"]({name})" in markdown
        assert f'src="{name}"' in page
    return names


def test_the_report_shows_the_numbers_of_every_stage(artifacts):
    report = write_report(artifacts)
    assert report == artifacts / "report"
    markdown = (report / "report.md").read_text()
    assert f"{WINNER_VALID_NDCG:.4f}" in markdown  # the winner's validation NDCG@10
    assert "| tune | failed | 41.3 |" in markdown and "| teacher-train | done | 78.8 |" in markdown
    assert "183.1 s" in markdown  # total stage seconds
    assert f"{TEACHER_PARAMETERS:,}" in markdown
    assert "| users | 120 |" in markdown and "| train | 793 |" in markdown
    assert "sasrec-seed42" in markdown and "0.1876" in markdown
    assert "3a1df94f (winner)" in markdown
    assert "Not run yet" not in markdown
    assert _pngs_referenced(report) == ["model_metrics.png", "pareto.png", "size_latency.png", "stage_timings.png",
                                        "tuning_history.png"]
    assert "rdistill report --measure-latency" in markdown  # no latency recorded: how to get it
    summary = report_summary(report)
    assert summary["sections_missing"] == []
    assert summary["sections_present"] == ["run", "prepare", "teacher-train", "teacher-infer", "tune", "export",
                                           "train-student"]
    assert not list(artifacts.glob(".report.tmp-*"))  # the staging folder was renamed into place


def test_missing_sections_are_not_run_yet(tmp_path):
    artifacts = tmp_path / "artifacts"
    (artifacts / "tune" / "distill").mkdir(parents=True)  # a campaign started, not finished
    atomic_write_json(artifacts / "students" / "broken" / "metrics.json", {})
    (artifacts / "students" / "broken" / "metrics.json").write_text("{not json")
    report = write_report(artifacts)
    markdown = (report / "report.md").read_text()
    assert "Not run yet: no `teacher/checkpoint/metrics.json` (run `rdistill teacher-train`)" in markdown
    assert "Not run yet: no `dataset/manifest.json` (run `rdistill prepare`)" in markdown
    assert "Not run yet: no `signals/manifest.json` (run `rdistill teacher-infer`)" in markdown
    assert "Not run yet: no `pipeline.json` (run `rdistill run`)" in markdown
    assert "Not finished yet: `tune/distill/` has no `summary.json`" in markdown
    assert "Not readable:" in markdown and "broken" in markdown
    assert list(report.glob("*.png")) == []
    summary = report_summary(report)
    assert summary["sections_present"] == [] and "teacher-train" in summary["sections_missing"]


def test_the_pareto_plot_needs_two_points(tmp_path):
    artifacts = tmp_path / "artifacts"
    atomic_write_json(artifacts / "teacher" / "checkpoint" / "metrics.json", {
        "best_epoch": 1, "valid": _metrics(0.16, 0.37), "test": _metrics(0.19, 0.41), "num_parameters": 1000,
        "history": [{"epoch": 1, "epoch_seconds": 18.0, "valid_ndcg_at_10": 0.16}]})
    report = write_report(artifacts)
    markdown = (report / "report.md").read_text()
    assert "Pareto plot skipped: 1 model(s)" in markdown
    assert not (report / "pareto.png").exists()
    assert _pngs_referenced(report) == ["model_metrics.png", "size_latency.png"]


def test_pareto_front_keeps_points_nothing_beats():
    # (cost, quality): (3, 0.1) is beaten by (1, 0.2); (2, 0.2) ties (1, 0.2) on quality at a higher cost
    points = [(1.0, 0.2), (2.0, 0.2), (3.0, 0.1), (4.0, 0.3), (0.5, 0.05)]
    assert pareto_front(points) == [4, 0, 3]


def test_text_from_the_artifacts_is_escaped_in_html(artifacts):
    summary_path = artifacts / "tune" / "distill" / "summary.json"
    summary = read_json(summary_path)
    summary["trials"][1]["error"] = "<script>alert('trial')</script>"
    summary["trials"][1]["trial_id"] = "<b>x</b>"
    atomic_write_json(summary_path, summary)
    report = write_report(artifacts)
    page = (report / "report.html").read_text()
    assert "<script>" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(&#x27;trial&#x27;)&lt;/script&gt;" in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_latency_is_measured_on_request_and_reused_while_the_model_is_the_same(artifacts):
    report = write_report(artifacts, measure_latency=True)
    recorded = read_json(report / "latency.json")
    assert recorded["student"]["latency_ms"] > 0 and "teacher" not in recorded  # the fake teacher has no weights
    # timed as the endpoint scores it: through the export's ONNX graph
    onnx = read_json(artifacts / "serving" / "model" / "manifest.json")["onnx"]
    assert onnx["file"] and recorded["student"]["runtime"] == "onnx", onnx
    assert "Measured by this report" in (report / "report.md").read_text()
    assert report_summary(report)["latency"] == "measured"

    report = write_report(artifacts)  # without the flag: the earlier measurement of the same export
    assert "Recorded by `rdistill report --measure-latency`" in (report / "report.md").read_text()
    assert report_summary(report)["latency"] == "recorded"

    manifest_path = artifacts / "serving" / "model" / "manifest.json"
    atomic_write_json(manifest_path, read_json(manifest_path) | {"version": "another"})
    report = write_report(artifacts)
    assert "Latency not measured" in (report / "report.md").read_text()
    assert not (report / "latency.json").exists()


def test_the_command_line_prints_its_summary(built_tree, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "rdistill.cli", "-q", "report", f"artifact_root={built_tree}", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["markdown"] == str(out / "report.md") and Path(summary["html"]).is_file()
    assert sorted(Path(plot).name for plot in summary["plots"]) == sorted(p.name for p in out.glob("*.png"))
    assert summary["sections_missing"] == [] and summary["latency"] == "not measured"

    missing = subprocess.run([*command[:-2], "artifact_root=" + str(tmp_path / "nowhere")], capture_output=True,
                             text=True, timeout=300)
    assert missing.returncode == 2 and "nothing to report" in missing.stderr

    helped = subprocess.run([sys.executable, "-m", "rdistill.cli", "report", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert helped.returncode == 0 and "--measure-latency" in helped.stdout and "key.sub=value" in helped.stdout


def _covering(inputs: list[tuple[str, str | None]], relative: str) -> list[str]:
    return [path for path, _ in inputs if relative == path or relative.startswith(path + "/")]


def _assert_inputs_are_exactly(inputs: list[tuple[str, str | None]], consulted: list[str]) -> None:
    """Each name the report looked at comes with exactly one input; each input holds something it looked at."""
    assert len({path for path, _ in inputs}) == len(inputs)
    for relative in consulted:
        assert len(_covering(inputs, relative)) == 1, (relative, inputs)
    for path, marker in inputs:
        assert any(_covering([(path, marker)], relative) for relative in consulted), (path, consulted)
        # a folder is pulled whole and only when complete; a single file needs no marker
        assert marker == (None if "." in path.rsplit("/", 1)[-1] else layout.MANIFEST), (path, marker)


def _opened_under(artifacts: Path, action) -> list[str]:
    global _OPENED
    _OPENED = []
    try:
        action()
    finally:
        opened, _OPENED = _OPENED, None
    root = artifacts.resolve()
    names = {Path(path).resolve().relative_to(root).as_posix() for path in opened
             if Path(path).resolve().is_relative_to(root)}
    return sorted(name for name in names if not name.startswith(f".{layout.REPORT}"))  # its own staging folder


@pytest.mark.parametrize("measure", [False, True])
def test_report_inputs_list_exactly_what_the_report_reads(artifacts, measure):
    if not measure:  # a later report reads the earlier measurement: there is one to read
        write_report(artifacts, measure_latency=True)
    inputs = report_inputs("distill", student_runs(layout.ArtifactLayout(artifacts)), measure_latency=measure)
    found = collect(artifacts, "distill")
    latency(found, artifacts / layout.REPORT, measure)
    _assert_inputs_are_exactly(inputs, found.consulted)
    assert (layout.table("valid") in found.consulted) == measure
    assert (layout.join(layout.REPORT, layout.LATENCY_FILE) in found.consulted) == (not measure)

    # what the whole report really opens (Python-side: JSON files, the safetensors header) is among them
    opened = _opened_under(artifacts, lambda: write_report(artifacts, measure_latency=measure))
    assert layout.manifest_of(layout.SERVING_MODEL) in opened and layout.PIPELINE_STATE in opened
    assert all(len(_covering(inputs, name)) == 1 for name in opened), (opened, inputs)


def test_report_inputs_without_a_campaign_or_students():
    inputs = dict(report_inputs(None, [".staging-run"], measure_latency=False))
    assert not any(path.startswith(layout.TUNE) or path.startswith(layout.STUDENTS) for path in inputs)
    assert inputs[layout.SERVING_MODEL] == layout.MANIFEST and inputs[layout.PIPELINE_STATE] is None


def test_a_uri_roots_mirror_holds_what_the_report_needs_after_pulling_its_inputs(artifacts, tmp_path, monkeypatch):
    from dataclasses import asdict

    from rdistill.report.collect import report_addresses
    from rdistill.stages.registry import pull_addresses
    from rdistill.storage import CACHE_DIR_ENV, open_root

    run = artifacts / layout.student_run("sasrec-seed42")
    atomic_write_json(run / layout.MANIFEST, {"stage": "train-student"})  # a finished run, as the stage writes it
    (artifacts / layout.STUDENTS / ".sasrec-seed43.tmp-1").mkdir()  # a run being written: never pulled
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    root = open_root(f"file://{artifacts}")
    assert root.is_remote and not (root.local / layout.DATASET).exists()
    pull_addresses(root, report_addresses(root, "distill", measure_latency=True))

    here, there = collect(artifacts, "distill"), collect(root.local, "distill")
    assert {**asdict(there), "root": None} == {**asdict(here), "root": None}
    assert student_runs(layout.ArtifactLayout(root.local)) == ["sasrec-seed42"]
    assert not (root.local / layout.table("train")).exists()  # only the split the latency history comes from
    measured, note = latency(there, root.local / layout.REPORT, measure=True)
    assert measured and measured["student"]["latency_ms"] > 0, note


def test_sections_are_keyed_by_stage_and_name_its_command():
    from rdistill.report.collect import HOW_TO_RUN, SECTIONS
    from rdistill.stages.registry import stages

    names = {stage.name for stage in stages()}
    assert set(SECTIONS) - {"run"} <= names and set(HOW_TO_RUN) == set(SECTIONS)
    for section, how in HOW_TO_RUN.items():
        assert how.startswith(f"`rdistill {section}`") or section == "export", how
    assert "`rdistill export`" in HOW_TO_RUN["export"]
