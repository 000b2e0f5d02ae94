"""What the product exports, asked of the product itself: a real `spotwatch run` against the
IMDS simulator, with a scheduled event listed two days ahead and a terminate notice whose
response runs one hook that succeeds and one that fails, scraped on /metrics once every
kind of series has appeared (the textfile is written by the same code and checked equal)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, Iterator

import pytest
import yaml
from testkit import end_process

from spotwatch.simulator.imds import ImdsSimulator

REPO = Path(__file__).resolve().parents[2]
TYPE_LINE = re.compile(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)$", re.M)
# Series that exist only once something happened: a step ran, a step failed, an event is listed.
AFTER_A_NOTICE = ("spotwatch_step_duration_seconds", "spotwatch_step_failures_total",
                  "spotwatch_next_scheduled_event_timestamp_seconds",
                  "spotwatch_detection_latency_seconds")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return str(answer.read().decode())
    except OSError:
        return ""


def _hook(folder: Path, name: str, status: int) -> str:
    script = folder / f"{name}.sh"
    script.write_text(f"#!/bin/sh\necho {name}\nexit {status}\n")
    script.chmod(0o755)
    return str(script)


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, str]]:
    """name -> type of every metric family the daemon exports."""
    folder = tmp_path_factory.mktemp("exported")
    port = _free_port()
    textfile = folder / "spotwatch.prom"
    with ImdsSimulator() as imds:
        imds.scheduled.add("system-reboot", datetime.now(timezone.utc) + timedelta(days=2))
        config = folder / "config.yaml"
        config.write_text(yaml.safe_dump({
            "poll_interval": "200ms",
            "deadline_margin": "1s",
            "state_dir": str(folder / "state"),
            "imds": {"endpoint": imds.endpoint, "timeout": "300ms", "user_data": False},
            "scheduled_events": {"poll_interval": "1s"},
            "ecs": {"enabled": False},
            "metrics": {"listen": f"127.0.0.1:{port}", "textfile": str(textfile)},
            "hooks": [{"name": "good", "command": [_hook(folder, "good", 0)]},
                      {"name": "bad", "command": [_hook(folder, "bad", 1)]}],
        }))  # fmt: skip
        config.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOTWATCH_", "NOTIFY_"))}
        log = open(folder / "daemon.log", "wb")  # noqa: SIM115 - closed below
        daemon = subprocess.Popen(
            [sys.executable, "-m", "spotwatch", "run", "-c", str(config)],
            stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO),
            env={**env, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            end = time.monotonic() + 30
            while not _scrape(url) and time.monotonic() < end:
                time.sleep(0.1)
            imds.raise_notice("terminate", 60)
            text = ""
            while time.monotonic() < end:
                text = _scrape(url)
                if all(f"# TYPE {name} " in text for name in AFTER_A_NOTICE):
                    break
                time.sleep(0.1)
            families = dict(TYPE_LINE.findall(text))
            assert set(AFTER_A_NOTICE) <= set(families), (
                text + (folder / "daemon.log").read_text(errors="replace")[-3000:]
            )
            time.sleep(0.5)  # a poll later: the textfile is rewritten after every poll
            assert dict(TYPE_LINE.findall(textfile.read_text())) == families
            yield families
        finally:
            end_process(daemon, 30)
            log.close()
