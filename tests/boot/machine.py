"""A minimal Debian bookworm machine booted with systemd as PID 1 (systemd-nspawn -b).

The base image (mmdebstrap minbase + systemd + the package's dependencies) is built once
from the mirror apt is already configured with and cached as a tarball outside the
repository (`$XDG_CACHE_HOME/spotwatch-boot/`); each run unpacks a fresh copy. The
container shares the host's network, so an IMDS simulator on the host's 127.0.0.1 is the
instance's IMDS. `machinectl` cannot reach it (no systemd manager on the host), so commands
run through `nsenter` into the container's PID 1.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import List, Optional, Sequence

SUITE = "bookworm"
# What an EC2 image has anyway, plus the .deb's dependencies and python3-jeepney (it
# recommends it: logind's delay lock), so installing the package with apt needs no download.
# python3-systemd is left out on purpose: the daemon must speak the notify and journal
# protocols itself.
INCLUDE = ["systemd", "systemd-sysv", "dbus", "python3", "python3-requests", "python3-yaml",
           "python3-boto3", "python3-jeepney", "util-linux"]  # fmt: skip
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def why_not() -> str:
    """Why this machine cannot boot the image, or "" when it can try."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn)"
    for tool in ("systemd-nspawn", "mmdebstrap", "nsenter", "dpkg-deb"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/test installs it with apt)"
    if not mirror():
        return "no Debian mirror in /etc/apt/sources.list*"
    return ""


def mirror() -> str:
    """The first Debian mirror apt is configured with (one-line or deb822 sources)."""
    files = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list")),
             *sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))]  # fmt: skip
    for name in files:
        try:
            text = Path(name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            found = re.match(r"^\s*(?:deb\s+(?:\[[^]]*\]\s+)?|URIs:\s*)(\S+)", line)
            if found and "security" not in found.group(1):
                return found.group(1)
    return ""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "spotwatch-boot"


def base_image() -> Path:
    """The cached base tarball, built when missing (about a minute)."""
    key = hashlib.sha256(" ".join([SUITE, *INCLUDE]).encode()).hexdigest()[:12]
    tarball = cache_dir() / f"{SUITE}-{key}.tar"
    if tarball.exists():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial.tar")
    subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(INCLUDE)}",
         SUITE, str(partial), mirror()],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    partial.rename(tarball)
    return tarball


def unpack(tarball: Path, root: Path) -> None:
    root.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(root), "-xf", str(tarball)], check=True, timeout=300)


def offline(root: Path, *command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """A command in the image, not booted: the image-build situation (no /run/systemd/system)."""
    return subprocess.run(
        ["systemd-nspawn", "--quiet", "--pipe", "--register=no", "--keep-unit", "-D", str(root),
         "--bind-ro=/etc/resolv.conf", "env", "-i", f"PATH={PATH}", "LANG=C.UTF-8",
         "DEBIAN_FRONTEND=noninteractive", *command],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


class Machine:
    """The image booted with systemd as PID 1."""

    def __init__(self, root: Path, log: Path, binds: Sequence[str] = ()) -> None:
        """`binds`: `HOST:MACHINE` paths bound into the machine (a host dockerd's socket)."""
        self.root = root
        self._log = open(log, "wb")  # noqa: SIM115 - closed in poweroff()
        self.process = subprocess.Popen(
            ["systemd-nspawn", "-b", "-D", str(root), "--register=no", "--keep-unit",
             "--link-journal=no", "--console=passive", *(f"--bind={b}" for b in binds)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.pid1: Optional[int] = None

    def _find_pid1(self) -> Optional[int]:
        for task in glob.glob(f"/proc/{self.process.pid}/task/*/children"):
            try:
                children = Path(task).read_text().split()
            except OSError:
                continue
            if children:
                return int(children[0])
        return None

    def wait_booted(self, timeout: float = 90.0) -> str:
        """'running' or 'degraded' once boot is over; "" when it never got there."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.process.poll() is None:
            self.pid1 = self.pid1 or self._find_pid1()
            if self.pid1:
                state = self.run("systemctl", "is-system-running").stdout.strip()
                if state in ("running", "degraded"):
                    return state
            time.sleep(0.2)
        return ""

    def run(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert self.pid1 is not None
        return subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", "-r", "-w", "--", "env", "-i",
             f"PATH={PATH}", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", *command],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def sh(self, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-c", script, timeout=timeout)

    def show(self, unit: str, *props: str) -> dict:  # type: ignore[type-arg]
        out = self.run("systemctl", "show", "-p", ",".join(props), unit).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def poweroff(self) -> None:
        try:
            if self.pid1 and self.process.poll() is None:
                self.run("systemctl", "poweroff", "--no-block", timeout=20)
                self.process.wait(60)
        except (subprocess.SubprocessError, OSError):
            pass
        finally:
            if self.process.poll() is None:
                if self.pid1:  # the container's PID 1 takes its whole PID namespace along
                    with contextlib.suppress(OSError):
                        os.kill(self.pid1, signal.SIGKILL)
                self.process.kill()
                self.process.wait()
            self._log.close()


def files_named(root: Path, needle: str, skip: List[str]) -> List[str]:
    """Every path under `root` whose name holds `needle`, outside the `skip` folders."""
    found = []
    for folder, dirs, names in os.walk(root):
        rel = "/" + os.path.relpath(folder, root).lstrip(".")
        dirs[:] = [d for d in dirs if os.path.join(rel, d).replace("//", "/") not in skip]
        found += [os.path.join(rel, n) for n in names + dirs if needle in n]
    return sorted(p.replace("//", "/") for p in found)
