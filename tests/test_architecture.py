"""docs/ARCHITECTURE.md stays true: every module it lists exists, every module is listed once."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
LISTED = re.compile(r"^- `(digest/[\w/]+\.py)`:", re.MULTILINE)


def is_empty_init(path: Path) -> bool:
    """A package marker: an ``__init__.py`` holding its docstring and nothing else."""
    if path.name != "__init__.py":
        return False
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def test_architecture_lists_every_module_once() -> None:
    listed = Counter(LISTED.findall(DOC.read_text(encoding="utf-8")))
    twice = sorted(name for name, n in listed.items() if n > 1)
    assert not twice, f"listed more than once: {twice}"
    modules = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "digest").rglob("*.py")
        if "__pycache__" not in path.parts and not is_empty_init(path)
    }
    gone = sorted(set(listed) - modules)
    assert not gone, f"listed in docs/ARCHITECTURE.md but not in digest/: {gone}"
    unlisted = sorted(modules - set(listed))
    assert not unlisted, f"missing from docs/ARCHITECTURE.md: {unlisted}"
