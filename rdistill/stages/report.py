"""`rdistill report`: report.md, report.html and plots over what the artifact root holds (rdistill/report/)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rdistill import layout
from rdistill.layout import Address
from rdistill.stages.registry import Stage, StageContext, out_address


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, help="target folder (default <artifact_root>/report)")
    parser.add_argument("--measure-latency", action="store_true",
                        help="time one user's scoring by the teacher and the exported student on CPU (one thread)")


def _run(context: StageContext) -> dict[str, Any]:
    from rdistill.report import report_summary, write_report

    return report_summary(write_report(context.config, out=context.option("out"),
                                       measure_latency=context.option("measure_latency", False)))


def _reads(context: StageContext) -> list[Address]:
    from rdistill.report.collect import report_addresses

    return report_addresses(context.root, context.config.tune.name, context.option("measure_latency", False))


STAGE = Stage(
    name="report",
    help="write report.md and report.html with plots (PNG) over what the artifact root holds",
    description=(
        "Read whatever the stages have written under the artifact root (the manifests and metrics of prepare, "
        "teacher-train, teacher-infer, tune, export and train-student, and pipeline.json) and write "
        "<artifact_root>/report/ (or --out): report.md, a self-contained report.html, and PNG plots of the tuning "
        "history, the Pareto front of validation NDCG@10 against cost, per-model metrics, teacher vs student size "
        "and latency, and stage timings. Stages that have not run are reported as 'not run yet'. Latency is shown "
        "when --measure-latency times it (one user's history scored on CPU) or an earlier report measured the same "
        "models."
    ),
    run=_run,
    add_arguments=_arguments,
    reads=_reads,
    writes=lambda context: out_address(context, layout.REPORT, marker=layout.REPORT_SUMMARY_FILE),
)
