"""The rendering package and the report model keep their helpers public where they are shared: no module
there imports another's private (`_x`) name, and the report model does not depend on any renderer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gepa_action"
MODULES = sorted([*(PACKAGE / "render").glob("*.py"), *(PACKAGE / "report").glob("*.py")])


def imports(path: Path) -> list[tuple[str, str]]:
    """(module as written, name) for every `from X import name` in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [("." * node.level + (node.module or ""), alias.name)
            for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_private_name_is_imported(path: Path) -> None:
    private = [f"{module}.{name}" for module, name in imports(path)
               if name.startswith("_") and module != "__future__"]
    assert private == [], f"{path.name} imports private helpers: {private}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "report").glob("*.py")), ids=lambda p: p.name)
def test_the_report_does_not_depend_on_its_renderers(path: Path) -> None:
    assert not [m for m, _ in imports(path) if "render" in m], path.name


def test_the_check_sees_a_private_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from .report_md import _fmt, score_rows\n", encoding="utf-8")
    assert [n for _, n in imports(sample) if n.startswith("_")] == ["_fmt"]
