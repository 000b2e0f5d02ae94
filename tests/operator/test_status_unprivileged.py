"""`spotwatch status` run by someone other than root. The packaged config is 0600 root, so
status must not need it when it can say what it knows from the state directory, and must
say plainly that it needs root when it cannot (never a config error, exit 78)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Callable, Iterator, Tuple

import pytest
from operator_support import clean_env

from spotwatch.commands.status import run_status
from spotwatch.simulator.imds import ImdsSimulator

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to nobody")


def as_nobody(action: Callable[[], int]) -> Tuple[int, str, str]:
    """Run `action` in a forked child that has become nobody: (status, stdout, stderr)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 70
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                stdout, stderr = io.StringIO(), io.StringIO()
                with redirect_stdout(stdout), redirect_stderr(stderr):
                    code = action()
                out.write(stdout.getvalue().encode())
                err.write(stderr.getvalue().encode())
            except BaseException as failure:  # report anything, never return into pytest
                err.write(repr(failure).encode())
            finally:
                out.flush()
                err.flush()
                os._exit(code)
        status = os.waitpid(pid, 0)[1]
        out.seek(0)
        err.seek(0)
        return os.waitstatus_to_exitcode(status), out.read().decode(), err.read().decode()


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state folder a real `spotwatch run --once` wrote, where nobody could reach it."""
    folder = Path(tempfile.mkdtemp(prefix="spotwatch-status-"))
    folder.chmod(0o755)
    try:
        yield folder / "state"
    finally:
        shutil.rmtree(folder)


def fill(state: Path, config: Path, imds: ImdsSimulator) -> None:
    config.write_text(
        f"state_dir: {state}\npoll_interval: 200ms\necs: {{enabled: false}}\n"
        f"imds: {{endpoint: '{imds.endpoint}', timeout: 300ms, user_data: false}}\n"
    )
    config.chmod(0o600)  # as packaged: root only
    done = subprocess.run(
        [sys.executable, "-m", "spotwatch", "run", "--once", "-c", str(config)],
        env=clean_env(), capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_readable_state_is_shown_without_the_config(state_dir: Path) -> None:
    config = state_dir.parent / "config.yaml"  # 0600 root, as packaged
    with ImdsSimulator() as imds:
        fill(state_dir, config, imds)
    state_dir.chmod(0o755)  # an operator opened it to a monitoring user
    for file in state_dir.iterdir():
        file.chmod(0o644)
    code, out, err = as_nobody(
        lambda: run_status(str(config), as_json=True, default_state_dir=str(state_dir))
    )
    assert code == 0, err
    assert '"result": "ok"' in out
    assert "config not readable" in err


def test_root_only_state_says_it_needs_root(state_dir: Path) -> None:
    config = state_dir.parent / "config.yaml"  # 0600 root, as packaged
    with ImdsSimulator() as imds:
        fill(state_dir, config, imds)
    state_dir.chmod(0o700)  # as packaged
    code, _out, err = as_nobody(
        lambda: run_status(str(config), as_json=False, default_state_dir=str(state_dir))
    )
    assert code == 1, err
    assert "needs root" in err
    assert "cannot read" not in err  # not the config error it used to be
