"""Artifact roots on object stores (rdistill/storage.py): pull/push through pyarrow.fs on a file:// root and on a
real S3-protocol server (moto) on 127.0.0.1; prepare + train-student, and the Ray stages, on an s3:// root."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from rdistill.artifacts import file_sha256
from rdistill.config import ARTIFACT_ROOT_ENV, load_config
from rdistill.errors import ArtifactError, ConfigError
from rdistill.storage import CACHE_DIR_ENV, mirror_dir, open_root

from tiny_data import tiny_config, write_cyclic_log

BUCKET = "rdistill-test"
# Ray workers keep the environment Ray started with, before this module's fixtures changed it
WORKER_CACHE_DIR = os.environ.get(CACHE_DIR_ENV)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    """Every test gets its own mirror folder, and no artifact root from the environment."""
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(ARTIFACT_ROOT_ENV, raising=False)
    return tmp_path / "cache"


def fresh_machine(monkeypatch, tmp_path, name: str) -> Path:
    """Another machine's view of the same remote root: an empty mirror folder."""
    folder = tmp_path / name
    monkeypatch.setenv(CACHE_DIR_ENV, str(folder))
    return folder


def write_stage_folder(folder: Path, tables: dict[str, bytes], manifest: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in tables.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    if manifest is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest))


def remote_files(root, relative: str) -> dict[str, bytes]:
    base = f"{root.remote}/{relative}".rstrip("/")
    infos = root.filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    files = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            with root.filesystem.open_input_stream(info.path) as stream:
                files[info.path[len(base) + 1:]] = stream.read()
    return files


# ------------------------------------------------------------------------------------------- plain local paths


def test_a_plain_path_root_is_the_folder_itself_and_nothing_is_copied(tmp_path, cache_dir):
    root = open_root(str(tmp_path / "artifacts"))
    assert not root.is_remote and root.local == tmp_path / "artifacts"
    write_stage_folder(root.local / "dataset", {"items.parquet": b"x"}, {"stage": "prepare"})
    root.push("dataset")
    root.pull("dataset", "signals")  # nothing to do, and nothing is removed
    assert (root.local / "dataset" / "items.parquet").read_bytes() == b"x"
    assert root.location("dataset/train.parquet") == (str((tmp_path / "artifacts/dataset/train.parquet").resolve()),
                                                      None)
    assert root.read_bytes("dataset/manifest.json") == b'{"stage": "prepare"}'
    assert not cache_dir.exists()


# ------------------------------------------------------------------------------------ file:// through pyarrow.fs


def test_push_then_pull_on_another_machine_through_a_file_uri(tmp_path, monkeypatch, cache_dir):
    remote_dir = tmp_path / "remote"
    uri = f"file://{remote_dir}"
    root = open_root(uri)
    assert root.is_remote and root.local == mirror_dir(uri) and root.local.is_relative_to(cache_dir / "roots")
    assert remote_dir.is_dir()  # the probe created the root
    tables = {"items.parquet": b"items", "train.parquet": b"t" * 5000, "sub/extra.bin": b"e"}
    write_stage_folder(root.local / "dataset", tables, {"stage": "prepare"})
    root.push(root.local / "dataset")  # an absolute path inside the mirror works as well as "dataset"
    assert remote_files(root, "dataset") == {**tables, "manifest.json": b'{"stage": "prepare"}'}
    assert not any(".tmp-" in name for name in remote_files(root, ""))

    fresh_machine(monkeypatch, tmp_path, "other-cache")
    other = open_root(uri)
    assert other.local != root.local and not (other.local / "dataset").exists()
    other.pull("dataset")
    assert {p.relative_to(other.local / "dataset").as_posix(): p.read_bytes()
            for p in (other.local / "dataset").rglob("*") if p.is_file()} == remote_files(root, "dataset")


def test_a_pull_copies_only_what_changed_and_follows_removals(tmp_path):
    root = open_root(f"file://{tmp_path / 'remote'}")
    write_stage_folder(root.local / "signals", {"topk.parquet": b"a", "hidden.parquet": b"h"}, {"v": 1})
    root.push("signals")
    unchanged = (root.local / "signals" / "topk.parquet").stat()
    root.pull("signals")  # the mirror carries the remote times after a push: nothing is downloaded again
    assert (root.local / "signals" / "topk.parquet").stat().st_ino == unchanged.st_ino

    # another machine rewrites signals/ without hidden states
    remote = tmp_path / "remote" / "signals"
    (remote / "hidden.parquet").unlink()
    (remote / "topk.parquet").write_bytes(b"b2")
    (remote / "manifest.json").write_text(json.dumps({"v": 2}))
    root.pull("signals")
    assert sorted(p.name for p in (root.local / "signals").iterdir()) == ["manifest.json", "topk.parquet"]
    assert (root.local / "signals" / "topk.parquet").read_bytes() == b"b2"

    # a pushed folder replaces the remote one whole: files the mirror no longer has are deleted remotely
    (root.local / "signals" / "topk.parquet").unlink()
    (root.local / "signals" / "item_emb.parquet").write_bytes(b"i")
    root.push("signals")
    assert sorted(p.name for p in remote.iterdir()) == ["item_emb.parquet", "manifest.json"]


