"""Atomic writes, hashing and manifests (rdistill.artifacts)."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path

import pytest

from rdistill.artifacts import (
    ArtifactLayout,
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    build_manifest,
    file_sha256,
    package_versions,
    read_json,
    update_json_entry,
)


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------ atomic_dir


def test_atomic_dir_creates_target_on_success(tmp_path):
    target = tmp_path / "deep" / "out"
    with atomic_dir(target) as staging:
        assert staging.is_dir() and _entries(staging) == []
        assert staging.parent == target.parent and staging != target
        assert not target.exists()  # nothing is visible before the block ends
        (staging / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new"
    assert _entries(target.parent) == ["out"]


def test_atomic_dir_replaces_existing_only_on_success(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as staging:
        (staging / "new.txt").write_text("new")
        assert (target / "old.txt").read_text() == "old"  # still the old content while writing
    assert _entries(target) == ["new.txt"]
    assert (target / "new.txt").read_text() == "new"
    assert _entries(tmp_path) == ["out"]  # the retired copy is gone


def test_atomic_dir_failure_keeps_existing_and_cleans_up(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(target) as staging:
            (staging / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert _entries(target) == ["old.txt"]
    assert (target / "old.txt").read_text() == "old"
    assert _entries(tmp_path) == ["out"]


def test_atomic_dir_failure_without_existing_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(ValueError):
        with atomic_dir(target) as staging:
            (staging / "sub").mkdir()
            (staging / "sub" / "x").write_text("x")
            raise ValueError
    assert _entries(tmp_path) == []


def test_atomic_dir_cleans_up_on_keyboard_interrupt(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target):
            raise KeyboardInterrupt
    assert _entries(tmp_path) == []


# ------------------------------------------------------------------------------------------ atomic writes


def test_atomic_write_json(tmp_path):
    path = tmp_path / "sub" / "m.json"
    payload = {"b": [1, 2], "a": {"z": None, "y": 1.5}}
    atomic_write_json(path, payload)
    text = path.read_text()
    assert text == json.dumps(payload, indent=2, sort_keys=True) + "\n"
    assert text.index('"a"') < text.index('"b"')
    assert read_json(path) == payload
    atomic_write_json(path, {"c": 3})
    assert read_json(path) == {"c": 3}
    assert _entries(path.parent) == ["m.json"]


def test_atomic_write_json_failure_keeps_old_file(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"ok": True})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert read_json(path) == {"ok": True}
    assert _entries(tmp_path) == ["m.json"]


def test_update_json_entry_replaces_only_its_key(tmp_path):
    path = tmp_path / "results" / "bench.json"
    update_json_entry(path, "sci/run-a", {"ndcg": 0.08})
    update_json_entry(path, "ml/run-b", {"ndcg": 0.06})
    update_json_entry(path, "sci/run-a", {"ndcg": 0.09})
    assert read_json(path) == {"ml/run-b": {"ndcg": 0.06}, "sci/run-a": {"ndcg": 0.09}}
    assert _entries(path.parent) == ["bench.json"]


def test_update_json_entry_refuses_a_non_object_file(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"bench\.json: expected a JSON object of entries, found list"):
        update_json_entry(path, "k", 1)
    assert path.read_text() == "[1, 2]\n"


def test_atomic_write_bytes(tmp_path):
    path = tmp_path / "w.bin"
    atomic_write_bytes(path, b"\x00\x01abc")
    atomic_write_bytes(path, b"xyz")
    assert path.read_bytes() == b"xyz"
    assert _entries(tmp_path) == ["w.bin"]


# ------------------------------------------------------------------------------------------ hashing


@pytest.mark.parametrize("data", [b"", b"hello\n", bytes(range(256)) * 40])
def test_file_sha256_matches_hashlib(tmp_path, data):
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert file_sha256(path) == expected
    assert file_sha256(path, chunk_size=7) == expected  # chunked reading gives the same digest


def test_file_sha256_known_value(tmp_path):
    path = tmp_path / "abc.txt"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# ------------------------------------------------------------------------------------------ manifests


def test_build_manifest(tmp_path):
    source = tmp_path / "in.csv"
    source.write_bytes(b"a,b\n1,2\n")
    started = time.time() - 2.0
    manifest = build_manifest("prepare", {"seed": 1}, {"ratings": source}, {"rows": 1}, started,
                              extra={"note": "x"})
    assert manifest["stage"] == "prepare"
    assert manifest["config"] == {"seed": 1}
    assert manifest["inputs"] == {"ratings": {"path": str(source), "sha256": hashlib.sha256(b"a,b\n1,2\n").hexdigest()}}
    assert manifest["counts"] == {"rows": 1}
    assert manifest["note"] == "x"
    assert 2.0 <= manifest["wall_seconds"] < 60
    assert manifest["started_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    json.dumps(manifest)  # JSON-ready


def test_package_versions():
    versions = package_versions()
    assert versions["python"] == platform.python_version()
    assert versions["rdistill"] == "0.1.0"
    for name in ("torch", "pyarrow", "numpy", "pandas", "pydantic"):
        assert versions[name]


def test_layout_paths(tmp_path):
    layout = ArtifactLayout(tmp_path)
    assert layout.dataset_dir == tmp_path / "dataset"
    assert layout.table("train") == tmp_path / "dataset" / "train.parquet"
    assert layout.student_dir("sasrec-seed42") == tmp_path / "students" / "sasrec-seed42"
