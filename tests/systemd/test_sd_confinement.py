"""The unit's confinement (CONTRACT §6, docs/systemd.md "Hardening"): every setting it takes
is in the documentation's table with why hooks can live with it, none gives the service a
mount namespace, an IP address list or a private network, `systemd-analyze security` rates
it at most 6.0, and the documented drop-in gives back exactly what its comments say. The
real score, asked of the running unit with systemd as PID 1, is in tests/boot/."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Set

import pytest
from test_sd_unit import UNIT, directives

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "systemd.md"

# Each needs a mount namespace of the service's own, or cuts the network or the host's /tmp:
# a hook's mount, volume or file would no longer be the host's (docs/systemd.md).
FORBIDDEN = ("ProtectSystem", "ProtectHome", "ReadOnlyPaths", "ReadWritePaths",
             "InaccessiblePaths", "PrivateTmp", "PrivateMounts", "PrivateDevices",
             "PrivateNetwork", "PrivateUsers", "ProtectKernelTunables", "ProtectKernelModules",
             "ProtectKernelLogs", "ProtectControlGroups", "ProtectHostname", "ProtectProc",
             "ProcSubset", "ProtectClock", "DeviceAllow", "DevicePolicy", "IPAddressDeny",
             "IPAddressAllow", "RootDirectory", "RootImage", "User", "DynamicUser",
             "MemoryDenyWriteExecute", "UMask")  # fmt: skip
HARDENING = ("NoNewPrivileges", "LockPersonality", "RestrictRealtime", "RestrictSUIDSGID",
             "RestrictNamespaces", "RestrictAddressFamilies", "SystemCallArchitectures",
             "SystemCallFilter", "SystemCallErrorNumber", "CapabilityBoundingSet")  # fmt: skip


def _documented_section() -> str:
    text = DOC.read_text()
    return text[text.index("## Hardening") : text.index("## Readiness")]


def test_every_setting_taken_is_documented_with_its_value() -> None:
    unit = directives(UNIT.read_text())
    taken = {key: values for key, values in unit.items() if key in HARDENING}
    assert set(taken) == set(HARDENING)
    doc = _documented_section()
    for key, values in taken.items():
        for value in values:
            # the table shows each setting as `Key=value`; a long capability list is split
            # across two rows, so every capability name must be there
            if key == "CapabilityBoundingSet":
                for capability in value.lstrip("~").split():
                    assert re.search(rf"\b{capability}\b", doc), capability
            else:
                assert f"`{key}={value}`" in doc, f"{key}={value}"


def test_nothing_gives_the_service_a_namespace_or_cuts_it_off() -> None:
    unit = directives(UNIT.read_text())
    assert [key for key in FORBIDDEN if key in unit] == []
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]
    # what the daemon itself needs stays: setuid for `user:` hooks, kill, file ownership
    bounding = set(unit["CapabilityBoundingSet"][0].lstrip("~").split())
    assert not bounding & {"CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN",
                           "CAP_DAC_OVERRIDE", "CAP_SYS_ADMIN", "CAP_AUDIT_WRITE"}  # fmt: skip


def _offline_security(folder: Path) -> List[str]:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(folder / UNIT.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0 and "offline" in done.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def _score(lines: List[str]) -> float:
    found = re.search(r"exposure level for \S+: ([0-9.]+)", "\n".join(lines))
    assert found, lines[-3:]
    return float(found.group(1))


def _exposed(lines: List[str]) -> Set[str]:
    return {line.split()[1] for line in lines if line.startswith("✗")}


def _unit_copy(folder: Path, drop_in: str = "") -> Path:
    folder.mkdir()
    text = UNIT.read_text().replace("=/usr/bin/spotwatch ", "=/bin/true ")
    (folder / UNIT.name).write_text(text)
    if drop_in:
        (folder / f"{UNIT.name}.d").mkdir()
        (folder / f"{UNIT.name}.d" / "hooks.conf").write_text(drop_in)
    return folder


needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze missing"
)


@needs_analyze
def test_the_unit_file_is_rated_at_most_6(tmp_path: Path) -> None:
    assert _score(_offline_security(_unit_copy(tmp_path / "unit"))) <= 6.0


def _documented_drop_in() -> str:
    block = re.search(r"```ini\n(# /etc/systemd/system/spotwatch.service.d/hooks.conf.*?)```",
                      _documented_section(), re.S)  # fmt: skip
    assert block, "docs/systemd.md lost its drop-in example"
    return block.group(1)


@needs_analyze
def test_the_documented_drop_in_relaxes_only_what_it_says(tmp_path: Path) -> None:
    """Each line of the documented drop-in, applied to the unit, gives back what its comment
    names and leaves every other setting as it was."""
    before = _exposed(_offline_security(_unit_copy(tmp_path / "unit")))
    after = _exposed(_offline_security(_unit_copy(tmp_path / "relaxed", _documented_drop_in())))
    given_back: Dict[str, str] = {
        "RestrictNamespaces=~user": "RestrictNamespaces=no",
        "RestrictNamespaces=~mnt": "RestrictNamespaces=no",
        "RestrictAddressFamilies=~AF_PACKET": "AF_PACKET",
        "RestrictAddressFamilies=~…": "AF_VSOCK",
        "NoNewPrivileges=": "NoNewPrivileges=no",
        "RestrictSUIDSGID=": "RestrictSUIDSGID=no",
        "SystemCallFilter=~@debug": "@debug",
        "CapabilityBoundingSet=~CAP_SYS_PTRACE": "CAP_SYS_PTRACE",
        "CapabilityBoundingSet=~CAP_NET_ADMIN": "CAP_NET_ADMIN",
    }
    assert not before & set(given_back)
    assert set(given_back) <= after
    others = {
        item
        for item in after - before
        if not item.startswith("RestrictNamespaces=~")  # one setting, seven rows
    }
    assert others == set(given_back) - {"RestrictNamespaces=~user", "RestrictNamespaces=~mnt"}
