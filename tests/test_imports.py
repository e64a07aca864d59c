"""Import hygiene: the library never depends on the top-level `serve` package (a thin shim for Serve configs),
and `import rdistill.serving` stays free of Ray, so the endpoint's rules load (and unit-test) without it.

The module checks run in fresh interpreters: this process has long since imported Ray and everything else."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "rdistill"


def walk(tree: ast.AST, into_functions: bool):
    """ast.walk, optionally without the bodies of functions (which run when called, not when imported)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if into_functions or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def imported_modules(path: Path, into_functions: bool = True) -> list[str]:
    """Absolute module names a file imports (`import a.b` -> a.b; `from a.b import c` -> a.b)."""
    names = []
    for node in walk(ast.parse(path.read_text(), str(path)), into_functions):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def is_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def fresh_interpreter(code: str) -> None:
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]


def test_no_library_module_imports_the_serve_package():
    # anywhere in the file, function bodies included: `serve` is an entry point for Serve configs, not a library
    offenders = {str(path.relative_to(REPO_ROOT)): name
                 for path in sorted(PACKAGE.rglob("*.py"))
                 for name in imported_modules(path)
                 if is_package(name, "serve")}
    assert not offenders, offenders


def test_only_the_serve_application_imports_ray_at_import_time():
    # module-level statements only: a function may import Ray when it is called (run_local does)
    at_import = {path.name: name
                 for path in sorted((PACKAGE / "serving").glob("*.py")) if path.name != "app.py"
                 for name in imported_modules(path, into_functions=False)
                 if is_package(name, "ray")}
    assert not at_import, at_import


def test_importing_the_serving_package_imports_neither_ray_nor_serve():
    fresh_interpreter(
        "import sys\n"
        "import rdistill.serving, rdistill.serving.local, rdistill.serving.service\n"
        "from rdistill.serving import run_local, serve_until_interrupted, ServeSettings, bare_fastapi_app\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'serve'))\n"
        "assert not loaded, loaded\n")


def test_the_serve_application_does_not_import_the_serve_package():
    fresh_interpreter(
        "import sys\n"
        "import rdistill.serving.app\n"
        "assert 'ray.serve' in sys.modules\n"  # it is the Serve application: Ray Serve is what it wires
        "assert 'serve' not in sys.modules, 'rdistill.serving.app imported the top-level serve package'\n")


def test_the_serve_shim_is_the_library_application():
    """`serve run serve.app:app_builder` (configs written before the move) builds the same application."""
    import rdistill.serving.app as app
    import serve.app as shim

    assert (shim.app_builder, shim.build_app, shim.DEPLOYMENT_NAME) == (app.app_builder, app.build_app,
                                                                        app.DEPLOYMENT_NAME)
