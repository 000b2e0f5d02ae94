"""A reload that would move the state directory is refused: the daemon would keep writing
the old folder while `status`, the sleep hook and the trigger read the new one."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from spotwatch.config.schema import Config, ImdsSettings
from spotwatch.daemon.shell import Daemon
from spotwatch.host.notify import Notifier
from spotwatch.host.reload import REPLY_FILE, ReloadReplies
from spotwatch.simulator.imds import ImdsSimulator


def test_a_new_state_dir_needs_a_restart_and_the_reload_says_so(tmp_path: Path) -> None:
    with ImdsSimulator() as sim:
        old = Config(
            state_dir=str(tmp_path / "old"),
            imds=ImdsSettings(endpoint=sim.endpoint, timeout=0.3, user_data=False),
        )
        moved = replace(old, state_dir=str(tmp_path / "new"), poll_interval=1.0)
        replies = tmp_path / "replies"
        replies.mkdir()
        daemon = Daemon(
            old,
            reload_config=lambda: moved,
            notifier=Notifier(""),
            reload_replies=ReloadReplies(str(replies)),
        )
        daemon.prepare()
        try:
            daemon.reload()
            assert daemon.config.state_dir == old.state_dir
            assert daemon.config.poll_interval == old.poll_interval  # nothing of it applied
            answer = json.loads((replies / REPLY_FILE).read_text())
            assert answer["applied"] is False and "needs a restart" in answer["message"]
        finally:
            daemon.shutdown()