def test_a_remote_folder_without_its_manifest_is_absent(tmp_path):
    root = open_root(f"file://{tmp_path / 'remote'}")
    write_stage_folder(tmp_path / "remote" / "dataset", {"items.parquet": b"half"})  # a push that never ended
    write_stage_folder(root.local / "dataset", {"items.parquet": b"stale"}, {"old": True})
    root.pull("dataset")
    assert not (root.local / "dataset").exists()
    root.pull("teacher/checkpoint")  # not there at all: fine, and absent
    assert not (root.local / "teacher" / "checkpoint").exists()
    root.pull("teacher/ds_checkpoint", marker=None)  # no marker asked for: copied as it is
    assert not (root.local / "teacher" / "ds_checkpoint").exists()


def test_an_interrupted_push_never_leaves_a_folder_that_looks_complete(tmp_path, monkeypatch):
    root = open_root(f"file://{tmp_path / 'remote'}")
    write_stage_folder(root.local / "dataset", {"items.parquet": b"v1", "train.parquet": b"v1"}, {"v": 1})
    root.push("dataset")
    # version 2 fails half-way: the remote already holds a folder where one of its files must go
    write_stage_folder(root.local / "dataset", {"items.parquet": b"v2", "train.parquet": b"v2",
                                                "users.parquet": b"v2"}, {"v": 2})
    (tmp_path / "remote" / "dataset" / "users.parquet").mkdir()
    with pytest.raises(ArtifactError, match="pushing dataset failed"):
        root.push("dataset")
    assert not (tmp_path / "remote" / "dataset" / "manifest.json").exists()  # v1's manifest went first

    fresh_machine(monkeypatch, tmp_path, "other-cache")
    other = open_root(f"file://{tmp_path / 'remote'}")
    other.pull("dataset")
    assert not (other.local / "dataset").exists()  # neither v1 nor a mix of v1 and v2
    assert other.read_bytes("dataset/manifest.json") is None


def test_single_files_are_replaced_whole_and_deleted(tmp_path):
    root = open_root(f"file://{tmp_path / 'remote'}")
    root.write_bytes("pipeline.json", b'{"prepare": 1}')
    root.write_bytes("pipeline.json", b'{"prepare": 2}')
    assert (tmp_path / "remote" / "pipeline.json").read_bytes() == b'{"prepare": 2}'
    assert sorted(p.name for p in (tmp_path / "remote").iterdir()) == ["pipeline.json"]
    assert root.exists("pipeline.json") and root.read_bytes("nothing.json") is None
    root.delete("pipeline.json")
    assert not root.exists("pipeline.json") and not (root.local / "pipeline.json").exists()
    with pytest.raises(ArtifactError, match="does not exist: nothing to push"):
        root.push("students/never-written")
    with pytest.raises(ArtifactError, match="not a sub-path"):
        root.push(tmp_path / "elsewhere")


# ---------------------------------------------------------------------------------------------------- errors


