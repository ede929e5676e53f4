"""Imports run one way: ``dnnlab.app`` (Hydra, the command line, config paths) uses the library;
the library never uses it, so it works without Hydra's entry points. The one exception is the
run of a composed config (``train/run.py``), which checks that config before any data is read."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "dnnlab"
MAY_USE_APP = {"train/run.py": {"dnnlab.app.checks"}}


def imported_modules(path: Path) -> set[str]:
    """Every dnnlab module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found |= {node.module, *names} if node.module == "dnnlab" else {node.module}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("dnnlab")}


def test_the_library_never_imports_the_app() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        if where.startswith("app/"):
            continue
        uses = {
            m for m in imported_modules(path) if m == "dnnlab.app" or m.startswith("dnnlab.app.")
        }
        if uses - MAY_USE_APP.get(where, set()):
            offenders[where] = sorted(uses)
    assert offenders == {}


def test_the_check_finds_an_import_of_the_app(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from dnnlab.app import cli\n    import dnnlab.app.checks\n")
    assert imported_modules(module) == {"dnnlab.app", "dnnlab.app.checks"}
