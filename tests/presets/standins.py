"""Small real servers the presets talk to in the tests: a Kubernetes API that the real
`kubectl` drains and uncordons a node against (recording every request), a Slurm controller
port the real `scontrol` sends its update to (signed by a real munged), and an HTTP receiver
that answers as told (2xx late, 500, or never)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

from testkit import QuietHandler, serve_in_thread

DISCOVERY: Dict[str, Any] = {
    "/version": {"major": "1", "minor": "29", "gitVersion": "v1.29.0"},
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {"name": "nodes", "singularName": "node", "namespaced": False, "kind": "Node",
             "verbs": ["get", "list", "patch"]},
            {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
             "verbs": ["get", "list", "delete"]},
        ],
    },
}  # fmt: skip


class KubeApi:
    """Nodes (by name) with `spec.unschedulable`, no pods; every request recorded as
    (method, path, body)."""

    def __init__(self, nodes: Tuple[str, ...]) -> None:
        self.unschedulable: Dict[str, bool] = {name: False for name in nodes}
        self.requests: List[Tuple[str, str, str]] = []
        api = self

        class Handler(QuietHandler):
            def answer(self, status: int, body: Any) -> None:
                self.reply(status, json.dumps(body).encode(), "application/json")

            def node(self, name: str) -> Dict[str, Any]:
                return {"kind": "Node", "apiVersion": "v1",
                        "metadata": {"name": name, "resourceVersion": "1"},
                        "spec": {"unschedulable": api.unschedulable[name]}}  # fmt: skip

            def do_GET(self) -> None:
                api.requests.append(("GET", self.path, ""))
                path = self.path.split("?")[0]
                name = path.rsplit("/", 1)[-1]
                if path in DISCOVERY:
                    self.answer(200, DISCOVERY[path])
                elif path.startswith("/api/v1/nodes/") and name in api.unschedulable:
                    self.answer(200, self.node(name))
                elif path == "/api/v1/pods":
                    self.answer(200, {"kind": "PodList", "apiVersion": "v1", "items": [],
                                      "metadata": {"resourceVersion": "1"}})  # fmt: skip
                else:
                    self.answer(404, {"kind": "Status", "apiVersion": "v1", "code": 404,
                                      "status": "Failure", "reason": "NotFound",
                                      "message": f'nodes "{name}" not found'})  # fmt: skip

            def do_PATCH(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                api.requests.append(("PATCH", self.path, body))
                name = self.path.split("?")[0].rsplit("/", 1)[-1]
                wanted = json.loads(body).get("spec", {}).get("unschedulable")
                api.unschedulable[name] = bool(wanted)
                self.answer(200, self.node(name))

        self.server, self.url = serve_in_thread(Handler)

    def kubeconfig(self, folder: Path) -> Path:
        path = folder / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": self.url}}],
                    "users": [{"name": "u", "user": {"token": "t0ken"}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        )
        return path

    def patches(self) -> List[Tuple[str, str]]:
        return [(path, body) for method, path, body in self.requests if method == "PATCH"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Receiver:
    """Answers each POST with `status` after `delay` seconds (`delay` None: never answers
    while the test runs); records the bodies and headers it got."""

    def __init__(self) -> None:
        self.status = 200
        self.delay: Any = 0.0
        self.bodies: List[Dict[str, Any]] = []
        self.headers: List[Dict[str, str]] = []
        self.times: List[float] = []
        self.closing = threading.Event()
        receiver = self

        class Handler(QuietHandler):
            def handle_body(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.times.append(time.monotonic())
                receiver.bodies.append(json.loads(data))
                receiver.headers.append(dict(self.headers.items()))
                if receiver.delay is None:
                    receiver.closing.wait(30)
                    return
                time.sleep(receiver.delay)
                self.reply(receiver.status, b"{}", "application/json")

            do_POST = do_PUT = handle_body

        self.server, self.url = serve_in_thread(Handler)

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


class Slurmctld:
    """What the real `scontrol` needs to send its request: a slurm.conf naming a controller
    on a local port, and a real munged (own key and socket) to sign it. The controller is a
    listener that records each request's bytes and answers nothing (so scontrol then fails,
    after sending)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(mode=0o755)
        subprocess.run(["mungekey", "-c", "-k", str(folder / "key")], check=True)
        self.munged = subprocess.Popen(
            ["munged", "-F", "-f", f"--socket={folder / 'sock'}", f"--key-file={folder / 'key'}",
             f"--log-file={folder / 'log'}", f"--pid-file={folder / 'pid'}",
             f"--seed-file={folder / 'seed'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.conf = folder / "slurm.conf"
        self.conf.write_text(
            "ClusterName=test\nSlurmctldHost=localhost(127.0.0.1)\n"
            f"SlurmctldPort={self.listener.getsockname()[1]}\nAuthType=auth/munge\n"
            f"AuthInfo=socket={folder / 'sock'}\n"
            "NodeName=gpu-7 CPUs=1 State=UNKNOWN\nPartitionName=p Nodes=gpu-7 Default=YES\n"
        )
        self.requests: List[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()
        deadline = time.monotonic() + 10
        while not (folder / "sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            client.settimeout(1.0)
            data = b""
            with contextlib.suppress(OSError):
                while chunk := client.recv(65536):
                    data += chunk
            self.requests.append(data)  # before the close that ends scontrol's wait
            client.close()

    def close(self) -> None:
        self.listener.close()
        self.munged.terminate()
        self.munged.wait(10)
