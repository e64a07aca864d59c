"""`rdistill tune`: Ray Tune + Optuna TPE + ASHA over student runs; the winner exported (rdistill/tune.py)."""

from __future__ import annotations

import argparse
from typing import Any

from rdistill import layout
from rdistill.config import Config
from rdistill.layout import Address
from rdistill.stages.registry import Stage, StageContext


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fresh", action="store_true", help="discard an existing campaign of the same name")


def _run(context: StageContext) -> dict[str, Any]:
    from rdistill.tune import tune_students, tune_summary

    return tune_summary(tune_students(context.config, fresh=context.option("fresh", False)))


def tune_inputs(config: Config) -> list[Address]:
    """The dataset, and the teacher's signals when any trial distils (the trials pull them on their own nodes)."""
    searched_distill = any(key.startswith("distill.") for key in config.tune.search_space(config.student.name))
    distils = searched_distill or config.distill.uses_teacher()
    return [Address(layout.DATASET)] + ([Address(layout.SIGNALS)] if distils else [])


def _writes(context: StageContext) -> list[Address]:
    # single files, not the campaign folder: on a URI root Ray Tune keeps the trials' state there itself
    from rdistill.tune import PARETO_FILE

    campaign = layout.tune_campaign(context.config.tune.name)
    files = [layout.TUNE_SUMMARY_FILE] + ([PARETO_FILE] if context.config.tune.objective == "quality_latency" else [])
    addresses = [Address(layout.join(campaign, name), marker=None) for name in files]
    return addresses + ([Address(layout.SERVING_MODEL)] if context.config.tune.export else [])


def _output(config: Config) -> Address:
    if config.tune.export:
        return Address(layout.SERVING_MODEL)
    # nothing is exported: the campaign's summary is the output
    return Address(layout.join(layout.tune_campaign(config.tune.name), layout.TUNE_SUMMARY_FILE), marker=None)


STAGE = Stage(
    name="tune",
    help="search student settings and distillation weights with Ray Tune + Optuna TPE + ASHA; export the winner",
    description=(
        "Run tune.num_samples student trials (distilled from <artifact_root>/signals/ when a distillation weight is "
        "set or searched) with settings drawn from tune.space (default: the distillation weights and the learning "
        "rate) by Optuna's TPE sampler seeded with `seed` (tune.search=random for plain random sampling), at most "
        "tune.max_concurrent at once with tune.cpus_per_trial / tune.gpus_per_trial each. ASHA "
        "(tune.scheduler=asha) stops weak trials after tune.grace_period epochs. The winner is chosen on validation "
        "only; its test metrics are computed once, and it is exported to <artifact_root>/serving/model/. The "
        "campaign lives in <artifact_root>/tune/<tune.name>/: running the command again after an interruption "
        "resumes it (--fresh starts over). Connects to the Ray cluster in RAY_ADDRESS, or starts a local one."
    ),
    run=_run,
    add_arguments=_arguments,
    reads=lambda context: tune_inputs(context.config),
    writes=_writes,
    key_sections=("seed", "student", "train", "eval", "distill", "tune"),
    upstream="teacher-infer",
    output=_output,
    # same settings and inputs as an unfinished earlier attempt: resume its campaign; anything else: start over
    pipeline_options=lambda same_key: {"fresh": not same_key},
)
