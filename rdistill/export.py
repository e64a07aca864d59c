"""The serving/model/ format: one exported student, everything the endpoint needs, and its lineage.

Written by the tuning stage for its winner (and by `rdistill export` for any saved student); read by the endpoint (rdistill/serving/).
One module owns the format so the writer and the reader can never drift apart.

serving/model/
  model.safetensors, model_config.json   the student (rdistill.models.save_student), embedding offsets folded in
  model.onnx                             the same student's scores as an ONNX graph (rdistill/onnx_scoring.py),
                                         checked against torch; absent when the student does not export
  items.parquet                          item_idx, item_id, text: the catalogue the model scores
  metrics.json                           validation (and test) metrics of the exported weights
  manifest.json                          name, version (sha256 of the weights), trained_at, config, lineage,
                                         onnx (the graph's opset and parity check, or why there is none)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rdistill import layout
from rdistill.artifacts import (
    MANIFEST_NAME,
    atomic_dir,
    atomic_write_json,
    file_sha256,
    package_versions,
    read_json,
)
from rdistill.data.schema import ITEMS_SCHEMA
from rdistill.errors import ArtifactError

log = logging.getLogger(__name__)

ITEMS_FILE = layout.SERVING_ITEMS_FILE
METRICS_FILE = layout.METRICS


@dataclass
class ExportedModel:
    model: Any  # a SequentialRecommender in eval mode
    items: pa.Table  # item_idx, item_id, text, ordered by item_idx (row i is item_idx i + 1)
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    directory: Path

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def trained_at(self) -> str:
        return self.manifest["trained_at"]


def export_student(model, items: pa.Table, directory: Path, metrics: dict[str, Any], config: dict[str, Any],
                   lineage: dict[str, Any], name: str | None = None) -> Path:
    """Write `model` (offsets folded) with its item table into `directory`, atomically; returns the folder.

    The ONNX graph is written too when the student exports and matches torch; when it does not, the manifest
    says why and serving scores with torch."""
    from rdistill.models import WEIGHTS_FILE, save_student
    from rdistill.onnx_scoring import ONNX_FILE, export_onnx

    if items.num_rows != model.n_items:
        raise ArtifactError(f"the item table has {items.num_rows} items but the model scores {model.n_items}")
    if hasattr(model, "fold_item_embeddings"):
        model.fold_item_embeddings()
    items = items.select(ITEMS_SCHEMA.names).cast(ITEMS_SCHEMA).sort_by("item_idx")
    with atomic_dir(Path(directory)) as staging:
        save_student(model, staging)
        pq.write_table(items, staging / ITEMS_FILE)
        try:
            onnx = export_onnx(model, staging / ONNX_FILE)
        except ArtifactError as err:
            log.warning("%s; serving will score with torch", err)
            (staging / ONNX_FILE).unlink(missing_ok=True)
            onnx = {"file": None, "error": str(err)}
        atomic_write_json(staging / METRICS_FILE, metrics)
        atomic_write_json(staging / MANIFEST_NAME, {
            "stage": "export",
            "name": name or model.name,
            "version": file_sha256(staging / WEIGHTS_FILE)[:12],
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "student": model.model_config(),
            "config": config,
            "lineage": lineage,
            "onnx": onnx,
            "versions": package_versions(),
        })
    return Path(directory)


def load_exported(directory: Path) -> ExportedModel:
    """Load an exported student for serving; errors name the missing or inconsistent file."""
    from rdistill.models import load_student

    directory = Path(directory)
    for name in (MANIFEST_NAME, ITEMS_FILE, METRICS_FILE):
        if not (directory / name).is_file():
            raise ArtifactError(f"{directory / name} is missing: {directory} is not an exported model "
                                "(run `rdistill tune` or `rdistill export`)")
    model = load_student(directory)
    items = pq.read_table(directory / ITEMS_FILE)
    missing = [name for name in ITEMS_SCHEMA.names if name not in items.column_names]
    if missing:
        raise ArtifactError(f"{directory / ITEMS_FILE}: columns {missing} missing")
    items = items.select(ITEMS_SCHEMA.names).sort_by("item_idx")
    if items.num_rows != model.n_items or items.column("item_idx").to_pylist() != list(range(1, model.n_items + 1)):
        raise ArtifactError(f"{directory / ITEMS_FILE} does not hold items 1..{model.n_items} the model scores")
    return ExportedModel(model=model, items=items, manifest=read_json(directory / MANIFEST_NAME),
                         metrics=read_json(directory / METRICS_FILE), directory=directory)
