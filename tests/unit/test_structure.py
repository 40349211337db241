"""The shape DESIGN.md asks of the code, kept: modules one can read in a sitting, no class
or function that has grown past reading, and arrows that point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from radon.complexity import cc_visit

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for package in ("jitcore", "bot") for p in (ROOT / package).rglob("*.py")
                 if "migrations" not in p.parts)
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300
MAX_COMPLEXITY = 15


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", SOURCES, ids=_name)
def test_a_module_is_readable_in_one_sitting(path: Path) -> None:
    text = path.read_text()
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{_name(path)} has {lines} lines"
    classes = {node.name: node.end_lineno - node.lineno + 1
               for node in ast.walk(ast.parse(text))
               if isinstance(node, ast.ClassDef) and node.end_lineno is not None}
    assert {n: size for n, size in classes.items() if size > MAX_CLASS_LINES} == {}
    too_complex = {block.fullname: block.complexity for block in cc_visit(text)
                   if block.complexity > MAX_COMPLEXITY}
    assert too_complex == {}


@pytest.mark.parametrize("path", [p for p in SOURCES
                                  if p.relative_to(ROOT).parts[0] == "jitcore"], ids=_name)
def test_jitcore_never_imports_the_slack_layer(path: Path) -> None:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported.isdisjoint({"bot", "slack_bolt", "slack_sdk"})


@pytest.mark.parametrize("module", ["domain.py", "policy.py"])
def test_the_pure_modules_do_no_io(module: str) -> None:
    tree = ast.parse((ROOT / "jitcore" / module).read_text())
    imported = {alias.name for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "enum", "ipaddress", "re", "collections.abc",
                        "dataclasses", "datetime", "typing", "jitcore.domain"}, imported
