"""`systemctl reload spotwatch` that returns the daemon's answer.

systemd 252 (Amazon Linux 2023's) has no `Type=notify-reload`, and a reload job ends when
ExecReload exits: with `kill -HUP` that is before the daemon has even read the file, so a
refused config was reported as reloaded. Instead ExecReload runs `spotwatch reload --pid
$MAINPID`, which leaves a request (a fresh nonce) in the reply folder, sends SIGHUP, and
waits until the daemon writes its answer carrying that nonce: exit 0 when the new config is
in force, 78 with the daemon's problems when it was refused (the old one stays), 1 when no
answer came.

The reply folder is `$RUNTIME_DIRECTORY` (the unit's `RuntimeDirectory=spotwatch`, mode
0700) when systemd gives one to both sides, else the state directory: root-only either way,
and the first needs no config, so a reload whose new config is unreadable still finds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from spotwatch.exits import EX_CONFIG, EX_FAILURE, EX_OK
from spotwatch.state.files import write_atomically

REQUEST_FILE = "reload-request"
REPLY_FILE = "reload-reply.json"
EX_APPLIED, EX_NO_ANSWER, EX_REFUSED = EX_OK, EX_FAILURE, EX_CONFIG


def reply_dir(state_dir: str) -> str:
    """Where requests and answers meet: systemd's runtime folder for the unit, if any."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return runtime or state_dir


def _write_private(path: str, text: str) -> None:
    """Whole or not at all, readable by root only, never through a planted link (a temp file
    of a random name made with O_EXCL, renamed over the target)."""
    write_atomically(path, text.encode("utf-8"))


@dataclass(frozen=True)
class Answer:
    applied: bool
    message: str


class ReloadReplies:
    """The daemon's side: after each reload, answer the request that asked for it."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def answer(self, answer: Answer) -> None:
        try:
            with open(os.path.join(self.directory, REQUEST_FILE), encoding="utf-8") as handle:
                request = handle.read().strip()
        except OSError:
            request = ""  # a plain SIGHUP: nobody waits, but say how it went all the same
        reply = {
            "request": request,
            "pid": os.getpid(),
            "applied": answer.applied,
            "message": answer.message,
        }
        # The reload itself happened; if this fails, only the waiting side times out.
        with contextlib.suppress(OSError):
            _write_private(os.path.join(self.directory, REPLY_FILE), json.dumps(reply))


def _read_reply(directory: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(directory, REPLY_FILE), encoding="utf-8") as handle:
            value = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def request_reload(
    pid: int,
    directory: str,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Tuple[int, str]:
    """Ask daemon `pid` to reload and wait for its answer: (exit status, message)."""
    if not _alive(pid):
        return EX_NO_ANSWER, f"no daemon with PID {pid}"
    nonce = secrets.token_hex(16)
    try:
        _write_private(os.path.join(directory, REQUEST_FILE), nonce + "\n")
    except OSError as failure:
        return EX_NO_ANSWER, f"cannot leave a reload request in {directory}: {failure.strerror}"
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return EX_NO_ANSWER, f"no daemon with PID {pid}"
    except PermissionError:
        return EX_NO_ANSWER, f"not allowed to signal PID {pid}: reloading needs root"
    end = clock() + timeout
    while clock() < end:
        reply = _read_reply(directory)
        if reply is not None and reply.get("request") == nonce:
            message = str(reply.get("message", ""))
            return (EX_APPLIED if reply.get("applied") is True else EX_REFUSED), message
        if not _alive(pid):
            return EX_NO_ANSWER, f"the daemon (PID {pid}) ended before it answered"
        time.sleep(0.05)
    return EX_NO_ANSWER, f"the daemon (PID {pid}) did not answer within {timeout:g} s"
