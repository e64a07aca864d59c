"""The stage registry: every stage of rdistill declared once, with one name.

A stage's name is its command (`rdistill <name>`), its job module (`python -m jobs.<name with _>`), its record
in pipeline.json and its section of the report. Its declaration says what it reads and writes (addresses from
rdistill/layout.py), which config sections its pipeline skip-key depends on, its own command-line arguments and
`run(context)`. The runner (`run_stage`) pulls what a stage reads before it runs and pushes what it wrote after:
stages work on local paths only. (Code that runs on other Ray nodes, such as Tune trials and inference actors,
pulls for itself through `pull_addresses`, since it runs in another process on another machine.)

The CLI, the pipeline, the jobs and the report iterate `stages()`; nothing else lists them. A new stage is one
module that defines `STAGE` plus one line in `STAGE_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rdistill.layout import MANIFEST, Address, ArtifactLayout

if TYPE_CHECKING:
    from rdistill.config import Config
    from rdistill.storage import ArtifactRoot

# the built-in stages, in pipeline order; a stage is known by its module's STAGE
STAGE_MODULES = (
    "rdistill.stages.prepare",
    "rdistill.stages.teacher_train",
    "rdistill.stages.teacher_infer",
    "rdistill.stages.train_student",
    "rdistill.stages.evaluate",
    "rdistill.stages.tune",
    "rdistill.stages.export",
    "rdistill.stages.serve",
    "rdistill.stages.report",
    "rdistill.stages.compare",
)


@dataclass
class StageContext:
    """What a stage runs with: the validated config, its own options (parsed arguments), and the artifact root."""

    config: Config
    options: dict[str, Any] = field(default_factory=dict)
    in_pipeline: bool = False
    summary: dict[str, Any] | None = None  # what `run` returned, for `writes` that depend on what it did

    @cached_property
    def root(self) -> ArtifactRoot:
        return self.config.storage()  # a URI root is opened and probed once, here

    @property
    def layout(self) -> ArtifactLayout:
        return ArtifactLayout(self.root.local)

    def option(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)


def _no_addresses(context: StageContext) -> list[Address]:
    return []


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    return None


@dataclass(frozen=True)
class Stage:
    name: str  # one name: command, job module (with _), pipeline record, report section
    help: str  # one line, for `rdistill --help` and `rdistill stages`
    description: str  # a paragraph, for `rdistill <name> --help`
    run: Callable[[StageContext], dict[str, Any] | None]
    reads: Callable[[StageContext], list[Address]] = _no_addresses
    writes: Callable[[StageContext], list[Address]] = _no_addresses
    add_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    # pipeline stages only: the config sections of the skip-key, the stage whose output is its input, the
    # address whose marker proves the output complete, and the options the pipeline runs it with
    key_sections: tuple[str, ...] = ()
    upstream: str | None = None
    output: Callable[[Config], Address] | None = None
    pipeline_options: Callable[[bool], dict[str, Any]] = lambda same_key: {}

    @property
    def in_pipeline(self) -> bool:
        return self.output is not None

    @property
    def job_module(self) -> str:
        return f"jobs.{self.name.replace('-', '_')}"

    def output_marker(self, config: Config) -> str:
        """The file whose presence says the stage's output is complete, relative to the artifact root."""
        address = self.output(config)
        return f"{address.path}/{address.marker}" if address.marker else address.path


def stages() -> list[Stage]:
    """Every stage, in pipeline order (importing a stage module imports no torch or Ray)."""
    return [importlib.import_module(module).STAGE for module in STAGE_MODULES]


def stage(name: str) -> Stage:
    for candidate in stages():
        if candidate.name == name:
            return candidate
    raise KeyError(f"unknown stage {name!r}; stages: {[s.name for s in stages()]}")


def pipeline_stages() -> list[Stage]:
    return [candidate for candidate in stages() if candidate.in_pipeline]


def out_address(context: StageContext, default: str, marker: str | None = MANIFEST) -> list[Address]:
    """Where a stage with an `--out` option wrote: `default` under the root, or `--out` when it lies inside the root;
    nothing to push when `--out` lies outside it."""
    if context.option("out") is None:
        return [Address(default, marker)]
    relative = context.root.relative(Path(context.option("out")).resolve())
    return [Address(relative, marker)] if relative is not None else []


def pull_addresses(root: ArtifactRoot, addresses: list[Address]) -> None:
    for address in addresses:
        root.pull(address.path, marker=address.marker)


def push_addresses(root: ArtifactRoot, addresses: list[Address]) -> None:
    for address in addresses:
        root.push(address.path, marker=address.marker)


def run_stage(stage_or_name: Stage | str, context: StageContext) -> dict[str, Any] | None:
    """Pull the stage's inputs into the local mirror, run it, push its outputs (a no-op for a local root)."""
    declared = stage(stage_or_name) if isinstance(stage_or_name, str) else stage_or_name
    root = context.root
    pull_addresses(root, declared.reads(context))
    context.summary = declared.run(context)
    push_addresses(root, declared.writes(context))
    return context.summary


def describe_stages() -> list[dict[str, Any]]:
    """`rdistill stages`: each stage's name, job module, and what it reads and writes with the default config (on
    an empty temporary root, so nothing is created or opened where the user stands)."""
    import tempfile

    from rdistill.config import Config

    rows = []
    with tempfile.TemporaryDirectory() as empty_root:
        context = StageContext(Config(artifact_root=empty_root))
        for declared in stages():
            rows.append({"stage": declared.name, "job": f"python -m {declared.job_module}", "help": declared.help,
                         "reads": [address.path for address in _safe(declared.reads, context)],
                         "writes": [address.path for address in _safe(declared.writes, context)],
                         "pipeline": declared.in_pipeline, "key_sections": list(declared.key_sections)})
    return rows


def _safe(addresses: Callable[[StageContext], list[Address]], context: StageContext) -> list[Address]:
    try:
        return addresses(context)
    except (KeyError, TypeError):  # addresses that depend on a command-line option left unset here
        return []
