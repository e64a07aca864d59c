"""What the report reads: the stages' records under the artifact root, addressed only through rdistill/layout.py.

`collect` reads them into a `Collected` (None where a stage has not run) and records every relative name it
looked at; `report_inputs` lists, for the stage runner, the same names as (relative path, marker) pairs to pull
from a URI root before the report runs (the tests check that the two agree).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rdistill import layout
from rdistill.artifacts import read_json

if TYPE_CHECKING:
    from rdistill.storage import ArtifactRoot

# the report's sections, keyed by the stage (or command) that writes what each shows, in page order
SECTIONS = ("run", "prepare", "teacher-train", "teacher-infer", "tune", "export", "train-student")
HOW_TO_RUN = {
    "run": "`rdistill run`",
    "prepare": "`rdistill prepare`",
    "teacher-train": "`rdistill teacher-train`",
    "teacher-infer": "`rdistill teacher-infer`",
    "tune": "`rdistill tune`",
    "export": "`rdistill tune` (exports its winner) or `rdistill export`",
    "train-student": "`rdistill train-student`",
}
LATENCY_SPLIT = "valid"  # --measure-latency times one history of this dataset split


@dataclass
class Collected:
    """Everything the report shows, as read from the artifact root; None where a stage has not run."""

    root: Path
    pipeline: dict[str, Any] | None = None  # pipeline.json
    dataset: dict[str, Any] | None = None  # dataset/manifest.json
    teacher: dict[str, Any] | None = None  # teacher/checkpoint/metrics.json
    teacher_manifest: dict[str, Any] | None = None
    signals: dict[str, Any] | None = None  # signals/manifest.json
    tune_name: str | None = None
    tune: dict[str, Any] | None = None  # tune/<name>/summary.json
    tune_unfinished: bool = False  # the campaign exists without a summary
    serving_manifest: dict[str, Any] | None = None  # serving/model/
    serving_metrics: dict[str, Any] | None = None
    serving_parameters: int | None = None
    students: dict[str, dict[str, Any]] = field(default_factory=dict)  # run name -> students/<run>/metrics.json
    unreadable: dict[str, str] = field(default_factory=dict)  # section -> why its file could not be read
    consulted: list[str] = field(default_factory=list)  # every relative name looked at, found or not

    @property
    def layout(self) -> layout.ArtifactLayout:
        return layout.ArtifactLayout(self.root)

    def path(self, relative: str) -> Path:
        """The local path of an artifact the report looks at; the name is recorded in `consulted`."""
        if relative not in self.consulted:
            self.consulted.append(relative)
        return self.layout.path(relative)

    def read(self, relative: str, section: str) -> dict[str, Any] | None:
        """A JSON object, or None when absent; an unreadable file is None and a line in `unreadable`."""
        path = self.path(relative)
        if not path.is_file():
            return None
        try:
            payload = read_json(path)
        except (OSError, ValueError) as err:
            self.unreadable.setdefault(section, f"{path} could not be read ({err})")
            return None
        if not isinstance(payload, dict):
            self.unreadable.setdefault(section, f"{path} does not hold a JSON object")
            return None
        return payload

    def present(self, section: str) -> bool:
        return {"run": self.pipeline, "prepare": self.dataset, "teacher-train": self.teacher,
                "teacher-infer": self.signals, "tune": self.tune, "export": self.serving_manifest,
                "train-student": self.students or None}[section] is not None


def safetensors_parameters(path: Path) -> int | None:
    """Element count of a safetensors file, from its JSON header alone (no torch)."""
    try:
        with open(path, "rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_size))
        return sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None


def tune_summary(name: str) -> str:
    return layout.join(layout.tune_campaign(name), layout.TUNE_SUMMARY_FILE)


def tune_campaign_file(name: str) -> str:
    return layout.join(layout.tune_campaign(name), layout.TUNE_CAMPAIGN_FILE)


def recorded_latency() -> str:
    """report/latency.json: a measurement a later report reuses while the models are unchanged"""
    return layout.join(layout.REPORT, layout.LATENCY_FILE)


def campaign_name(local: layout.ArtifactLayout, tune_name: str | None) -> str | None:
    """tune_name, or with a bare root the campaign whose summary is newest (else the first campaign folder)."""
    if tune_name:
        return tune_name
    tune_dir = local.path(layout.TUNE)
    campaigns = sorted(path.name for path in tune_dir.iterdir() if path.is_dir()) if tune_dir.is_dir() else []
    finished = [name for name in campaigns if local.path(tune_summary(name)).is_file()]
    if finished:
        return max(finished, key=lambda name: local.path(tune_summary(name)).stat().st_mtime)
    return campaigns[0] if campaigns else None


def _collect_tune(found: Collected, tune_name: str | None) -> None:
    found.tune_name = campaign_name(found.layout, tune_name)
    if not found.tune_name:
        return
    found.tune = found.read(tune_summary(found.tune_name), "tune")
    started = found.path(tune_campaign_file(found.tune_name))  # pulled with the summary: the campaign began
    found.tune_unfinished = found.tune is None and (started.is_file() or started.parent.is_dir())


def _collect_serving(found: Collected) -> None:
    found.serving_manifest = found.read(layout.manifest_of(layout.SERVING_MODEL), "export")
    if found.serving_manifest is not None:
        found.serving_metrics = found.read(layout.metrics_of(layout.SERVING_MODEL), "export") or {}
        found.serving_parameters = safetensors_parameters(
            found.path(layout.join(layout.SERVING_MODEL, layout.WEIGHTS)))


def student_runs(local: layout.ArtifactLayout) -> list[str]:
    """students/* in the local root or mirror, without the staging folders of a run in progress."""
    if not local.students_dir.is_dir():
        return []
    return sorted(path.name for path in local.students_dir.iterdir()
                  if path.is_dir() and not path.name.startswith("."))


def collect(root: Path, tune_name: str | None = None) -> Collected:
    """Read what the stages wrote under the local root (or mirror) `root`."""
    found = Collected(root=Path(root))
    found.pipeline = found.read(layout.PIPELINE_STATE, "run")
    found.dataset = found.read(layout.manifest_of(layout.DATASET), "prepare")
    found.teacher = found.read(layout.metrics_of(layout.TEACHER_CHECKPOINT), "teacher-train")
    found.teacher_manifest = found.read(layout.manifest_of(layout.TEACHER_CHECKPOINT), "teacher-train")
    found.signals = found.read(layout.manifest_of(layout.SIGNALS), "teacher-infer")
    _collect_tune(found, tune_name)
    _collect_serving(found)
    for run in student_runs(found.layout):
        metrics = found.read(layout.metrics_of(layout.student_run(run)), "train-student")
        if metrics is not None:
            found.students[run] = metrics
    return found


def report_inputs(tune_name: str | None, students: list[str], measure_latency: bool = False
                  ) -> list[tuple[str, str | None]]:
    """(relative path, marker) of everything the report reads, for a URI root's pull: single files (marker None)
    where a section needs only those, whole folders where it reads their content (a folder is pulled only when
    its marker is there). `students`: the run names under students/ where the root lives
    (`ArtifactRoot.list_dirs(layout.STUDENTS)`); `tune_name`: the config's tune.name (None: no campaign)."""
    files = [layout.PIPELINE_STATE, layout.manifest_of(layout.DATASET), layout.manifest_of(layout.SIGNALS)]
    if tune_name:
        files += [tune_summary(tune_name), tune_campaign_file(tune_name)]
    folders = [layout.SERVING_MODEL, *(layout.student_run(run) for run in students if not run.startswith("."))]
    if measure_latency:  # the models themselves: the export, the teacher, a history to score
        files.append(layout.table(LATENCY_SPLIT))
        folders.append(layout.TEACHER_CHECKPOINT)
    else:  # the teacher's records only, and an earlier measurement to reuse
        files += [layout.metrics_of(layout.TEACHER_CHECKPOINT), layout.manifest_of(layout.TEACHER_CHECKPOINT),
                  recorded_latency()]
    return [(path, None) for path in files] + [(path, layout.MANIFEST) for path in folders]


def report_addresses(root: ArtifactRoot, tune_name: str | None, measure_latency: bool) -> list[layout.Address]:
    """report_inputs as the stage runner's addresses, the student runs listed where `root` lives."""
    students = root.list_dirs(layout.STUDENTS)
    return [layout.Address(path, marker) for path, marker in report_inputs(tune_name, students, measure_latency)]
