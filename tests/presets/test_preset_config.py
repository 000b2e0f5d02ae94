"""A preset hook in the config file: checked like every key (CONTRACT §9, §1: every mistake
names its key path and `check` and `run` exit 78), normalised with its defaults, and shown
by `check` as a config file that loads back to the same."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import yaml
from testkit import REPO, child_env

from spotwatch.config.errors import ConfigError
from spotwatch.config.load import config_to_dict, load_config
from spotwatch.config.schema import HookSpec

# Beside the checkout (or beside the folder of worktrees it is one of).
CONTRACT = next(
    (p for p in (REPO.parent / "shared/CONTRACT.md", REPO.parent.parent / "shared/CONTRACT.md")
     if p.exists()),
    REPO.parent / "shared/CONTRACT.md",
)  # fmt: skip


def problems(tmp_path: Path, hooks_yaml: str) -> List[str]:
    path = tmp_path / "config.yaml"
    path.write_text("hooks:\n" + hooks_yaml)
    with pytest.raises(ConfigError) as raised:
        load_config(str(path), env={}, check_permissions=False)
    return [p.split(": ", 1)[1] for p in raised.value.problems]  # without the file name


def load_hooks(tmp_path: Path, hooks_yaml: str) -> List[HookSpec]:
    path = tmp_path / "config.yaml"
    path.write_text("hooks:\n" + hooks_yaml)
    return list(load_config(str(path), env={}, check_permissions=False).hooks)


@pytest.mark.parametrize(
    ("hook", "expected"),
    [
        ("{name: a, preset: sigal}", 'hooks[0].preset: unknown preset "sigal" (did you mean'),
        ("{name: a, preset: signal, command: [x], with: {unit: a}}", "hooks[0].preset: give co"),
        ("{name: a}", "hooks[0].command: required (or preset: NAME)"),
        ("{name: a, command: [x], with: {unit: a}}", "hooks[0].with: arguments for a preset"),
        ("{name: a, preset: signal}", "hooks[0].with.unit: required (or pidfile)"),
        ("{name: a, preset: signal, with: {unit: a, pidfile: /p}}", "hooks[0].with.pidfile: giv"),
        ("{name: a, preset: signal, with: {unit: a, signal: FOO}}", "hooks[0].with.signal: expec"),
        ("{name: a, preset: signal, with: {unit: a, wait: yes please}}", "hooks[0].with.wait: ex"),
        ("{name: a, preset: signal, with: {unit: a, sginal: TERM}}", "hooks[0].with.sginal: unkn"),
        ("{name: a, preset: signal, with: [unit]}", "hooks[0].with: expected a mapping"),
        ("{name: a, preset: systemd-stop, with: {units: []}}", "hooks[0].with.units: expected a"),
        ("{name: a, preset: systemd-stop}", "hooks[0].with.units: required"),
        ("{name: a, preset: s3-sync, with: {path: /d}}", "hooks[0].with.to: required"),
        ("{name: a, preset: s3-sync, with: {path: /d, to: 'b/x'}}", "hooks[0].with.to: expected"),
        ("{name: a, preset: http, with: {url: 'ftp://x'}}", "hooks[0].with.url: expected an ht"),
        ("{name: a, preset: http, with: {url: 'http://x', method: GET}}", "hooks[0].with.method"),
        ("{name: a, preset: kubectl-drain, with: {node: 'a b'}}", "hooks[0].with.node: expected"),
        ("{name: a, preset: nomad-drain, with: {bin: 'a/b'}}", "hooks[0].with.bin: expected a p"),
        ("{name: a, preset: docker-stop, with: {label: nolabel}}", "hooks[0].with.label: expect"),
        ("{name: a, preset: signal, user: nobody, with: {unit: a}}", "hooks[0].user: the signal"),
        ("{name: a, preset: http, env: {A: b}, with: {url: 'http://x'}}", "hooks[0].env: the http"),
    ],
)
def test_every_preset_mistake_names_its_key_path(tmp_path: Path, hook: str, expected: str) -> None:
    """Each mistake is reported on one line that starts with the exact key path."""
    found = problems(tmp_path, f"  - {hook}\n")
    assert any(p.startswith(expected) for p in found), found


def test_only_the_three_placeholders_of_section_9_are_known(tmp_path: Path) -> None:
    """${instance_id}, ${action} and ${notice_time} are allowed in any string, at any depth
    (lists, header values); any other ${name} names where it stands; `$name` and other
    braces are plain text."""
    found = problems(
        tmp_path,
        "  - name: a\n    preset: http\n"
        "    with:\n      url: 'http://x/${instance_id}/${action}?t=${notice_time}&v=$x{y}'\n"
        "      headers: {X-Id: '${instance}'}\n"
        "  - name: b\n    preset: docker-stop\n    with: {names: [ok, '${host}']}\n",
    )
    assert found == [
        "hooks[0].with.headers.X-Id: unknown placeholder ${instance}; known: ${instance_id}, "
        "${action}, ${notice_time}",
        "hooks[1].with.names[1]: unknown placeholder ${host}; known: ${instance_id}, ${action}, "
        "${notice_time}",
        'hooks[1].with.names[1]: expected a container name, got "${host}"',
    ]


def test_a_preset_hook_gets_its_defaults_and_a_hooks_other_fields(tmp_path: Path) -> None:
    """`with:` is normalised (signal names as SIGNAME, s3 destinations split) and completed
    with the preset's defaults; actions, timeout and order are a hook's."""
    signal_hook, drain, s3 = load_hooks(
        tmp_path,
        "  - {name: trainer, preset: signal, with: {unit: trainer.service, signal: usr1},"
        " actions: [terminate], timeout: 90s, order: 2}\n"
        "  - {name: drain, preset: kubectl-drain}\n"
        "  - {name: up, preset: s3-sync, with: {path: /ckpt, to: 's3://bkt/run/${instance_id}'}}\n",
    )
    assert signal_hook == HookSpec(
        name="trainer",
        actions=("terminate",),
        timeout=90.0,
        order=2,
        preset="signal",
        arguments={"unit": "trainer.service", "signal": "SIGUSR1", "wait": False},
    )
    assert drain.arguments == {"node": "auto"} and drain.command is None
    assert s3.arguments == {"path": "/ckpt", "to": ("bkt", "run/${instance_id}/")}


def test_the_contract_example_loads(tmp_path: Path) -> None:
    """CONTRACT §9's YAML block is a valid config."""
    if not CONTRACT.exists():
        pytest.skip(f"{CONTRACT} not present in this checkout")
    section = re.split(r"^## (?=\d+\. )", CONTRACT.read_text(), flags=re.MULTILINE)
    nine = next(s for s in section if s.startswith("9."))
    (tmp_path / "config.yaml").write_text(nine.split("```yaml\n", 1)[1].split("```", 1)[0])
    config = load_config(str(tmp_path / "config.yaml"), env={}, check_permissions=False)
    assert config.hooks[0].preset == "signal"
    assert config.hooks[0].arguments["wait"] is True


