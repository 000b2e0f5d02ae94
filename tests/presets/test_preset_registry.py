"""Adding a preset is one module in spotwatch/presets/ and its entry in registry.py: nothing
else in spotwatch names a preset, every module there is registered, the docs table lists
every preset, and a preset added that way (in a copy of the package) is validated, run as a
hook and described in dry run like the others."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from testkit import REPO, child_env

from spotwatch.presets.registry import PRESETS

PACKAGE = REPO / "spotwatch"
FRAME = {"__init__", "base", "registry"}  # the package's frame, not presets


def test_every_preset_module_is_registered_once() -> None:
    modules = sorted(p.stem for p in (PACKAGE / "presets").glob("*.py") if p.stem not in FRAME)
    registered = sorted(type(p).__module__.rsplit(".", 1)[1] for p in PRESETS.values())
    assert registered == modules
    assert all(name == preset.name for name, preset in PRESETS.items())


def test_nothing_outside_the_package_names_a_preset() -> None:
    """No module outside spotwatch/presets/ holds a preset's name as a string or imports a
    preset module: the rest of spotwatch handles every preset through the registry."""
    hyphenated = {name for name in PRESETS if "-" in name}  # "signal", "http" are words too
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "presets" and path.parent.parent == PACKAGE:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in hyphenated:
                found.append(f"{path.relative_to(REPO)}: {node.value!r}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "spotwatch.presets."
            ):
                module = (node.module or "").rsplit(".", 1)[1]
                if module not in FRAME and not _is_check_helper(path, node):
                    found.append(f"{path.relative_to(REPO)}: imports {node.module}")
    assert found == []


def _is_check_helper(path: Path, node: ast.ImportFrom) -> bool:
    """`check` reads PID files the way the signal preset does (one reader, not two)."""
    return path.name == "check_presets.py" and node.module == "spotwatch.presets.process_signal"


def test_the_docs_table_lists_every_preset() -> None:
    table = (REPO / "docs" / "presets.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert sorted(row.split("`")[1] for row in rows) == sorted(PRESETS)


ECHO = '''"""`echo`: a preset added for the test."""

from __future__ import annotations

from typing import Any, List, Mapping

from spotwatch.config.checks import leaf
from spotwatch.config.values import text
from spotwatch.presets.base import Call, ProgramPreset


class Echo(ProgramPreset):
    name = "echo"
    summary = "echoes a text and T"
    program = "echo"
    arguments = {"text": leaf(text)}
    required = ("text",)

    def commands(self, args: Mapping[str, Any], call: Call) -> List[List[str]]:
        return [[self.program, args["text"], str(call.seconds)]]


PRESET = Echo()
'''

USE = """
import importlib.machinery, sys
# The copy on PYTHONPATH, not the checkout an editable install's finder would give.
sys.meta_path.insert(0, importlib.machinery.PathFinder)
from spotwatch.config.errors import ConfigError
from spotwatch.config.load import load_config
sys.path[:0] = [sys.argv[2], sys.argv[3]]
from preset_support import context, run_step

config = load_config(sys.argv[1], env={}, check_permissions=False)
print(run_step(config.hooks[0], context(60)).detail)
print(run_step(config.hooks[0], context(60, dry_run=True)).detail)
open(sys.argv[1], "w").write("hooks: [{name: e, preset: echo, with: {txet: hi}}]")
try:
    load_config(sys.argv[1], env={}, check_permissions=False)
except ConfigError as problems:
    print(problems)
"""


def test_a_new_preset_is_one_module_and_its_registry_entry(tmp_path: Path) -> None:
    """In a copy of the package: add presets/echo.py and its entry in registry.py, and
    nothing else; a hook names it, its `with:` is checked, it runs as a hook, dry run says
    what it would run."""
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "spotwatch", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "spotwatch" / "presets" / "echo.py").write_text(ECHO)
    registry = copy / "spotwatch" / "presets" / "registry.py"
    source = registry.read_text()
    source = source.replace("    docker_stop,\n", "    docker_stop,\n    echo,\n", 1)
    source = source.replace("        http_event.PRESET,\n", "        http_event.PRESET,\n"
                            "        echo.PRESET,\n", 1)  # fmt: skip
    registry.write_text(source)
    config = tmp_path / "config.yaml"
    config.write_text("hooks: [{name: e, preset: echo, with: {text: '${action}'}, timeout: 7}]")
    done = subprocess.run(
        [sys.executable, "-c", USE, str(config), str(Path(__file__).parent), str(REPO / "tests")],
        capture_output=True,
        text=True,
        env=child_env({"PYTHONPATH": str(copy)}),
        cwd=str(tmp_path),  # not the checkout: `python -c` looks in its folder first
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    ran, would, *problems = done.stdout.strip().splitlines()
    assert ran.startswith("echo terminate 7: exit 0 after")
    assert would == "would run echo terminate 7"
    assert [p.split(": ", 1)[1] for p in problems] == [
        'hooks[0].with.txet: unknown key (did you mean "text"?)',
        "hooks[0].with.text: required",
    ]