def test_uri_roots_validate_offline_and_unknown_schemes_fail_naming_the_root(monkeypatch, capsys):
    config = load_config(None, ["artifact_root=s3://bucket/run?endpoint_override=127.0.0.1:1&scheme=http"])
    assert config.artifact_root.startswith("s3://bucket/run")  # no network at validation time
    with pytest.raises(ConfigError, match="neither a local path nor a URI"):
        load_config(None, ["artifact_root=://nothing"])
    with pytest.raises(ConfigError, match=r"'nosuch://bucket/run' is not a filesystem URI pyarrow can open"):
        load_config(None, ["artifact_root=nosuch://bucket/run"]).artifact_path()
    monkeypatch.setenv(ARTIFACT_ROOT_ENV, "file://relative/run")
    with pytest.raises(ConfigError, match="file://relative/run"):
        load_config(None, []).artifact_path()

    from rdistill.cli import main

    monkeypatch.delenv(ARTIFACT_ROOT_ENV)
    assert main(["train-student", "artifact_root=nosuch://bucket/run"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("rdistill train-student: error: artifact_root 'nosuch://bucket/run'")


# ------------------------------------------------------------------------------------------ S3 (moto on 127.0.0.1)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-protocol server (moto) on 127.0.0.1 with one bucket; dummy credentials in the environment."""
    server_module = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e .[dev])")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = _free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        endpoint = f"127.0.0.1:{port}"
        pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", allow_bucket_creation=True).create_dir(BUCKET)
        yield endpoint
    server.stop()


@pytest.fixture
def s3_uri(s3_endpoint) -> str:
    """A fresh prefix in the bucket. The credentials are in the URI too: Ray workers started before this test
    do not have them in their environment."""
    return (f"s3://testing:testing@{BUCKET}/{uuid.uuid4().hex[:8]}/run?endpoint_override={s3_endpoint}"
            "&scheme=http")


def test_s3_root_push_pull_and_manifest_rule(s3_uri, tmp_path, monkeypatch):
    root = open_root(s3_uri)
    assert root.remote.startswith(f"{BUCKET}/") and "testing" not in root.local.name
    write_stage_folder(root.local / "teacher" / "checkpoint", {"model.safetensors": b"w" * 3000,
                                                               "config.json": b"{}"}, {"stage": "teacher"})
    root.push("teacher/checkpoint")
    assert set(remote_files(root, "teacher/checkpoint")) == {"model.safetensors", "config.json", "manifest.json"}
    assert root.describe("signals").startswith(f"s3://***@{BUCKET}/")
    assert "/run/signals?endpoint_override=" in root.describe("signals")

    fresh_machine(monkeypatch, tmp_path, "other-cache")
    other = open_root(s3_uri)
    other.pull("teacher/checkpoint", "signals")
    assert (other.local / "teacher/checkpoint/model.safetensors").read_bytes() == b"w" * 3000
    assert not (other.local / "signals").exists()
    root.filesystem.delete_file(f"{root.remote}/teacher/checkpoint/manifest.json")
    other.pull("teacher/checkpoint")
    assert not (other.local / "teacher" / "checkpoint").exists()


def test_s3_errors_name_the_root_and_hide_secrets(s3_endpoint):
    with pytest.raises(ConfigError, match=r"artifact_root 's3://\*\*\*@no-such-bucket/run.*Bucket 'no-such-bucket' "
                                          r"not found.*credentials") as err:
        open_root(f"s3://key:sekrit@no-such-bucket/run?endpoint_override={s3_endpoint}&scheme=http")
    assert "sekrit" not in str(err.value)
    closed = f"127.0.0.1:{_free_port()}"  # nothing listens there: the AWS SDK retries, then gives up (~12 s)
    with pytest.raises(ConfigError, match=rf"artifact_root 's3://{BUCKET}/run\?endpoint_override={closed}.*"
                                          "cannot create or list"):
        open_root(f"s3://{BUCKET}/run?endpoint_override={closed}&scheme=http")


def cli_overrides(raw: Path, uri: str, *extra: str) -> list[str]:
    """tiny_config's settings as command-line overrides, with the artifact root on S3."""
    return [f"artifact_root={uri}", "data.format=generic", f"data.root={raw.parent}", "data.path=raw",
            "data.min_user_interactions=3", "data.min_item_interactions=1", "data.max_len=8",
            "train.progress=false", "train.batch_size=32", "train.num_threads=1", "student.name=gru4rec",
            "student.params={hidden_size: 16, dropout: 0.0}", "train.epochs=2", *extra]


def test_prepare_and_train_student_on_an_s3_root_then_a_fresh_machine_finds_them(s3_uri, tmp_path, monkeypatch,
                                                                                   capsys):
    from rdistill.cli import main
    from rdistill.pipeline import run_pipeline

    write_cyclic_log(tmp_path / "raw", seed=5)
    assert main(["-q", "prepare", *cli_overrides(tmp_path / "raw", s3_uri)]) == 0
    assert main(["-q", "train-student", *cli_overrides(tmp_path / "raw", s3_uri)]) == 0
    capsys.readouterr()
    root = open_root(s3_uri)
    dataset = remote_files(root, "dataset")
    assert set(dataset) == {"items.parquet", "users.parquet", "train.parquet", "valid.parquet", "test.parquet",
                            "manifest.json"}
    assert set(remote_files(root, "students/gru4rec-seed42")) == {"model.safetensors", "model_config.json",
                                                                  "metrics.json", "manifest.json"}

    # another machine: an empty mirror; the student trains on the dataset it pulls from S3
    fresh_machine(monkeypatch, tmp_path, "second-cache")
    assert main(["-q", "train-student", *cli_overrides(tmp_path / "raw", s3_uri, "train.run_name=second")]) == 0
    summary = json.loads(capsys.readouterr().out)
    mirror = open_root(s3_uri).local
    assert Path(summary["run_dir"]) == mirror / "students" / "second"
    assert (mirror / "dataset" / "train.parquet").read_bytes() == dataset["train.parquet"]
    assert "model.safetensors" in remote_files(root, "students/second")

    # the pipeline's state lives on S3 too: a third machine skips the stage the second one ran
    config = load_config(None, cli_overrides(tmp_path / "raw", s3_uri))
    assert [o.status for o in run_pipeline(config, stages=("prepare",), echo=lambda _: None)] == ["ran"]
    assert json.loads(remote_files(root, "")["pipeline.json"])["prepare"]["status"] == "done"
    fresh_machine(monkeypatch, tmp_path, "third-cache")
    assert [o.status for o in run_pipeline(config, stages=("prepare",), echo=lambda _: None)] == ["skipped"]
    assert not (open_root(s3_uri).local / "dataset").exists()  # skipping needs no download

    # the report of that machine reads what the others wrote, and lands on S3 as well
    assert main(["-q", "report", *cli_overrides(tmp_path / "raw", s3_uri)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["sections_present"]) == {"run", "prepare", "train-student"}
    assert {"report.md", "report.html", "report.json"} <= set(remote_files(root, "report"))


def test_a_serve_replica_loads_an_export_kept_on_s3(s3_uri, tmp_path, monkeypatch, capsys):
    """What a Serve replica on another node does: given the export's URI, it pulls the model into its own
    mirror and answers exactly as the model loaded from the exporting machine's folder."""
    from rdistill.cli import main
    from rdistill.serving import Recommender, ServeSettings
    from rdistill.storage import fetch_folder, join_uri

    write_cyclic_log(tmp_path / "raw", seed=6)
    overrides = cli_overrides(tmp_path / "raw", s3_uri)
    assert main(["-q", "prepare", *overrides]) == 0
    assert main(["-q", "train-student", *overrides]) == 0
    student_dir = open_root(s3_uri).local / "students" / "gru4rec-seed42"
    assert main(["-q", "export", "--model-dir", str(student_dir), *overrides]) == 0
    capsys.readouterr()
    exporter = Recommender(ServeSettings(model_dir=str(open_root(s3_uri).local / "serving" / "model")))

    replica_mirror = fresh_machine(monkeypatch, tmp_path, "replica-cache")
    model_uri = join_uri(s3_uri, "serving/model")
    assert model_uri.endswith("/run/serving/model?endpoint_override=" + s3_uri.split("endpoint_override=")[1])
    replica = Recommender(ServeSettings(model_dir=model_uri))
    assert replica_mirror in fetch_folder(model_uri).parents
    body = json.dumps({"history": exporter.catalogue.item_ids[:3], "k": 5}).encode()
    expected = exporter.score([exporter.parse(body, "application/json")])[0]
    got = replica.score([replica.parse(body, "application/json")])[0]
    assert [item.item_id for item in got.items] == [item.item_id for item in expected.items]
    assert [item.score for item in got.items] == pytest.approx([item.score for item in expected.items])

    with pytest.raises(ArtifactError, match="no finished folder"):
        fetch_folder(join_uri(s3_uri, "serving/nothing-here"))


# --------------------------------------------------------------------------- the Ray stages on an s3:// root


@pytest.fixture
def worker_mirror(s3_uri) -> Path:
    """The mirror that Ray workers on this node keep of `s3_uri` (removed afterwards)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(CACHE_DIR_ENV) if WORKER_CACHE_DIR is None else patch.setenv(CACHE_DIR_ENV, WORKER_CACHE_DIR)
        folder = mirror_dir(s3_uri)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
    for parent in (folder.parent, folder.parent.parent):  # roots/ and rdistill/ when nothing else is there
        with contextlib.suppress(OSError):
            parent.rmdir()


@pytest.mark.integration
def test_teacher_infer_and_tune_on_an_s3_root(ray_cluster, s3_uri, worker_mirror, tiny_root, tiny_backbone):
    """Ray Data reads the dataset from S3 and its actors pull the teacher into their node's mirror; Ray Tune
    keeps the campaign on S3, its trials pull dataset and signals; every output lands on S3."""
    import torch

    from rdistill.data.dataset import load_dataset_info
    from rdistill.data.schema import read_table
    from rdistill.export import load_exported
    from rdistill.models.lm_teacher import build_teacher, save_teacher
    from rdistill.stages.registry import StageContext, run_stage

    config = tiny_config(tiny_root, f"artifact_root={s3_uri}", f"teacher.model={tiny_backbone}",
                         "infer.progress=false", "infer.top_k=5", "infer.batch_size=64", "student.name=gru4rec",
                         "tune.num_samples=1", "tune.max_epochs=1", "tune.max_concurrent=1",
                         "tune.space={distill.kd_weight: {type: uniform, low: 0.1, high: 1.0}}")
    root = config.storage()
    shutil.copytree(tiny_root / "artifacts" / "dataset", root.local / "dataset")
    info = load_dataset_info(root.local / "dataset")
    torch.manual_seed(0)
    teacher, tokenizer = build_teacher(config.teacher.architecture(), read_table(root.local / "dataset", "items"),
                                       info.max_len)
    save_teacher(teacher, tokenizer, root.local / "teacher" / "checkpoint")
    (root.local / "teacher" / "checkpoint" / "manifest.json").write_text('{"stage": "teacher-train"}')
    root.push("dataset", "teacher/checkpoint")
    assert worker_mirror != root.local
    result = run_stage("teacher-infer", StageContext(config))  # the runner pushes what the stage wrote
    assert not result["skipped"] and result["rows"]["train"] > 0
    assert {"topk.parquet", "item_emb.parquet", "manifest.json"} <= set(remote_files(root, "signals"))
    assert run_stage("teacher-infer", StageContext(config))["skipped"]  # decided from the manifest on S3

    tuned = run_stage("tune", StageContext(config))
    assert tuned["serving_dir"] is not None
    assert {"model.safetensors", "items.parquet", "manifest.json"} <= set(remote_files(root, "serving/model"))
    campaign = remote_files(root, "tune/distill")
    assert "summary.json" in campaign and "campaign.json" in campaign
    assert any(name.endswith(".json") and name.startswith("experiment_state") for name in campaign)
    exported = load_exported(root.local / "serving" / "model")
    assert exported.manifest["lineage"]["signals"]["manifest"].startswith("s3://***@")
    assert file_sha256(root.local / "signals" / "manifest.json")  # pulled by tune's input check
    # the actors pulled the teacher, the trial its dataset and signals, into their own node's mirror
    for pulled in ("teacher/checkpoint/model.safetensors", "dataset/train.parquet", "signals/topk.parquet"):
        assert (worker_mirror / pulled).is_file(), pulled


@pytest.mark.integration
def test_teacher_train_on_an_s3_root_checkpoints_to_s3_and_survives_a_failure(ray_cluster, s3_uri, worker_mirror, tiny_root,
                                                                     tiny_backbone):
    """Ray Train reads the rows from S3 and keeps its checkpoints there; the injected failure (its marker written
    on S3 by the worker) is survived by a restart (Ray Train restores from the latest checkpoint, on S3); every
    output lands on S3."""
    from rdistill.stages.registry import StageContext, run_stage
    from rdistill.teacher.train import FAULT_MARKER

    config = tiny_config(tiny_root, f"artifact_root={s3_uri}", f"teacher.model={tiny_backbone}",
                         "teacher.batch_size=16", "teacher.num_workers=1", "teacher.cpus_per_worker=1",
                         "teacher.epochs=2", "teacher.patience=2", "teacher.max_steps_per_epoch=4",
                         "teacher.max_eval_rows=40", "teacher.fail_once_at_step=6", "teacher.max_failures=1")
    root = config.storage()
    shutil.copytree(tiny_root / "artifacts" / "dataset", root.local / "dataset")
    root.push("dataset")
    shutil.rmtree(root.local / "dataset")  # the stage must pull it
    result = run_stage("teacher-train", StageContext(config))
    assert result["global_steps"] == 8  # both epochs of 4 steps, despite the failure at step 6
    assert root.read_bytes(f"teacher/{FAULT_MARKER}").startswith(b"failed at step 6")
    assert {"model.safetensors", "metrics.json", "manifest.json"} <= set(remote_files(root, "teacher/checkpoint"))
    assert "latest" in remote_files(root, "teacher/ds_checkpoint")
    assert any(name.startswith("item_text_vectors-") for name in remote_files(root, "teacher/cache"))
    ray_files = [name for name in remote_files(root, "teacher/ray") if "/checkpoint_" in name]
    assert ray_files  # Ray Train's own checkpoints went to S3, not to the mirror
    assert not (root.local / "teacher" / "ray").exists()
    assert (worker_mirror / "teacher" / FAULT_MARKER).is_file()  # the worker wrote it through its own mirror
