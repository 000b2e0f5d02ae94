"""`spotwatch reload --pid PID`: the unit's ExecReload (docs/systemd.md, "Reload")."""

from __future__ import annotations

import os
import sys
from typing import Optional

from spotwatch.config.errors import ConfigError
from spotwatch.config.load import load_config
from spotwatch.config.schema import Config
from spotwatch.host.reload import EX_APPLIED, reply_dir, request_reload


def run_reload(path: Optional[str], pid: int, timeout: float) -> int:
    """`spotwatch reload --pid PID`: the unit's ExecReload; prints the daemon's answer."""
    if os.environ.get("RUNTIME_DIRECTORY"):
        directory = reply_dir("")
    else:  # outside the unit: the config names the state directory (if it can be read)
        try:
            directory = reply_dir(load_config(path).state_dir)
        except ConfigError:
            directory = reply_dir(Config().state_dir)
    status, message = request_reload(pid, directory, timeout)
    print(message, file=sys.stdout if status == EX_APPLIED else sys.stderr)
    return status
