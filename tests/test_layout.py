"""The package's shape holds: stages import one way, nothing imports in a circle, SQL stays
in the store, and every package ships.

Every import counts, including those inside functions and under ``TYPE_CHECKING``: a cycle
that only the type checker sees is still one a reader has to untangle.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "digest"

# The flow, bottom up. A module may import its own stage and any stage of a lower level;
# stages on one level (ingest, rank) are independent of each other.
LEVELS = {
    "base": 0,  # the package itself, errors, logs, files, clock, cron, tokens, retry, forks
    "store": 1,  # schema and queries; knows nothing of the stages
    "ingest": 2,  # sources and dumps in, new papers recorded
    "rank": 2,  # papers and interests in, ranked and explained papers out
    "present": 3,  # a paper as emails, feeds and web pages show it: views, text, marks, links
    "deliver": 4,  # plans, messages, the outbox sent
    "feeds": 5,  # RSS and Atom
    "settings": 6,  # digest/settings/, the whole Settings: only the layers above it see it
    "service": 7,  # wires the stages from the settings: run, scheduler, lock, status
    "web": 8,  # the subscribers' web front
    "cli": 9,  # the command line: digest/cli/ and __main__
}
# Modules at the top of digest/ and the stage each belongs to (a folder is its own stage).
TOP_LEVEL = {
    "errors": "base",
    "logs": "base",
    "clock": "base",
    "tokens": "base",
    "retry": "base",
    "forks": "base",
    "files": "base",
    "cron": "base",
    "__main__": "cli",
}
# Outside the store, the database is only a handle passed along.
HANDLES = {("sqlalchemy.engine", "Engine"), ("sqlalchemy.engine", "Connection")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) == 1:
        return "base"
    if len(parts) == 2 and (PACKAGE / f"{parts[1]}.py").exists():
        return TOP_LEVEL.get(parts[1])
    return parts[1] if parts[1] in LEVELS else None


def _imports(path: Path, name: str) -> Iterator[tuple[str, ast.ImportFrom | ast.Import, str]]:
    """(imported module, node, imported name) for every import in one file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node, ""
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                yield target, node, alias.name


def graph() -> dict[str, set[str]]:
    """Module → the digest modules it imports."""
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target, _, imported in _imports(path, name):
            if not (target == "digest" or target.startswith("digest.")):
                continue
            if imported and f"{target}.{imported}" in known:
                target = f"{target}.{imported}"  # ``from digest.rank import workers``
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target != name:
                edges[name].add(target)
    return edges


def test_every_module_has_a_stage() -> None:
    unplaced = [name for name in modules() if stage_of(name) is None]
    if unplaced:
        pytest.fail(f"place these in LEVELS or TOP_LEVEL: {unplaced}", pytrace=False)


def test_stages_import_only_downwards() -> None:
    bad = []
    for source, targets in sorted(graph().items()):
        mine = stage_of(source)
        for target in sorted(targets):
            theirs = stage_of(target)
            if mine is None or theirs is None or theirs == mine:
                continue
            if LEVELS[theirs] >= LEVELS[mine]:
                bad.append(f"{source} -> {target}  ({mine} may not import {theirs})")
    if bad:
        pytest.fail("imports against the flow:\n" + "\n".join(bad), pytrace=False)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    edges = graph()
    lines = []
    for component in _cycles(edges):
        members = set(component)
        inner = [f"  {a} -> {b}" for a in component for b in sorted(edges[a] & members)]
        lines.append(" <-> ".join(component) + "\n" + "\n".join(inner))
    if lines:
        pytest.fail("import cycles:\n" + "\n".join(lines), pytrace=False)


def test_sql_stays_in_the_store() -> None:
    bad = []
    for name, path in modules().items():
        if name == "digest.store" or name.startswith("digest.store."):
            continue
        for target, node, imported in _imports(path, name):
            root = target.split(".")[0]
            if root not in ("sqlalchemy", "sqlmodel"):
                continue
            if (target, imported) not in HANDLES:
                what = f"{target}.{imported}" if imported else target
                bad.append(f"{name}:{node.lineno} imports {what}")
    if bad:
        pytest.fail("queries belong in digest/store/:\n" + "\n".join(bad), pytrace=False)


def test_every_package_ships() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    on_disk = {module_name(p) for p in PACKAGE.rglob("__init__.py") if "__pycache__" not in p.parts}
    assert on_disk | {"digest.templates"} == listed


# The front doors: the command line and the web front ask ``service/`` for every use case
# and import nothing of the stages below it. A use case lives in ``service/`` once.
# The command line may start the web front (``digest web``, ``digest serve``): a door, not a stage.
DOOR_MAY_IMPORT = {
    "cli": {"base", "settings", "service", "web"},
    "web": {"base", "settings", "service"},
}
# (importing module, imported module) pairs still let through; none.
DOOR_ALLOWED: set[tuple[str, str]] = set()


def test_cli_and_web_go_through_the_service() -> None:
    bad = []
    for source, targets in sorted(graph().items()):
        mine = stage_of(source)
        if mine not in DOOR_MAY_IMPORT:
            continue
        for target in sorted(targets):
            theirs = stage_of(target)
            if (
                theirs == mine
                or theirs in DOOR_MAY_IMPORT[mine]
                or (source, target) in DOOR_ALLOWED
            ):
                continue
            bad.append(f"{source} -> {target}")
    if bad:
        pytest.fail(f"{len(bad)} imports past service/:\n" + "\n".join(bad), pytrace=False)
