"""The address book (rdistill/layout.py) is the only place an artifact path is written."""

from __future__ import annotations

import ast
from pathlib import Path

from rdistill import layout
from rdistill.layout import ArtifactLayout

PACKAGE = Path(layout.__file__).resolve().parent


def _path_constants() -> set[str]:
    """The layout's names that look like paths or file names (single words such as "dataset" double as record keys
    elsewhere, so they are left out)."""
    return {value for name, value in vars(layout).items()
            if name.isupper() and isinstance(value, str) and ("/" in value or "." in value)}


def _string_literals(source: str) -> list[tuple[int, str]]:
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_module_but_the_layout_types_an_artifact_path():
    names = _path_constants()
    assert {"teacher/checkpoint", "serving/model", "manifest.json", "metrics.json", "pipeline.json"} <= names
    typed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "layout.py":
            continue
        for line, value in _string_literals(path.read_text()):
            if value in names or any(value.startswith(f"{name}/") for name in names if "/" in name):
                typed.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {value!r}")
    assert not typed, "artifact paths typed outside rdistill/layout.py:\n" + "\n".join(typed)


def test_relative_names_and_local_paths_agree(tmp_path):
    artifacts = ArtifactLayout(tmp_path)
    assert artifacts.table("train") == tmp_path / layout.table("train") == tmp_path / "dataset" / "train.parquet"
    assert artifacts.student_dir("run-1") == tmp_path / layout.student_run("run-1")
    assert artifacts.tune_campaign_dir("distill") == tmp_path / "tune" / "distill"
    assert layout.manifest_of(layout.SIGNALS) == "signals/manifest.json"
    assert layout.join("tune/", "/distill", "", "summary.json") == "tune/distill/summary.json"
