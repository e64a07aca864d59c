"""`rdistill prepare`: interaction logs -> dataset/ (rdistill/data/prepare.py does the work)."""

from __future__ import annotations

from typing import Any

from rdistill import layout
from rdistill.layout import Address
from rdistill.stages.registry import Stage, StageContext


def _run(context: StageContext) -> dict[str, Any]:
    from rdistill.artifacts import read_json
    from rdistill.data.prepare import prepare_dataset

    dataset_dir = prepare_dataset(context.config, context.layout)
    return {"dataset_dir": str(dataset_dir), **read_json(dataset_dir / layout.MANIFEST)["counts"]}


STAGE = Stage(
    name="prepare",
    help="interaction logs -> dataset/ (items, users, leave-one-out train/valid/test Parquet)",
    description=(
        "Read the raw logs named by data.format / data.root / data.path (MovieLens, S3-Rec text or a generic "
        "CSV/Parquet), drop repeated (user, item) pairs, apply the k-core filter (data.min_user_interactions, "
        "data.min_item_interactions), order each user's interactions by timestamp then file order, and write the "
        "leave-one-out splits to <artifact_root>/dataset/ with a manifest.json. data.root defaults to "
        "$RDISTILL_DATA_DIR."
    ),
    run=_run,
    writes=lambda context: [Address(layout.DATASET)],
    key_sections=("data",),
    output=lambda config: Address(layout.DATASET),
)
