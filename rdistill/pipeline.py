"""The whole path in one command (`rdistill run`): the registry's pipeline stages in order, resumable.

The pipeline stages are those of rdistill/stages/ that declare an output (prepare, teacher-train, teacher-infer,
tune, which exports the winner). Each runs under the same artifact root and is recorded in
<artifact_root>/pipeline.json with a key: a hash of the config sections it declares and of the manifest its
upstream stage wrote. A rerun skips each stage whose key is unchanged and whose output is still there, so it
resumes at the first stage that failed or whose inputs or settings changed (and everything after it, since their
input manifests change in turn).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rdistill import layout
from rdistill.artifacts import ArtifactLayout, atomic_write_json
from rdistill.config import Config, config_to_dict
from rdistill.stages.registry import Stage, StageContext, pipeline_stages, run_stage, stage
from rdistill.storage import ArtifactRoot

log = logging.getLogger(__name__)

STATE_FILE = layout.PIPELINE_STATE


@dataclass
class StageOutcome:
    name: str
    status: str  # "ran" or "skipped"
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _manifest_hash(root: ArtifactRoot, relative: str) -> str | None:
    # read where the root lives: a rerun on another machine (a URI root, a fresh mirror) sees the same keys
    recorded = root.read_bytes(relative)
    return hashlib.sha256(recorded).hexdigest() if recorded is not None else None


def _raw_input_listing(config: Config) -> list[tuple[str, int, int]]:
    """Name, size and mtime of the raw input files: cheap, and changes when the data is replaced."""
    path = config.data.resolve_path()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.exists() else []
    return [(str(p.relative_to(path) if path.is_dir() else p.name), p.stat().st_size, p.stat().st_mtime_ns)
            for p in files]


def stage_key(name: str, config: Config) -> str:
    """What the stage's output depends on: its config sections and its upstream stage's output manifest (the raw
    input files for a stage with none upstream)."""
    declared = stage(name)
    raw = config_to_dict(config)
    if declared.upstream is None:
        source: Any = _raw_input_listing(config)
    else:
        source = _manifest_hash(config.storage(), stage(declared.upstream).output_marker(config))
    return _digest({section: raw[section] for section in declared.key_sections} | {"input": source})


def stage_finished(name: str, config: Config) -> bool:
    """Whether the stage's output is complete where the root lives (its marker is there)."""
    return config.storage().exists(stage(name).output_marker(config))


class _State:
    """pipeline.json: each stage's record, rewritten atomically (and pushed) at every change."""

    def __init__(self, root: ArtifactRoot):
        self.root = root
        recorded = root.read_bytes(STATE_FILE)  # where the root lives, so a rerun on any machine sees it
        self.records: dict[str, Any] = json.loads(recorded) if recorded is not None else {}

    def save(self) -> None:
        atomic_write_json(ArtifactLayout(self.root.local).pipeline_state, self.records)
        self.root.push(STATE_FILE)


def _run_one(declared: Stage, config: Config, state: _State, key: str, same_key: bool) -> StageOutcome:
    started = time.time()
    state.records[declared.name] = {"key": key, "status": "running", "started_at": started}
    state.save()
    try:
        context = StageContext(config, declared.pipeline_options(same_key), in_pipeline=True)
        summary = run_stage(declared, context) or {}
    except BaseException as err:
        state.records[declared.name].update(status="failed", error=str(err)[:2000],
                                            seconds=round(time.time() - started, 1))
        state.save()
        raise
    seconds = time.time() - started
    state.records[declared.name] = {"key": key, "status": "done", "seconds": round(seconds, 1),
                                    "summary": summary, "finished_at": time.time()}
    state.save()
    return StageOutcome(declared.name, "ran", seconds, summary)


