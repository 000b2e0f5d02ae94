"""A real Docker daemon for tests and benchmarks: a `dockerd` of its own, an image made from
busybox-static, and containers that trap SIGTERM and write down that they got it.

    world = DockerWorld.start()      # in tests: the `dockerd` fixture (tests/conftest.py)
    world.run("web-1", labels={"app": "web"})
    ...                               # spotwatch stops it through world.host
    world.record("web-1")             # ["up", "TERM"]
    world.close()

dockerd runs as root with `--iptables=false --bridge=none` (no network is touched), its own
`--data-root`, `--exec-root`, `--pidfile` and socket under a temporary folder, and the vfs
storage driver (the image is 2 MB; vfs works wherever dockerd runs, overlay not inside every
container). No registry is reachable: the image is imported (`docker import`) from a tar of
busybox-static. Containers run with network `none` and the world's `records` folder mounted
at /rec. The daemon is stopped by its PID; other dockerds on the machine are left alone.
`DockerUnavailable` says why a daemon cannot be had here (not root, no dockerd, no static
busybox, no docker SDK, dockerd did not come up): tests skip with that reason.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional

from testkit import end_process

IMAGE = "spotwatch-test/sigterm:1"
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static puts it there
TOOLS = ("sh", "sleep", "echo", "cat", "date", "true")
# PID 1 of the container: the trap is set before "up" is written, so a test that saw "up"
# knows a SIGTERM will be seen. `sleep & wait` keeps the shell able to take the signal at
# once (a foreground sleep would hold it until it ends). LINGER: seconds between the
# SIGTERM and the exit (longer than the stop timeout: Docker SIGKILLs it first).
SCRIPT = (
    'trap \'echo TERM >> "/rec/$NAME"; sleep "$LINGER"; exit 0\' TERM; '
    'echo up >> "/rec/$NAME"; '
    "while :; do sleep 600 & wait $!; done"
)


class DockerUnavailable(Exception):
    """No Docker daemon can be started here; `str()` says why."""


def _static(binary: Path) -> bool:
    """True when `binary` asks for no dynamic loader (so it runs alone in a container)."""
    head = binary.read_bytes()[:8192]
    return head[:4] == b"\x7fELF" and b"ld-linux" not in head and b"ld-musl" not in head


def _rootfs_tar() -> bytes:
    """/bin/busybox and links to it for the tools the script uses, /rec, as a tar."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for folder in ("bin", "rec", "tmp"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755 if folder != "tmp" else 0o1777
            tar.addfile(info)
        tar.add(str(BUSYBOX), arcname="bin/busybox")
        for tool in TOOLS:
            info = tarfile.TarInfo(f"bin/{tool}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return data.getvalue()


class DockerWorld:
    """One dockerd and what it runs; `host` is its socket as DOCKER_HOST names it."""

    def __init__(self, root: Path, process: subprocess.Popen[bytes], api: Any) -> None:
        self.root = root
        self.process = process
        self.api = api  # docker.APIClient, for setting the world up (not what is tested)
        self.host = f"unix://{root / 'docker.sock'}"
        self.records = root / "records"
        self.records.mkdir()
        self.started_in = 0.0  # seconds from exec to the image imported

    @classmethod
    def start(cls, timeout: float = 60.0) -> DockerWorld:
        began = time.monotonic()
        dockerd = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/usr/bin")
        if os.geteuid() != 0:
            raise DockerUnavailable("dockerd needs root")
        if dockerd is None:
            raise DockerUnavailable("no dockerd (Debian: apt install docker.io)")
        if not BUSYBOX.exists() or not _static(BUSYBOX):
            raise DockerUnavailable(f"no static {BUSYBOX} (Debian: apt install busybox-static)")
        try:
            import docker
        except ImportError as failure:
            raise DockerUnavailable(f"no docker SDK ({failure})") from None
        # A socket path must fit in 108 bytes: a short folder of its own under /tmp.
        root = Path(tempfile.mkdtemp(prefix="dockerd-", dir="/tmp"))
        # containerd takes letters and digits joined by single . _ - (mkdtemp's random
        # part may hold "_" where that breaks the rule: "dockerd-_x", "x__y", "x_").
        tag = "".join(c for c in root.name if c.isalnum())
        log = open(root / "dockerd.log", "wb")  # noqa: SIM115 - the daemon writes it
        process = subprocess.Popen(
            [
                dockerd,
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bridge=none",
                "--storage-driver=vfs",
                f"--data-root={root / 'data'}",
                f"--exec-root={root / 'exec'}",
                f"--pidfile={root / 'dockerd.pid'}",
                f"--host=unix://{root / 'docker.sock'}",
                "--shutdown-timeout=2",
                # Where the machine runs a containerd of its own, dockerd uses it: a
                # namespace of our own keeps this daemon's containers apart there.
                f"--containerd-namespace=spotwatch-{tag}",
                f"--containerd-plugins-namespace=spotwatch-plugins-{tag}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        api = None
        end = time.monotonic() + timeout
        while api is None:
            if process.poll() is not None or time.monotonic() > end:
                tail = (root / "dockerd.log").read_text(errors="replace")[-600:]
                end_process(process)
                _remove(root)
                raise DockerUnavailable(f"dockerd did not come up: {tail.strip()}")
            try:
                api = docker.APIClient(base_url=f"unix://{root / 'docker.sock'}", timeout=10)
                api.ping()
            except Exception:  # not listening yet
                api = None
                time.sleep(0.1)
        world = cls(root, process, api)
        api.import_image_from_data(_rootfs_tar(), repository=IMAGE.split(":")[0], tag="1")
        world.started_in = time.monotonic() - began
        return world

    def run(
        self,
        name: str,
        *,
        labels: Optional[Dict[str, str]] = None,
        linger: float = 0.0,
        restart: Optional[str] = None,
    ) -> str:
        """Starts a container that records SIGTERM in `record(name)`; its id, once it runs
        with its trap set. `linger`: seconds it takes to exit after SIGTERM; `restart`:
        Docker's restart policy (always, unless-stopped, on-failure)."""
        host_config = self.api.create_host_config(
            binds={str(self.records): {"bind": "/rec", "mode": "rw"}},
            network_mode="none",
            restart_policy={"Name": restart} if restart else None,
        )
        created = self.api.create_container(
            IMAGE,
            command=["/bin/sh", "-c", SCRIPT],
            name=name,
            labels=labels or {},
            environment={"NAME": name, "LINGER": f"{linger:g}"},
            host_config=host_config,
        )
        container_id = str(created["Id"])
        self.api.start(container_id)
        end = time.monotonic() + 20
        while "up" not in self.record(name):
            if time.monotonic() > end:
                raise AssertionError(f"container {name} did not come up")
            time.sleep(0.02)
        return container_id

    def run_many(self, names: List[str], **options: Any) -> List[str]:
        """`run` for each name, all at once (a container takes ~0.5 s to start here)."""
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(lambda name: self.run(name, **options), names))

    def record(self, name: str) -> List[str]:
        """What the container wrote: "up" when its trap was set, "TERM" for each SIGTERM."""
        path = self.records / name
        return path.read_text().split() if path.exists() else []

    def state(self, container_id: str) -> Dict[str, Any]:
        """Docker's `State` of the container (Running, ExitCode, ...)."""
        found: Dict[str, Any] = self.api.inspect_container(container_id)["State"]
        return found

    def remove_all(self) -> None:
        """Kills and removes every container, and forgets what they recorded (between
        tests: names may then be used again)."""
        for item in self.api.containers(all=True):
            self.api.remove_container(item["Id"], force=True)
        for record in self.records.iterdir():
            record.unlink()

    def close(self) -> None:
        """Stops the daemon by its PID (SIGTERM, SIGKILL after 20 s) and removes its folder."""
        self.api.close()
        end_process(self.process)
        _remove(self.root)


def _remove(root: Path) -> None:
    """The folder, after unmounting what dockerd may have left mounted in it."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    inside = [line.split()[1] for line in mounts if line.split()[1].startswith(str(root))]
    for point in sorted(inside, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
