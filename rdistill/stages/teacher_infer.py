"""`rdistill teacher-infer`: Ray Data batch inference of the teacher's signals (rdistill/teacher/infer.py)."""

from __future__ import annotations

import argparse
from typing import Any

from rdistill import layout
from rdistill.layout import Address
from rdistill.stages.registry import Stage, StageContext


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="recompute even when signals/ is up to date")


def _run(context: StageContext) -> dict[str, Any]:
    from rdistill.teacher.infer import infer_teacher, inference_summary

    return inference_summary(infer_teacher(context.config, force=context.option("force", False)))


STAGE = Stage(
    name="teacher-infer",
    help="batch-infer the teacher's top-K, embeddings and hidden states with Ray Data; writes signals/",
    description=(
        "Score every row of infer.splits (default: train) with the consolidated teacher in teacher/checkpoint/ "
        "through a Ray Data actor pool (infer.num_actors actors, infer.cpus_per_actor CPUs or one GPU each, "
        "infer.batch_size rows per batch) and write <artifact_root>/signals/: topk.parquet (the top infer.top_k "
        "items and scores and the user vector per row, joinable by row_id), item_emb.parquet (the teacher's item "
        "table) and, with infer.hidden_layers, hidden.parquet (pooled backbone states per row). A rerun with the "
        "same teacher, data and output settings skips; --force recomputes. Connects to the Ray cluster in "
        "RAY_ADDRESS, or starts a local one."
    ),
    run=_run,
    add_arguments=_arguments,
    # Ray Data reads dataset/ where the root lives, and the actors pull the teacher on their own nodes; the
    # driver needs both locally for its input checks
    reads=lambda context: [Address(layout.DATASET), Address(layout.TEACHER_CHECKPOINT)],
    writes=lambda context: [] if (context.summary or {}).get("skipped") else [Address(layout.SIGNALS)],
    key_sections=("infer",),
    upstream="teacher-train",
    output=lambda config: Address(layout.SIGNALS),
    # in the pipeline its key, not infer's own fingerprint, decides whether it runs
    pipeline_options=lambda same_key: {"force": True},
)
