"""A state folder the daemon cannot write: every failure is logged once and the daemon goes on.

The folder is made unwritable for real (a read-only bind mount, a file where the folder
should be, a folder where the ledger file should be): we run as root, so a mode alone would
not stop a write.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from service_support import counter_hook, lines, wait_for

from spotwatch.simulator.imds import INSTANCE_ACTION_PATH
from spotwatch.state.ledger import BY_DAEMON, HibernateLedger


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` read-only for everyone, root included, for the block (skip without mounts)."""
    try:
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("bind mounts are not permitted here")
    try:
        subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True
        )
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_state_dir_is_logged_once_and_the_daemon_responds(
    imds, workdir, write_config, daemons
):
    """At start the daemon caches IMDS hibernation/configured in the hibernation ledger.
    Before the fix that failed write ended `run` with exit 1 (a systemd restart loop); now
    it is one log line, polling goes on, a notice is still handled and SIGTERM exits 0."""
    out = workdir / "hook.out"
    config = write_config([counter_hook("save", out)])
    with read_only(workdir / "state"):
        daemon = daemons(config)
        wait_for(lambda: imds.count("GET", INSTANCE_ACTION_PATH) >= 5, timeout=20)
        assert daemon.process.poll() is None, daemon.log()
        imds.raise_notice("terminate", 30)
        wait_for(lambda: lines(out), timeout=20)
        assert daemon.stop() == 0, daemon.log()
    log = daemon.log()
    assert "Traceback" not in log
    assert log.count("hibernate ledger") == 1, log


def test_the_ledger_keeps_its_view_in_memory_while_it_cannot_write(tmp_path, caplog):
    """A file where the state folder should be: nothing can be written or locked. Every
    ledger call still answers (a trigger is claimed once per notice), the failure is logged
    once, and a later write that works brings the file up to date."""
    state = tmp_path / "state"
    state.write_text("not a folder")
    ledger = HibernateLedger(str(state), boot_id="boot-1")
    with caplog.at_level(logging.INFO, logger="spotwatch.state"):
        ledger.set_configured(True)
        assert ledger.claim_hooks("n1", BY_DAEMON) is None
        assert ledger.claim_trigger("n1") is True
        assert ledger.claim_trigger("n1") is False
        assert ledger.configured() is True and ledger.triggered("n1") is not None
        failures = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(failures) == 1 and str(state) in failures[0].getMessage()

        state.unlink()
        state.mkdir()
        assert ledger.claim_trigger("n2") is True
    assert "written again" in caplog.text
    fresh = HibernateLedger(str(state), boot_id="boot-1")
    assert fresh.configured() is True
    assert fresh.triggered("n1") is not None and fresh.triggered("n2") is not None


def test_a_folder_where_the_ledger_file_should_be(tmp_path):
    """The lock works but the file cannot be replaced: calls answer from memory."""
    (tmp_path / "hibernate.json").mkdir()
    ledger = HibernateLedger(str(tmp_path), boot_id="boot-1")
    assert ledger.claim_resume(BY_DAEMON, 0) is True
    assert ledger.resumes() == 1
