"""`rdistill evaluate`: full-ranking metrics of a saved student or the popularity baseline (rdistill/evaluate.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rdistill import layout
from rdistill.layout import Address
from rdistill.stages.registry import Stage, StageContext


def _arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model-dir", type=Path, help="a saved student (folder with model_config.json)")
    target.add_argument("--popularity", action="store_true", help="evaluate the popularity baseline")
    parser.add_argument("--split", choices=["valid", "test"], default="valid", help="which split (default valid)")


def _run(context: StageContext) -> dict[str, Any]:
    from rdistill.evaluate import evaluate_saved

    return evaluate_saved(context.config, context.layout.dataset_dir, context.option("model_dir"),
                          context.option("popularity", False), context.option("split", "valid"))


STAGE = Stage(
    name="evaluate",
    help="full-ranking HR/NDCG/MRR@K of a saved student or the popularity baseline",
    description=(
        "Rank every item of the catalogue for each row of a split and report HR@K, NDCG@K and MRR@K for eval.ks. "
        "Select models on --split valid; look at test only for the final report."
    ),
    run=_run,
    add_arguments=_arguments,
    reads=lambda context: [Address(layout.DATASET)],
)
