"""The spotwatch unit under a real `systemd --user` manager; run by test_sd_manager.py.

Usage (root): unshare --mount --propagation private --pid --fork --mount-proc --kill-child \
    python manager_scenario.py REPO WORKDIR

In its private mount namespace it mounts a tmpfs on /run/systemd (so the manager believes it
runs on a systemd system and the host's journald is hidden), binds a stand-in journald to
/run/systemd/journal/socket, starts `systemd --user` with XDG_RUNTIME_DIR/XDG_CONFIG_HOME
in WORKDIR, installs a unit generated from the real systemd/spotwatch.service and drives it
with systemctl against an IMDS simulator on 127.0.0.1. The PID namespace makes sure nothing
it started outlives it. It prints one JSON object of what it observed as its last line;
the assertions are in the test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

UNIT = "spotwatch-test.service"
# Directives of the real unit replaced in the test copy (and why):
TEST_OVERRIDES = {
    "WatchdogSec": "3s",  # a frozen loop is noticed in seconds, not 30
    "RestartSec": "1s",  # and restarted quickly
}


def render_test_unit(real: str, exec_start: str, extra: List[str]) -> str:
    """The real unit with ExecStart (and ExecReload's program) and TEST_OVERRIDES replaced
    and `extra` lines added to [Service]; every other directive (hardening included) stays
    as shipped."""
    out: List[str] = []
    for line in real.splitlines():
        key = line.split("=", 1)[0].strip()
        if key == "ExecStart":
            line = f"ExecStart={exec_start}"
        elif key == "ExecReload":  # the same program as ExecStart: this checkout's
            line = line.replace("/usr/bin/spotwatch", exec_start.split(" run ", 1)[0])
        elif key in TEST_OVERRIDES:
            line = f"{key}={TEST_OVERRIDES[key]}"
        out.append(line)
        if line.strip() == "[Service]":
            out.extend(extra)
    return "\n".join(out) + "\n"


class FakeJournald(threading.Thread):
    """Collects native-protocol datagrams sent to /run/systemd/journal/socket."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        from spotwatch.host.journal import decode

        self._decode = decode
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.entries: List[Dict[str, str]] = []

    def run(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                return
            try:
                entry = {k: v.decode("utf-8", "replace") for k, v in self._decode(data)}
            except (ValueError, UnicodeDecodeError):
                continue
            self.entries.append(entry)

    def spotwatch(self) -> List[Dict[str, str]]:
        return [e for e in list(self.entries) if e.get("SYSLOG_IDENTIFIER") == "spotwatch"]


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= end:
            return value
        time.sleep(interval)


def main(repo: Path, work: Path) -> Dict[str, Any]:
    sys.path.insert(0, str(repo))
    import yaml

    from spotwatch.simulator.imds import ImdsSimulator, format_time

    facts: Dict[str, Any] = {}
    # Byte-compile first: a daemon compiling its modules on a loaded machine must not be
    # mistaken for a frozen one by the short test watchdog.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(repo / "spotwatch")],
        check=False,
        capture_output=True,
    )
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/systemd"], check=True)
    os.makedirs("/run/systemd/system")
    os.makedirs("/run/systemd/journal")
    journald = FakeJournald("/run/systemd/journal/socket")
    journald.start()

    runtime, config_home = work / "runtime", work / "config"
    runtime.mkdir(mode=0o700)
    (config_home / "systemd" / "user").mkdir(parents=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SPOTWATCH_", "NOTIFY_", "WATCHDOG_", "DBUS_", "JOURNAL_"))
        and k not in ("INVOCATION_ID", "LISTEN_PID", "LISTEN_FDS", "MANAGERPID")
    }
    env.update(XDG_RUNTIME_DIR=str(runtime), XDG_CONFIG_HOME=str(config_home))
    manager_log = open(work / "manager.log", "wb")  # noqa: SIM115 - lives as long as we do
    manager = subprocess.Popen(
        ["/lib/systemd/systemd", "--user"],
        env={**env, "SYSTEMD_LOG_TARGET": "console", "SYSTEMD_LOG_LEVEL": "info"},
        stdout=manager_log,
        stderr=subprocess.STDOUT,
    )

    def systemctl(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["systemctl", "--user", "--no-pager", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def show() -> Dict[str, str]:
        props = "ActiveState,SubState,StatusText,MainPID,NRestarts,Result,ExecMainStatus"
        answer = systemctl("show", "-p", props, UNIT)
        return dict(line.split("=", 1) for line in answer.stdout.splitlines() if "=" in line)

    try:
        state = wait_for(
            lambda: systemctl("is-system-running").stdout.strip() in ("running", "degraded"), 20
        )
        if not state:
            log = (work / "manager.log").read_text(errors="replace")
            raise RuntimeError("the user manager did not come up: " + log[-2000:])

        with ImdsSimulator() as imds:
            state_dir, marker = work / "state", work / "hook.marker"
            state_dir.mkdir()
            hook = {
                "name": "checkpoint",
                "command": f"echo start >> {marker}; sleep 5; echo end >> {marker}",
                "actions": ["terminate"],
                "timeout": "30s",
            }

            def write_config(interval: str, hooks: List[Dict[str, Any]]) -> None:
                config = {
                    "poll_interval": interval,
                    "deadline_margin": "1s",
                    "state_dir": str(state_dir),
                    "imds": {"endpoint": imds.endpoint, "timeout": "300ms", "user_data": False},
                    "ecs": {"enabled": False},
                    "hooks": hooks,
                    "log": {"format": "auto", "level": "info"},
                }
                path = work / "config.yaml"
                path.write_text(yaml.safe_dump(config))
                path.chmod(0o600)

            write_config("200ms", [])
            real = (repo / "systemd" / "spotwatch.service").read_text()
            unit = render_test_unit(
                real,
                f"{sys.executable} -m spotwatch run -c {work / 'config.yaml'}",
                [
                    f"Environment=PYTHONPATH={repo}",
                    f"WorkingDirectory={work}",
                    "LimitCORE=0",  # the watchdog's SIGABRT must not leave a core file
                    f"StandardOutput=append:{work / 'daemon.log'}",
                    f"StandardError=append:{work / 'daemon.log'}",
                ],
            )
            (config_home / "systemd" / "user" / UNIT).write_text(unit)
            facts["unit"] = unit
            systemctl("daemon-reload")

            # 1. start returns once READY=1 came: active at once, with the poll's status
            began = time.monotonic()
            started = systemctl("start", UNIT)
            facts["start"] = {
                "rc": started.returncode,
                "stderr": started.stderr,
                "seconds": time.monotonic() - began,
                "show": show(),
            }
            main_pid = int(facts["start"]["show"].get("MainPID", "0"))
            facts["same_mount_namespace"] = main_pid > 0 and os.readlink(
                f"/proc/{main_pid}/ns/mnt"
            ) == os.readlink("/proc/self/ns/mnt")

            # 2. reload applies a new config (poll interval and a hook)
            write_config("300ms", [hook])
            reloaded = systemctl("reload", UNIT)
            wait_for(lambda: "0.3 s" in show().get("StatusText", ""), 10)
            wait_for(lambda: show().get("ActiveState") == "active", 5)
            facts["reload"] = {
                "rc": reloaded.returncode,
                "show": show(),
                "events": [e.get("SPOTWATCH_EVENT") for e in journald.spotwatch()],
            }

            # 3. a frozen loop: the watchdog kills and restarts the daemon
            before = show()
            os.kill(main_pid, signal.SIGSTOP)
            began = time.monotonic()

            seen = set()  # Result= values on the way (watchdog while in auto-restart)

            def restarted() -> Optional[Dict[str, str]]:
                now = show()
                seen.add(now.get("Result", ""))
                fresh = now.get("MainPID") not in ("0", str(main_pid))
                return now if fresh and now.get("ActiveState") == "active" else None

            after = wait_for(restarted, 15)
            facts["watchdog"] = {
                "before": before,
                "after": after or show(),
                "seconds": time.monotonic() - began,
                "results_seen": sorted(seen),
            }

            # 4. SIGTERM (systemctl stop) during a running hook: the hook finishes first
            notice_time = format_time(datetime.now(timezone.utc) + timedelta(seconds=60))
            imds.set_instance_action("terminate", notice_time)
            hook_started = wait_for(lambda: marker.exists() and "start" in marker.read_text(), 15)
            before_stop = show()
            began = time.monotonic()
            stopped = systemctl("stop", UNIT, timeout=60)
            facts["stop"] = {
                "hook_started": bool(hook_started),
                "before": before_stop,
                "rc": stopped.returncode,
                "stderr": stopped.stderr,
                "seconds": time.monotonic() - began,
                "marker_when_stop_returned": marker.read_text() if marker.exists() else "",
                "show": show(),
            }

        entries = journald.spotwatch()
        facts["journal"] = {
            "count": len(entries),
            "events": sorted({e.get("SPOTWATCH_EVENT", "") for e in entries}),
            "notice": next((e for e in entries if e.get("SPOTWATCH_EVENT") == "notice"), None),
            "hook": next((e for e in entries if e.get("SPOTWATCH_HOOK")), None),
        }
    finally:
        try:
            systemctl("stop", UNIT, timeout=20)
            systemctl("exit", timeout=10)
            manager.wait(10)
        except (subprocess.SubprocessError, OSError):
            manager.kill()
        manager_log.close()
        log = work / "daemon.log"
        facts["daemon_log"] = log.read_text(errors="replace")[-20000:] if log.exists() else ""
    return facts


if __name__ == "__main__":
    result = main(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps(result, default=str))