def test_check_shows_preset_hooks_as_a_config_that_loads_back(tmp_path: Path) -> None:
    """The effective config `check` prints keeps `preset` and `with` (header values of an
    http preset redacted: they are usually tokens) and loads back to the same hooks."""
    hooks = load_hooks(
        tmp_path,
        "  - {name: h, preset: http, with: {url: 'http://x', headers: {Authorization: s3cr3t}}}\n"
        "  - {name: c, command: [/bin/true]}\n"
        "  - {name: s, preset: signal, with: {pidfile: /run/t.pid, wait: true}}\n",
    )
    config = load_config(str(tmp_path / "config.yaml"), env={}, check_permissions=False)
    shown = config_to_dict(config)
    assert "s3cr3t" not in yaml.safe_dump(shown)
    assert shown["hooks"][0]["with"]["headers"] == {"Authorization": "***"}
    assert "preset" not in shown["hooks"][1] and "with" not in shown["hooks"][1]
    (tmp_path / "shown.yaml").write_text(yaml.safe_dump({"hooks": shown["hooks"][1:]}))
    again = load_config(str(tmp_path / "shown.yaml"), env={}, check_permissions=False)
    assert list(again.hooks) == hooks[1:]


def test_run_and_check_exit_78_on_a_bad_preset(tmp_path: Path) -> None:
    """The daemon refuses to start, and `check` fails, naming the key path."""
    config = tmp_path / "config.yaml"
    config.write_text("hooks:\n  - {name: a, preset: kubectl-drain, with: {nodes: x}}\n")
    for command in (["run", "--once"], ["check"]):
        done = subprocess.run(
            [sys.executable, "-m", "spotwatch", command[0], "-c", str(config), *command[1:]],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=60,
        )
        assert done.returncode == 78, done.stderr
        assert "hooks[0].with.nodes: unknown key" in done.stderr
