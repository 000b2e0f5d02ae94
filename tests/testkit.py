"""Helpers every test folder uses (importable from any test: pytest puts tests/ on sys.path
for tests/conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import yaml

REPO = Path(__file__).resolve().parents[1]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll `predicate` until it is truthy and return its value; fail the test on timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def lines(path: Path) -> List[str]:
    """A file's lines, or none while it does not exist yet (hooks append to such files)."""
    return path.read_text().splitlines() if path.exists() else []


def child_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment for a spotwatch child process: this checkout's package, and none of
    the SPOTWATCH_/NOTIFY_ variables the test run itself may carry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOTWATCH_", "NOTIFY_"))}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


SPOTWATCH_RUN = (sys.executable, "-m", "spotwatch", "run")


def spotwatch(
    *args: str, timeout: float = 60.0, env: Optional[Dict[str, str]] = None, cwd: Any = None
) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    """`python -m spotwatch ARGS` with this checkout's code; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "spotwatch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or child_env(),
        cwd=str(cwd or REPO),
    )


def base_config(
    state_dir: Path, endpoint: str, hooks: Optional[List[Dict[str, Any]]] = None, **extra: Any
) -> Dict[str, Any]:
    """A config for a daemon against a simulated IMDS at `endpoint`: fast polls, no ECS, no
    user data; `extra` replaces whole top-level keys."""
    config: Dict[str, Any] = {
        "poll_interval": "200ms",
        "deadline_margin": "1s",
        "state_dir": str(state_dir),
        "imds": {"endpoint": endpoint, "timeout": "300ms", "user_data": False},
        "ecs": {"enabled": False},
        "hooks": hooks or [],
    }
    config.update(extra)
    return config


def config_file(
    path: Path,
    endpoint: str,
    state_dir: Path,
    hooks: Optional[List[Dict[str, Any]]] = None,
    **extra: Any,
) -> Path:
    """`base_config` written to `path`, mode 0600 (as root, the permission rule applies)."""
    path.write_text(yaml.safe_dump(base_config(state_dir, endpoint, hooks, **extra)))
    path.chmod(0o600)
    return path


class DaemonProcess:
    """`python -m spotwatch run` (or `program`, taking the same options) in a child process,
    its output appended to a log file."""

    def __init__(
        self,
        config: Path,
        log: Path,
        *extra: str,
        env: Optional[Dict[str, str]] = None,
        program: Sequence[str] = SPOTWATCH_RUN,
    ) -> None:
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*program, "-c", str(config), *extra],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env or child_env(),
            cwd=str(REPO),
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal it (if it still runs) and wait; its exit status. Killed if it outlasts
        `timeout` (the wait then raises)."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log.close()


def end_process(process: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """SIGTERM to a child that still runs, SIGKILL if it outlasts `timeout`; reaped."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def response_record(state: Dict[str, Any], tracker: str = "spot") -> Dict[str, Any]:
    """The newest response record of a tracker in a state document ({} when none): records
    are keyed per notice (`spot#1`, `spot#2`, …), each naming its tracker."""
    found = [
        record
        for key, record in state.get("responses", {}).items()
        if record.get("tracker", key) == tracker
    ]
    return found[-1] if found else {}


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing and answers in one call."""

    def reply(self, status: int, data: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_in_thread(handler: Any) -> Tuple[ThreadingHTTPServer, str]:
    """A threaded HTTP server on 127.0.0.1 with `handler`, serving from a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def moto_server() -> Iterator[str]:
    """moto's server on a free loopback port (for a fixture: `yield from moto_server()`)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


AWS_VARIABLES_CLEARED = (
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_ECS",
    "AWS_ENDPOINT_URL_EC2",
    "AWS_ENDPOINT_URL_S3",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
)


def dummy_aws_env(monkeypatch: Any, folder: Path, region: str) -> None:
    """Dummy credentials, a region, no shared config, no IMDS: boto3 never reaches a real
    account from a test (`monkeypatch`: pytest's, so all is undone after the test)."""
    for name in AWS_VARIABLES_CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(folder / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def python_without(folder: Path, *packages: str) -> Tuple[List[str], Dict[str, str]]:
    """A command line and environment for this Python in which `packages` (top-level import
    names) are not installed: the interpreter without its site-packages (`-S`), and on
    PYTHONPATH this checkout, then a folder (made in `folder`) linking every other entry of
    those site-packages. The world a machine without them shows spotwatch."""
    installed = Path(sysconfig.get_paths()["purelib"])
    links = folder / "site-packages"
    links.mkdir()
    for entry in installed.iterdir():
        top = entry.name.split("-")[0].split(".")[0]  # docker, docker-7.2.0.dist-info
        if top not in packages and entry.suffix != ".pth":
            (links / entry.name).symlink_to(entry)
    env = child_env({"PYTHONPATH": f"{REPO}{os.pathsep}{links}"})
    return [sys.executable, "-S"], env


def write_service_config(folder: Path, imds_endpoint: str, **overrides: Any) -> Path:
    """`folder`/config.yaml (mode 0600): polls every 200 ms against the IMDS simulator, no
    user data, no ECS, no hooks, state in `folder`/state; `overrides` replace top-level keys."""
    config: Dict[str, Any] = {
        "poll_interval": "200ms",
        "deadline_margin": "1s",
        "state_dir": str(folder / "state"),
        "imds": {"endpoint": imds_endpoint, "timeout": "300ms", "user_data": False},
        "ecs": {"enabled": False},
        "hooks": [],
        **overrides,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path
