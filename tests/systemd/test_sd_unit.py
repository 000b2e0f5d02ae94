"""The shipped unit and sleep hook: `systemd-analyze verify` accepts the unit, the
directives CONTRACT.md §6 asks for are there, and the sleep hook never fails sleep."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "spotwatch.service"
SLEEP_HOOK = REPO / "systemd" / "spotwatch-sleep-hook"


def directives(text: str) -> Dict[str, List[str]]:
    found: Dict[str, List[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_contract_directives() -> None:
    unit = directives(UNIT.read_text())
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "ExecStart": ["/usr/bin/spotwatch run"],
        "ExecReload": ["/usr/bin/spotwatch reload --pid $MAINPID"],
        "RuntimeDirectory": ["spotwatch"],
        "RuntimeDirectoryMode": ["0700"],
        "Restart": ["always"],
        "RestartPreventExitStatus": ["78"],
        "KillMode": ["mixed"],
        "WatchdogSec": ["30s"],
        "TimeoutStopSec": ["90s"],
        "Wants": ["network-online.target"],
        "WantedBy": ["multi-user.target"],
    }
    for key, value in expected.items():
        assert unit.get(key) == value, key
    after = " ".join(unit["After"]).split()
    assert {"network-online.target", "ecs.service", "systemd-logind.service"} <= set(after)
    assert "Requires" not in unit  # ordering only: ECS and docker are optional


def test_every_command_of_the_unit_is_spotwatch_itself() -> None:
    """Minimal images have no procps: a reload through /bin/kill failed with 203/EXEC there.
    Whatever the unit runs must come with the package."""
    unit = directives(UNIT.read_text())
    commands = [v for k, vs in unit.items() if k.startswith("Exec") for v in vs]
    assert commands and all(c.startswith("/usr/bin/spotwatch ") for c in commands), commands


def test_stop_timeout_covers_the_daemons_shutdown_grace() -> None:
    from spotwatch.daemon.shell import EXIT_WITHIN, SHUTDOWN_GRACE

    stop = int(directives(UNIT.read_text())["TimeoutStopSec"][0].rstrip("s"))
    assert stop >= SHUTDOWN_GRACE + 5  # the daemon ends before systemd's SIGKILL
    assert stop >= EXIT_WITHIN  # the exit the daemon promises itself fits too


def _verify(unit_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--recursive-errors=no", str(unit_dir / UNIT.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """verify needs the executables to exist: it checks a copy whose /usr/bin/spotwatch is
    rewritten to /bin/true (same arguments). A copy with a bad value must fail, so the check
    has teeth."""
    text = UNIT.read_text().replace("=/usr/bin/spotwatch ", "=/bin/true ")
    assert "ExecStart=/bin/true run" in text
    assert "ExecReload=/bin/true reload --pid $MAINPID" in text
    (tmp_path / UNIT.name).write_text(text)
    done = _verify(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / UNIT.name).write_text(text.replace("KillMode=mixed", "KillMode=gently"))
    assert _verify(bad).returncode != 0


def _run_hook(tmp_path: Path, spotwatch_script: str, *args: str, bound: str = "") -> int:
    """The sleep hook with /usr/bin/spotwatch pointed at a stand-in script (and, with
    `bound`, its timeout arguments replaced)."""
    fake = tmp_path / "spotwatch"
    fake.write_text("#!/bin/sh\n" + spotwatch_script)
    fake.chmod(0o755)
    hook = tmp_path / "hook"
    text = SLEEP_HOOK.read_text().replace("/usr/bin/spotwatch", str(fake))
    if bound:
        assert "timeout -k 5 60 " in text
        text = text.replace("timeout -k 5 60 ", f"timeout {bound} ")
    hook.write_text(text)
    hook.chmod(0o755)
    return subprocess.run([str(hook), *args], timeout=30).returncode


def test_sleep_hook_passes_its_arguments(tmp_path: Path) -> None:
    out = tmp_path / "args"
    assert _run_hook(tmp_path, f'echo "$@" > {out}\n', "pre", "hibernate") == 0
    assert out.read_text() == "sleep-hook pre hibernate\n"


def test_sleep_hook_never_fails_sleep(tmp_path: Path) -> None:
    assert _run_hook(tmp_path, "exit 3\n", "post", "hibernate") == 0
    missing = tmp_path / "none"
    missing.mkdir()
    hook = missing / "hook"
    hook.write_text(SLEEP_HOOK.read_text().replace("/usr/bin/spotwatch", str(missing / "x")))
    hook.chmod(0o755)
    assert subprocess.run([str(hook), "pre", "hibernate"], timeout=10).returncode == 0


def test_sleep_hook_is_bounded(tmp_path: Path) -> None:
    """A hung `spotwatch sleep-hook` is ended by timeout (here 1 s instead of 60 s)."""
    began = time.monotonic()
    assert _run_hook(tmp_path, "exec sleep 30\n", "pre", "hibernate", bound="-k 1 1") == 0
    assert time.monotonic() - began < 10


def test_sleep_hook_is_plain_posix_sh() -> None:
    assert SLEEP_HOOK.read_text().startswith("#!/bin/sh\n")
    assert os.access(SLEEP_HOOK, os.X_OK)
    if shutil.which("dash"):
        assert subprocess.run(["dash", "-n", str(SLEEP_HOOK)]).returncode == 0
