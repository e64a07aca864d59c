"""The whole path in one command (`rdistill run`): prepare → teacher train → teacher infer → tune (+ export).

Every stage runs under the same artifact root and is recorded in <artifact_root>/pipeline.json with a key: a
hash of the config sections it reads and of the manifest its input stage wrote. A rerun skips each stage whose
key is unchanged and whose output is still there, so it resumes at the first stage that failed or whose inputs
or settings changed (and everything after it, since their input manifests change in turn).
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

from rdistill.artifacts import MANIFEST_NAME, ArtifactLayout, atomic_write_json, read_json
from rdistill.config import Config, config_to_dict
from rdistill.storage import ArtifactRoot

log = logging.getLogger(__name__)

STATE_FILE = "pipeline.json"
STAGES = ("prepare", "teacher", "infer", "tune")


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


def stage_key(stage: str, config: Config) -> str:
    """What the stage's output depends on: its config sections and its input stage's manifest."""
    root = config.storage()
    raw = config_to_dict(config)
    if stage == "prepare":
        return _digest({"data": raw["data"], "input": _raw_input_listing(config)})
    if stage == "teacher":
        return _digest({"seed": raw["seed"], "eval": raw["eval"], "teacher": raw["teacher"],
                        "input": _manifest_hash(root, stage_output("prepare"))})
    if stage == "infer":
        return _digest({"infer": raw["infer"], "input": _manifest_hash(root, stage_output("teacher"))})
    if stage == "tune":
        return _digest({key: raw[key] for key in ("seed", "student", "train", "eval", "distill", "tune")}
                       | {"input": _manifest_hash(root, stage_output("infer"))})
    raise ValueError(f"unknown stage {stage}")


def stage_output(stage: str) -> str:
    """The manifest that marks the stage's output complete, relative to the artifact root."""
    return {"prepare": f"dataset/{MANIFEST_NAME}",
            "teacher": f"teacher/checkpoint/{MANIFEST_NAME}",
            "infer": f"signals/{MANIFEST_NAME}",
            "tune": f"serving/model/{MANIFEST_NAME}"}[stage]


def _stage_finished(stage: str, config: Config) -> bool:
    root = config.storage()
    if stage == "tune" and not config.tune.export:  # nothing is exported: the campaign summary is the output
        from rdistill.tune import SUMMARY_FILE

        return root.exists(f"tune/{config.tune.name}/{SUMMARY_FILE}")
    return root.exists(stage_output(stage))


def _run_stage(stage: str, config: Config, same_key: bool) -> dict[str, Any]:
    if stage == "prepare":
        from rdistill.data.prepare import prepare_dataset

        dataset_dir = prepare_dataset(config)
        return {"rows": read_json(dataset_dir / MANIFEST_NAME)["counts"]}
    if stage == "teacher":
        from rdistill.teacher.train import train_teacher

        result = train_teacher(config)
        return {"valid_ndcg_at_10": result.valid["ndcg_at_10"], "test_ndcg_at_10": result.test["ndcg_at_10"],
                "best_epoch": result.best_epoch}
    if stage == "infer":
        from rdistill.teacher.infer import infer_teacher, inference_summary

        return inference_summary(infer_teacher(config, force=True))
    from rdistill.tune import tune_students, tune_summary

    # same settings and inputs as an unfinished earlier attempt: resume its campaign; anything else: start over
    return tune_summary(tune_students(config, fresh=not same_key))


def run_pipeline(config: Config, stages: tuple[str, ...] = STAGES, force: tuple[str, ...] = (),
                 echo: Callable[[str], None] | None = None) -> list[StageOutcome]:
    """Run the stages in order, skipping those already done with the same key; returns what happened."""
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    root = config.storage()  # a URI root is opened and probed here, before any stage
    state_path = root.local / STATE_FILE
    recorded = root.read_bytes(STATE_FILE)  # where the root lives, so a rerun on any machine sees it
    state: dict[str, Any] = json.loads(recorded) if recorded is not None else {}

    def save_state() -> None:
        atomic_write_json(state_path, state)
        root.push(STATE_FILE)

    outcomes = []
    for number, stage in enumerate(stages, start=1):
        key = stage_key(stage, config)
        record = state.get(stage, {})
        done = record.get("status") == "done" and record.get("key") == key and _stage_finished(stage, config)
        if done and stage not in force:
            echo(f"[{number}/{len(stages)}] {stage}: up to date, skipped")
            outcomes.append(StageOutcome(stage, "skipped", 0.0, record.get("summary", {})))
            continue
        echo(f"[{number}/{len(stages)}] {stage}: running")
        started = time.time()
        state[stage] = {"key": key, "status": "running", "started_at": started}
        save_state()
        try:
            summary = _run_stage(stage, config, same_key=record.get("key") == key)
        except BaseException as err:
            state[stage].update(status="failed", error=str(err)[:2000], seconds=round(time.time() - started, 1))
            save_state()
            raise
        seconds = time.time() - started
        state[stage] = {"key": key, "status": "done", "seconds": round(seconds, 1), "summary": summary,
                        "finished_at": time.time()}
        save_state()
        echo(f"[{number}/{len(stages)}] {stage}: done in {seconds:.0f}s")
        outcomes.append(StageOutcome(stage, "ran", seconds, summary))
    return outcomes


def summary_table(outcomes: list[StageOutcome]) -> str:
    """A plain-text table of the stages: status, time and the headline numbers of each."""
    lines = [f"{'stage':<10} {'status':<8} {'seconds':>8}  result", "-" * 72]
    for outcome in outcomes:
        headline = {key: value for key, value in outcome.summary.items()
                    if isinstance(value, (int, float, str)) and not isinstance(value, bool)}
        lines.append(f"{outcome.name:<10} {outcome.status:<8} {outcome.seconds:>8.1f}  "
                     + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in list(headline.items())[:4]))
    lines.append(f"{'total':<10} {'':<8} {sum(o.seconds for o in outcomes):>8.1f}")
    return "\n".join(lines)


def sample_request(url: str, layout: ArtifactLayout, k: int = 5) -> dict[str, Any]:
    """POST /recommend with the most recent items of the first validation user; returns request and response."""
    import urllib.request

    from rdistill.data.schema import read_table

    items = read_table(layout.dataset_dir, "items")
    item_ids = dict(zip(items.column("item_idx").to_pylist(), items.column("item_id").to_pylist()))
    history = read_table(layout.dataset_dir, "valid").column("history")[0].as_py()[-10:]
    body = {"history": [item_ids[item] for item in history], "k": k}
    request = urllib.request.Request(f"{url}/recommend", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    token = os.environ.get("RDISTILL_SERVE_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=60) as response:
        return {"request": body, "response": json.loads(response.read())}
