"""`rdistill report`: one Markdown and one HTML page over whatever the artifact root holds, with PNG plots.

The report only reads what the stages wrote (manifests, metrics.json files, the tuning summary, pipeline.json),
through rdistill/layout.py; a stage that has not run is a "not run yet" line, never an error. Plots that compare
or trade off models use validation numbers only: the test split is shown where it was evaluated, but nothing is
chosen on it.

    collect.py   read the artifacts into a Collected; report_inputs: what to pull from a URI root first
    compare.py   one row per model (metrics, size, cost) for the comparisons and the Pareto front
    latency.py   --measure-latency (rdistill.tradeoff.time_saved_model), and reusing report/latency.json
    sections.py  the page's sections, keyed by stage name
    plots.py     the PNG figures
    render.py    the blocks, rendered as Markdown and as HTML

<out>/ (default <artifact_root>/report/), written as a whole under a temporary name, then renamed:
  report.md, report.html     the same content; the HTML is self-contained apart from the PNGs it names
  *.png                      tuning history, Pareto front, per-model metrics, size and latency, stage timings
  report.json                which sections were found, which files were written (what the CLI prints)
  latency.json               only after --measure-latency: kept by later reports while the models are unchanged
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rdistill import layout
from rdistill.artifacts import atomic_dir, read_json
from rdistill.errors import ArtifactError
from rdistill.report.collect import SECTIONS, Collected, collect, report_inputs
from rdistill.report.latency import latency as find_latency
from rdistill.report.render import Document
from rdistill.report.sections import add_sections

if TYPE_CHECKING:
    from rdistill.config import Config

__all__ = ["SECTIONS", "Collected", "collect", "report_dir", "report_inputs", "report_summary", "write_report"]


def report_dir(root: Path, out: Path | None = None) -> Path:
    return Path(out) if out is not None else layout.ArtifactLayout(Path(root)).report_dir


def _document(found: Collected, staging: Path, title: str, latency: dict[str, Any] | None,
              latency_note: str) -> tuple[Document, list[str], list[str]]:
    """(the page, sections present, sections missing); plots are written into staging."""
    doc = Document()
    doc.heading(title, 1)
    present = [section for section in SECTIONS if found.present(section)]
    missing = [section for section in SECTIONS if section not in present]
    doc.para(f"Generated at {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())} from `{found.root}`. Found: "
             f"{', '.join(present) or 'nothing'}; not run yet: {', '.join(missing) or 'nothing'}.")
    add_sections(doc, found, staging, latency, latency_note)
    return doc, present, missing


def _write(found: Collected, target: Path, latency: dict[str, Any] | None, latency_note: str,
           measured: bool) -> None:
    title = f"rdistill report: {found.root}"
    with atomic_dir(target) as staging:
        doc, present, missing = _document(found, staging, title, latency, latency_note)
        (staging / layout.REPORT_MARKDOWN_FILE).write_text(doc.markdown())
        (staging / layout.REPORT_HTML_FILE).write_text(doc.html(title))
        if latency:
            (staging / layout.LATENCY_FILE).write_text(json.dumps(latency, indent=2, sort_keys=True) + "\n")
        summary = {"report_dir": str(target), "markdown": str(target / layout.REPORT_MARKDOWN_FILE),
                   "html": str(target / layout.REPORT_HTML_FILE), "plots": [str(target / name) for name in doc.figures],
                   "sections_present": present, "sections_missing": missing, "unreadable": found.unreadable,
                   "latency": "measured" if measured and latency else "recorded" if latency else "not measured"}
        (staging / layout.REPORT_SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def write_report(source: Config | str | Path, out: Path | None = None, measure_latency: bool = False,
                 tune_name: str | None = None) -> Path:
    """Read the artifact root of `source` (a Config or a local root folder), write the report folder; return it.

    It reads local files only: for a URI root the stage runner pulls `report_addresses` into the mirror first and
    pushes the folder after (rdistill/stages/report.py)."""
    if isinstance(source, (str, Path)):
        root = Path(source)
    else:
        root, tune_name = source.artifact_path(), tune_name or source.tune.name
    if not root.is_dir():
        raise ArtifactError(f"artifact root {root} does not exist: nothing to report (check artifact_root)")
    found = collect(root, tune_name)
    target = report_dir(root, out)
    latency, latency_note = find_latency(found, target, measure_latency)
    _write(found, target, latency, latency_note, measure_latency)
    return target


def report_summary(target: Path) -> dict[str, Any]:
    """What write_report wrote into `target` (its report.json)."""
    return read_json(Path(target) / layout.REPORT_SUMMARY_FILE)
