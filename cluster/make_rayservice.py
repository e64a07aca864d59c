"""Regenerate serveConfigV2 in cluster/kuberay/rayservice.yaml from serve/config.yaml (run after editing it)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = "/mnt/artifacts/amazon-scientific/serving/model"  # the export on the shared volume


def serve_config_v2() -> str:
    applications = copy.deepcopy(yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())["applications"])
    for application in applications:
        application["args"]["model_dir"] = MODEL_DIR
    return yaml.safe_dump({"applications": applications}, sort_keys=False)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks (`|`), the way RayService manifests are written by hand."""


_BlockDumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def main() -> int:
    path = ROOT / "cluster" / "kuberay" / "rayservice.yaml"
    text = path.read_text()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    service = yaml.safe_load(text)
    service["spec"]["serveConfigV2"] = serve_config_v2()
    path.write_text(header + yaml.dump(service, Dumper=_BlockDumper, sort_keys=False, width=120))
    return 0


if __name__ == "__main__":
    sys.exit(main())
