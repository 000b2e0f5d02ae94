"""What every benchmark shares: statistics, result rows, /proc readings, and the processes
under test (the IMDS simulator, the daemon, moto's server), each in a process of its own."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

ROOT = Path(__file__).resolve().parent.parent  # the checkout: its spotwatch, not an installed one
TICKS = os.sysconf("SC_CLK_TCK")
INSTANCE_ACTION = "/latest/meta-data/spot/instance-action"


# --------------------------------------------------------------------- statistics and rows


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


@dataclass
class Row:
    section: str
    metric: str
    unit: str
    values: List[float]
    note: str = ""
    target: str = ""
    met: Optional[bool] = None
    p99: Optional[float] = None

    @property
    def median(self) -> float:
        return median(self.values) if self.values else float("nan")

    def as_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "section": self.section,
            "metric": self.metric,
            "unit": self.unit,
            "n": len(self.values),
            "median": self.median if self.values else None,
            "min": min(self.values) if self.values else None,
            "max": max(self.values) if self.values else None,
            "values": self.values,
        }
        if self.p99 is not None:
            out["p99"] = self.p99
        if self.note:
            out["note"] = self.note
        if self.target:
            out["target"] = self.target
            out["met"] = self.met
        return out


@dataclass
class Results:
    rows: List[Row] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)

    def add(self, section: str, metric: str, unit: str, values: Sequence[float], **kw: Any) -> Row:
        row = Row(section, metric, unit, [float(v) for v in values], **kw)
        self.rows.append(row)
        return row


def fmt(value: Optional[float]) -> str:
    if value is None or value != value:
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(results: Results) -> str:
    """A Markdown table (it reads in a terminal as well as in docs/benchmarks.md)."""
    lines = [
        "| section | metric | unit | median | min | max | n | target |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for row in results.rows:
        values = row.values
        low = min(values) if values else None
        high = max(values) if values else None
        target = ""
        if row.target:
            target = f"{row.target}: {'met' if row.met else 'MISSED'}"
        metric = row.metric + (f" ({row.note})" if row.note else "")
        if row.p99 is not None:
            metric += f"; p99 {fmt(row.p99)}"
        lines.append(
            f"| {row.section} | {metric} | {row.unit} | {fmt(row.median if values else None)} "
            f"| {fmt(low)} | {fmt(high)} | {len(values)} | {target} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------- /proc


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime + stime of every thread (+ waited-for descendants when `children`), seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def thread_cpu_seconds(pid: int) -> float:
    """Time on CPU of the process's live threads, in ns precision (/proc/PID/task/*/schedstat);
    threads that already ended are not in it, so use it where none end (an idle daemon)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1e9


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, seconds: float = 30.0) -> None:
    give_up = time.monotonic() + seconds
    while time.monotonic() < give_up:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds:g} s")


def wait_until(predicate: Any, seconds: float, what: str, pause: float = 0.005) -> None:
    give_up = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > give_up:
            raise RuntimeError(f"timed out after {seconds:g} s waiting for {what}")
        time.sleep(pause)


def child_env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("SPOTWATCH_CONFIG", None)
    env.pop("SPOTWATCH_POLL_INTERVAL", None)
    # The hibernation trigger asks systemctl whether a sleep is already queued: not here.
    # A `systemctl` that answers nothing comes first on the daemon's PATH.
    env["PATH"] = os.pathsep.join([str(_no_systemd_folder()), env.get("PATH", os.defpath)])
    env.update(extra)
    return env


_NO_SYSTEMD: List[Path] = []


def _no_systemd_folder() -> Path:
    """A folder holding a `systemctl` that fails at once, like /bin/false (made once)."""
    if not _NO_SYSTEMD:
        folder = Path(tempfile.mkdtemp(prefix="spotwatch-bench-path-"))
        (folder / "systemctl").write_text("#!/bin/sh\nexit 1\n")
        (folder / "systemctl").chmod(0o755)
        atexit.register(shutil.rmtree, folder, True)
        _NO_SYSTEMD.append(folder)
    return _NO_SYSTEMD[0]


# --------------------------------------------------------------------- the simulator


class SimProcess:
    """`bench.simproc` in a child process: the IMDS the daemon polls."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.simproc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
            env=child_env(),
        )
        assert self.proc.stdout is not None
        self.endpoint: str = json.loads(self.proc.stdout.readline())["endpoint"]

    def call(self, op: str, **args: Any) -> Dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        answer: Dict[str, Any] = json.loads(self.proc.stdout.readline())
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def count(self, path: str = INSTANCE_ACTION) -> int:
        return int(self.call("count", path=path)["count"])

    def log(self, since: float = 0.0) -> List[List[Any]]:
        rows: List[List[Any]] = self.call("log", since=since)["log"]
        return rows

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------- the daemon


class DaemonProcess:
    """`python -m spotwatch run` with a config of our making, in a temporary folder
    (written as "@DIR@" in `settings`)."""

    def __init__(
        self,
        endpoint: str,
        settings: Optional[Dict[str, Any]] = None,
        *,
        env: Optional[Dict[str, str]] = None,
        poll_interval: str = "5s",
    ) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="spotwatch-bench-"))
        config: Dict[str, Any] = {
            "cloud": "aws",  # not the firmware's: the bench is the same on any machine
            "poll_interval": poll_interval,
            "state_dir": str(self.folder / "state"),
            "imds": {"endpoint": endpoint, "user_data": False},
            "ecs": {"enabled": False},
            "hooks": [],
            "log": {"level": "info", "format": "text"},
        }
        for key, value in (settings or {}).items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        self.config_path = self.folder / "config.yaml"
        # "@DIR@" anywhere in the settings is this folder (hooks write their marks in it).
        self.config_path.write_text(yaml.safe_dump(config).replace("@DIR@", str(self.folder)))
        self.config_path.chmod(0o600)
        self.log_path = self.folder / "daemon.log"
        self._env = child_env(**(env or {}))
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.started = 0.0

    def path(self, name: str) -> Path:
        return self.folder / name

    def start(self) -> DaemonProcess:
        with open(self.log_path, "wb") as log:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "spotwatch", "run", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=str(self.folder),
                env=self._env,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"the daemon exited with {self.proc.returncode}: "
                + self.log_path.read_text(errors="replace")[-2000:]
            )

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cleanup(self) -> None:
        self.stop()
        subprocess.run(["rm", "-rf", str(self.folder)], check=False)


def read_lines(path: Path) -> List[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


# --------------------------------------------------------------------- moto


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class MotoProcess:
    """moto's server in a process of its own (it handles one request at a time)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **AWS_ENV},
        )
        wait_for_port(self.port)
        os.environ.update(AWS_ENV)
        os.environ["AWS_ENDPOINT_URL"] = self.endpoint

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
