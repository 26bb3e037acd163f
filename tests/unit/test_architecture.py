"""The house rules, checked on the source: arrows point one way (`server -> pipelines ->
audio`, `admin` imported by nobody but `server`), no import cycles inside the engine's
rooms (TYPE_CHECKING imports included), and no reaching into objects through nested
getattr in the server."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("audio", "pipelines", "server", "admin")
ALLOWED = {
    "audio": set(),
    "pipelines": {"audio"},
    "admin": set(),
    "server": {"pipelines", "audio", "admin"},
}


def modules(room: str) -> dict[str, Path]:
    out = {}
    for path in (ROOT / room).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports_of(name: str, path: Path) -> set[str]:
    """Every project module `name` imports, at any level of the file."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in ROOMS}


ALL = {name: path for room in ROOMS for name, path in modules(room).items()}
GRAPH = {name: {m for m in imports_of(name, path) if m in ALL} for name, path in ALL.items()}


@pytest.mark.parametrize("room", ROOMS)
def test_arrows_point_one_way(room: str) -> None:
    wrong = sorted(
        f"{name} imports {target}"
        for name in modules(room)
        for target in GRAPH[name]
        if target.split(".")[0] not in ALLOWED[room] | {room}
    )
    assert not wrong, wrong


@pytest.mark.parametrize("room", ("audio", "pipelines", "server"))
def test_no_import_cycles_inside_a_room(room: str) -> None:
    names = set(modules(room))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in GRAPH[node] & names:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            # A package's __init__ naming its own submodules is not a cycle of code.
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(names):
        if name not in index:
            visit(name)
    assert not cycles, cycles


def test_the_server_never_reaches_into_objects_through_nested_getattr() -> None:
    pattern = re.compile(r"getattr\(\s*getattr\(")
    offenders = [
        str(path.relative_to(ROOT))
        for name, path in ALL.items()
        if name.startswith(("server", "admin")) and pattern.search(path.read_text())
    ]
    assert not offenders, offenders
