"""Fixtures for the operator commands: a simulated IMDS, configs with real hook scripts and a
local webhook receiver. Helpers the tests import live in operator_support.py: test modules
never import `conftest` (another directory's conftest may be the one in sys.modules)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest


@pytest.fixture
def hook_script(tmp_path: Path) -> Callable[..., str]:
    """A real executable shell script that appends its SPOTWATCH_* environment to OUT."""

    def make(name: str, out: Path, *, sleep: float = 0.0, exit_code: int = 0) -> str:
        script = tmp_path / f"{name}.sh"
        body = [
            "#!/bin/sh",
            f'echo "{name} $SPOTWATCH_ACTION $SPOTWATCH_SOURCE $SPOTWATCH_DRY_RUN" >> "{out}"',
            f'echo "{name} says hello"',
        ]
        if sleep:
            body.append(f"sleep {sleep}")
        body.append(f"exit {exit_code}")
        script.write_text("\n".join(body) + "\n")
        script.chmod(0o755)
        return str(script)

    return make


class Receiver:
    """A webhook receiver on 127.0.0.1: answers 500 to the first `fail` requests, each
    after `delay` seconds. JSON bodies are kept parsed in `events`, every body raw in `bodies`."""

    def __init__(self, fail: int = 0, delay: float = 0.0) -> None:
        self.fail = fail
        self.delay = delay
        self.requests = 0
        self.events: List[Dict[str, Any]] = []
        self.bodies: List[bytes] = []
        self.content_types: List[str] = []
        self.headers: List[Dict[str, str]] = []
        self.paths: List[str] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                time.sleep(receiver.delay)
                with receiver._lock:
                    receiver.requests += 1
                    failing = receiver.requests <= receiver.fail
                    if not failing:
                        content_type = self.headers.get("Content-Type", "")
                        if content_type.startswith("application/json"):
                            receiver.events.append(json.loads(body))
                        receiver.bodies.append(body)
                        receiver.content_types.append(content_type)
                        receiver.headers.append(dict(self.headers))
                        receiver.paths.append(self.path)
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    made: List[Receiver] = []

    def make(fail: int = 0, delay: float = 0.0) -> Receiver:
        made.append(Receiver(fail, delay))
        return made[-1]

    yield make
    for r in made:
        r.close()
