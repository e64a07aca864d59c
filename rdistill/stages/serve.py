"""`rdistill serve`: the exported student behind Ray Serve on 127.0.0.1 (rdistill/serving/)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rdistill import layout
from rdistill.layout import Address
from rdistill.stages.registry import Stage, StageContext


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", default=None,
                        help="an exported model, a folder or a URI such as s3://bucket/run/serving/model "
                             "(default: serving/model under the artifact root)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--runtime", choices=["auto", "onnx", "torch"], default="auto",
                        help="what scores: the export's ONNX graph under ONNX Runtime (auto: when the export holds "
                             "one) or the torch model")
    parser.add_argument("--access-log", action="store_true",
                        help="log every request in Serve's log files (off by default: it costs throughput)")


def _model_location(context: StageContext) -> str:
    """The model the replicas load, checked here first so a bad one fails now rather than in the replicas."""
    from rdistill.export import load_exported
    from rdistill.storage import fetch_folder, join_uri

    if context.option("model_dir") is not None:
        load_exported(fetch_folder(context.option("model_dir")))
        return context.option("model_dir")
    load_exported(context.layout.serving_model_dir)
    root = context.root
    # replicas on other nodes cannot see this machine's mirror: a URI root's replicas pull the model themselves
    return join_uri(root.root, layout.SERVING_MODEL) if root.is_remote else str(context.layout.serving_model_dir)


def _run(context: StageContext) -> dict[str, Any]:
    from rdistill.serving import run_local

    model_dir, host, port = _model_location(context), context.option("host", "127.0.0.1"), context.option("port", 8000)
    print(f"serving {model_dir} at http://{host}:{port} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    url = run_local(model_dir, host=host, port=port, num_replicas=context.option("replicas", 1),
                    access_log=context.option("access_log", False), runtime=context.option("runtime", "auto"),
                    blocking=True)
    return {"endpoint": url, "model_dir": str(model_dir), "stopped": True}


STAGE = Stage(
    name="serve",
    help="serve an exported student with Ray Serve (POST /recommend) on 127.0.0.1",
    description=(
        "Deploy <artifact_root>/serving/model/ (or --model-dir) as the Ray Serve application of "
        "rdistill/serving/app.py: POST /recommend, GET /healthz, GET /model, OpenAPI at /docs. Binds 127.0.0.1 "
        "unless --host says otherwise; set RDISTILL_SERVE_TOKEN to require a bearer token (required, or the "
        "replicas refuse to start, when --host is not a loopback address). Runs until Ctrl-C or SIGTERM. For "
        "autoscaling and cluster deployment use `serve run serve/config.yaml` / `serve deploy` (see serve/README.md)."
    ),
    run=_run,
    add_arguments=_arguments,
    reads=lambda context: [] if context.option("model_dir") else [Address(layout.SERVING_MODEL)],
)
