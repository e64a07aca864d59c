"""`rdistill export`: a saved student with its item table -> serving/model/ (rdistill/export.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rdistill import layout
from rdistill.layout import Address
from rdistill.stages.registry import Stage, StageContext, out_address


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, required=True, help="a saved student folder")
    parser.add_argument("--out", type=Path, default=None, help="target folder (default <artifact_root>/serving/model)")


def _target(context: StageContext) -> Path:
    return context.option("out") or context.layout.serving_model_dir


def _run(context: StageContext) -> dict[str, Any]:
    from rdistill.artifacts import lineage, read_json
    from rdistill.config import config_to_dict
    from rdistill.data.schema import read_table
    from rdistill.errors import DataError
    from rdistill.export import export_student
    from rdistill.models import load_student

    model_dir = Path(context.option("model_dir"))
    model = load_student(model_dir)
    items = read_table(context.layout.dataset_dir, "items")
    if model.n_items != items.num_rows:
        raise DataError(f"{model_dir} was trained on {model.n_items} items but {context.layout.dataset_dir} has "
                        f"{items.num_rows}: export it with the dataset it was trained on")
    metrics_path, run_manifest = model_dir / layout.METRICS, model_dir / layout.MANIFEST
    metrics = read_json(metrics_path) if metrics_path.is_file() else {}
    source: dict[str, Any] = {"student_dir": str(model_dir.resolve())}
    if run_manifest.is_file():
        source["run_config"] = read_json(run_manifest).get("config")
    target = export_student(model, items, _target(context),
                            {key: metrics.get(key) for key in ("valid", "test", "best_epoch", "seed")},
                            config_to_dict(context.config), lineage(context.root, source))
    manifest = read_json(target / layout.MANIFEST)
    return {"serving_dir": str(target), "name": manifest["name"], "version": manifest["version"]}


STAGE = Stage(
    name="export",
    help="export a saved student with its item table to serving/model/ for the endpoint",
    description=(
        "Copy a saved student (--model-dir, e.g. <artifact_root>/students/sasrec-seed42) into the serving format: "
        "weights with any embedding offsets folded in, model config, the dataset's item table, its metrics and a "
        "lineage manifest. Writes <artifact_root>/serving/model/ unless --out is given. `rdistill tune` exports its "
        "winner the same way."
    ),
    run=_run,
    add_arguments=_arguments,
    reads=lambda context: [Address(layout.DATASET)],
    writes=lambda context: out_address(context, layout.SERVING_MODEL),
)
