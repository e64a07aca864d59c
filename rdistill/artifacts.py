"""Artifact layout under one root folder, atomic writes and stage manifests.

Every stage writes its output under a temporary name and renames it into place only when it is complete, so a
crash never leaves a half-written table that a later stage would trust. Beside its output each stage writes a
``manifest.json``: the config it ran with, hashes of its inputs, package versions, wall time and row counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import time
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from rdistill.layout import MANIFEST as MANIFEST_NAME  # noqa: F401  (re-exported)
from rdistill.layout import ArtifactLayout  # noqa: F401  (re-exported)

_VERSIONED_PACKAGES = ("rdistill", "torch", "pyarrow", "numpy", "pandas", "pydantic", "ray", "transformers",
                       "deepspeed", "optuna")


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _temporary_sibling(target)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        retired = _temporary_sibling(target)
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(target)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _temporary_sibling(path)
    try:
        staging.write_bytes(data)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def update_json_entry(path: Path, key: str, entry: Any) -> None:
    """Set `key` in the JSON object at `path` (empty if the file is missing) and rewrite the file atomically.

    Benchmark results files keep one entry per configuration, so a rerun replaces only its own entry.
    """
    path = Path(path)
    results = read_json(path) if path.is_file() else {}
    if not isinstance(results, dict):
        raise ValueError(f"{path}: expected a JSON object of entries, found {type(results).__name__}")
    results[key] = entry
    atomic_write_json(path, results)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def build_manifest(
    stage: str,
    config: dict[str, Any],
    inputs: dict[str, Path],
    counts: dict[str, int],
    started_at: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance record a stage writes beside its output."""
    return {
        "stage": stage,
        "config": config,
        "inputs": {name: {"path": str(path), "sha256": file_sha256(path)} for name, path in sorted(inputs.items())},
        "counts": counts,
        "versions": package_versions(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
        "wall_seconds": round(time.time() - started_at, 3),
        **(extra or {}),
    }


def lineage(root, source: dict[str, Any]) -> dict[str, Any]:
    """The one lineage record of an exported model: where it came from (`source`: a student folder, or a tuning
    campaign and trial), the item table it scores, and the manifests of the stages upstream of it, read where the
    root lives (this process may not have pulled them all)."""
    from rdistill import layout

    record: dict[str, Any] = {**source,
                              "dataset_items_sha256": file_sha256(layout.ArtifactLayout(root.local).table("items"))}
    for name, folder in (("dataset", layout.DATASET), ("signals", layout.SIGNALS),
                         ("teacher", layout.TEACHER_CHECKPOINT)):
        recorded = root.read_bytes(layout.manifest_of(folder))
        if recorded is not None:
            manifest = json.loads(recorded)
            record[name] = {"manifest": root.describe(layout.manifest_of(folder)),
                            "started_at": manifest.get("started_at"),
                            **({"fingerprint": manifest["fingerprint"]} if "fingerprint" in manifest else {})}
    return record
