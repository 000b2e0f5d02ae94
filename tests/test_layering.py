"""The package's layers: imports flow one way, and modules stay small enough to read.

    config -> detection -> state -> response -> parts, clouds -> telemetry, host -> daemon
    -> commands -> cli

A module may import its own layer and the layers before it, never one after it (function-
local imports included: a late import is still a dependency). `spotwatch.logevents` and
`spotwatch.exits` are below everything; the IMDS simulator is a tool beside detection.
docs/architecture.md explains the layers; this test keeps that page true.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "spotwatch"

LAYERS: Dict[str, int] = {
    "spotwatch": 0,  # __init__ (the version)
    "spotwatch.logevents": 0,
    "spotwatch.exits": 0,
    "spotwatch.config": 1,
    "spotwatch.presets": 1,  # beside config, which checks their `with:` arguments
    "spotwatch.detection": 2,
    "spotwatch.simulator": 3,
    "spotwatch.state": 3,
    "spotwatch.response": 4,
    "spotwatch.parts": 5,
    "spotwatch.clouds": 5,
    "spotwatch.telemetry": 6,
    "spotwatch.host": 6,
    "spotwatch.daemon": 7,
    "spotwatch.commands": 8,
    "spotwatch.cli": 9,
    "spotwatch.__main__": 9,
}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    best = ""
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    assert best, f"{module} belongs to no layer: add it to LAYERS and docs/architecture.md"
    return LAYERS[best]


def imports_of(path: Path) -> Set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == "spotwatch"}


def modules() -> List[Tuple[str, Path]]:
    return sorted((module_name(p), p) for p in PACKAGE.rglob("*.py"))


def test_imports_never_reach_a_later_layer() -> None:
    known = {name for name, _ in modules()}
    wrong = []
    for name, path in modules():
        for target in imports_of(path):
            if target not in known:  # `from spotwatch.x import Name`: Name is no module
                continue
            if layer_of(target) > layer_of(name):
                wrong.append(f"{name} (layer {layer_of(name)}) imports {target}")
    assert wrong == []


def test_no_module_imports_itself_in_a_circle() -> None:
    known = {name for name, _ in modules()}
    graph = {
        name: {t for t in imports_of(path) if t in known and t != name} for name, path in modules()
    }
    # Packages' __init__ are empty: a module importing `spotwatch.x.y` depends on y only.
    state: Dict[str, int] = {}
    circles: List[str] = []

    def visit(node: str, trail: List[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_every_module_can_be_read_at_once() -> None:
    long = [
        f"{name}: {n} lines"
        for name, path in modules()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert long == []
