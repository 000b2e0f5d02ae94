"""What the booted machine's hooks reach outside it: a real dockerd on the host (its socket
bound into the machine at /run/docker.sock) and an HTTP endpoint on the host's 127.0.0.1
that records every request and answers `GET /version` as a Kubernetes API server does, so
`kubectl --server` gets a real answer. The container shares the host's network."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator, List, Optional

KUBERNETES_VERSION = {
    "major": "1",
    "minor": "20",
    "gitVersion": "v1.20.2",
    "gitCommit": "faecb196815e248d3ecfb03c680a4507229c2a56",
    "gitTreeState": "clean",
    "buildDate": "2021-01-13T13:20:00Z",
    "goVersion": "go1.15.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


class Endpoint:
    """HTTP on 127.0.0.1: records each request's path; `/version` is Kubernetes'."""

    def __init__(self) -> None:
        self.paths: List[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                endpoint.paths.append(path)
                body = json.dumps(KUBERNETES_VERSION if path == "/version" else {}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def dockerd(folder: Path) -> Iterator[Optional[Path]]:
    """A real dockerd (own data-root, exec-root and socket; no iptables, no bridge): the
    socket's path once it answers, or None where dockerd is not installed or never answered."""
    program = shutil.which("dockerd")
    client = shutil.which("docker")
    if program is None or client is None:
        yield None
        return
    folder.mkdir(parents=True, exist_ok=True)
    # A short path: a unix socket's name is limited to 108 bytes.
    sockets = Path(f"/run/spotwatch-boot-{os.getpid()}")
    sockets.mkdir(mode=0o700, exist_ok=True)
    socket = sockets / "docker.sock"
    log = open(folder / "dockerd.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [program, "--iptables=false", "--ip-masq=false", "--bridge=none",
         f"--data-root={folder / 'data'}", f"--exec-root={sockets / 'exec'}",
         f"--pidfile={folder / 'dockerd.pid'}", f"--host=unix://{socket}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and process.poll() is None:
            answer = subprocess.run(
                [client, "-H", f"unix://{socket}", "version", "--format", "{{.Server.Version}}"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            if answer.returncode == 0:
                break
            time.sleep(0.5)
        yield socket if process.poll() is None else None
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # it stops the containerd it started
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        shutil.rmtree(sockets, ignore_errors=True)
        shutil.rmtree(folder / "data", ignore_errors=True)