def run_pipeline(config: Config, stages: tuple[str, ...] | None = None, force: tuple[str, ...] = (),
                 echo: Callable[[str], None] | None = None) -> list[StageOutcome]:
    """Run the stages in order, skipping those already done with the same key; returns what happened."""
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    selected = [stage(name) for name in stages] if stages else pipeline_stages()
    state = _State(config.storage())  # a URI root is opened and probed here, before any stage
    outcomes = []
    for number, declared in enumerate(selected, start=1):
        key = stage_key(declared.name, config)
        record = state.records.get(declared.name, {})
        prefix = f"[{number}/{len(selected)}] {declared.name}"
        if (declared.name not in force and record.get("status") == "done" and record.get("key") == key
                and stage_finished(declared.name, config)):
            echo(f"{prefix}: up to date, skipped")
            outcomes.append(StageOutcome(declared.name, "skipped", 0.0, record.get("summary", {})))
            continue
        echo(f"{prefix}: running")
        outcomes.append(_run_one(declared, config, state, key, same_key=record.get("key") == key))
        echo(f"{prefix}: done in {outcomes[-1].seconds:.0f}s")
    return outcomes


def summary_table(outcomes: list[StageOutcome]) -> str:
    """A plain-text table of the stages: status, time and the headline numbers of each."""
    lines = [f"{'stage':<14} {'status':<8} {'seconds':>8}  result", "-" * 76]
    for outcome in outcomes:
        headline = {key: value for key, value in outcome.summary.items()
                    if isinstance(value, (int, float, str)) and not isinstance(value, bool)}
        lines.append(f"{outcome.name:<14} {outcome.status:<8} {outcome.seconds:>8.1f}  "
                     + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in list(headline.items())[:4]))
    lines.append(f"{'total':<14} {'':<8} {sum(o.seconds for o in outcomes):>8.1f}")
    return "\n".join(lines)


def sample_request(url: str, artifacts: ArtifactLayout, k: int = 5) -> dict[str, Any]:
    """POST /recommend with the most recent items of the first validation user; returns request and response."""
    import urllib.request

    from rdistill.data.schema import read_table

    items = read_table(artifacts.dataset_dir, "items")
    item_ids = dict(zip(items.column("item_idx").to_pylist(), items.column("item_id").to_pylist()))
    history = read_table(artifacts.dataset_dir, "valid").column("history")[0].as_py()[-10:]
    body = {"history": [item_ids[item] for item in history], "k": k}
    request = urllib.request.Request(f"{url}/recommend", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    token = os.environ.get("RDISTILL_SERVE_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=60) as response:
        return {"request": body, "response": json.loads(response.read())}


def _serve_sample(config: Config, port: int) -> tuple[StageOutcome, dict[str, Any]]:
    """Deploy the exported winner without blocking and answer the sample request."""
    from rdistill.serving import run_local
    from rdistill.stages.registry import pull_addresses

    started = time.time()
    root = config.storage()
    artifacts = ArtifactLayout(root.local)
    # the stages may have been skipped on this machine: their outputs may not be in its mirror yet
    pull_addresses(root, [layout.Address(layout.SERVING_MODEL), layout.Address(layout.DATASET)])
    url = run_local(artifacts.serving_model_dir, port=port, blocking=False)
    sample = sample_request(url, artifacts)
    outcome = StageOutcome("serve", "ran", time.time() - started,
                           {"endpoint": url, "items": len(sample["response"]["items"])})
    return outcome, {"endpoint": url, "sample": sample}


def run_command(config: Config, force: tuple[str, ...] = (), serve: bool = False, keep_serving: bool = False,
                port: int = 8000) -> dict[str, Any] | None:
    """`rdistill run`: the pipeline, its summary table on stderr, and optionally the endpoint with a sample."""
    outcomes = run_pipeline(config, force=force)
    served: dict[str, Any] = {}
    if serve:
        outcome, served = _serve_sample(config, port)
        outcomes.append(outcome)
    print(summary_table(outcomes), file=sys.stderr)
    result = {"stages": [{"stage": o.name, "status": o.status, "seconds": round(o.seconds, 1), **o.summary}
                         for o in outcomes], "seconds": round(sum(o.seconds for o in outcomes), 1), **served}
    if not (serve and keep_serving):
        return result
    from rdistill.serving.local import serve_until_interrupted

    print(json.dumps(result, indent=2), flush=True)
    print(f"serving at {result['endpoint']} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    serve_until_interrupted()
    return None  # the summary was printed before serving
