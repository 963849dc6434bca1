"""Copy-paste that Python accepts silently: a dataclass field declared twice (the second wins, the first is
dead) and the same ``self.x = ...`` statement twice in one function body."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "eca_deploy"


def _repeats(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            fields = [s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
            twice = sorted({name for name in fields if fields.count(name) > 1})
            found += [f"{node.name}.{name} declared twice" for name in twice]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            seen = set()
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                                                        and t.value.id == "self" for t in stmt.targets):
                    text = ast.unparse(stmt)
                    if text in seen:
                        found.append(f"{node.name}: `{text}` twice (line {stmt.lineno})")
                    seen.add(text)
    return found


def test_the_check_finds_both_kinds():
    source = ("class Config:\n    a: int = 0\n    b: int = 1\n    a: int = 2\n\n"
              "class Backend:\n    def __init__(self, x):\n"
              "        self.x = x\n        self.y = 1\n        self.x = x\n")
    assert _repeats(source) == ["Config.a declared twice", "__init__: `self.x = x` twice (line 10)"]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_field_or_self_assignment_is_repeated(path):
    assert _repeats(path.read_text()) == []
