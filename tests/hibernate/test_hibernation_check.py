"""`spotwatch check`'s hibernation preflight against the IMDS simulator: through the command
when it needs no host probes, else in process on a fake root with its own /proc files and a
systemctl stand-in (the product takes no setting for either: a test builds the `Probes`)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Dict

from hibsupport import NO_SYSTEMD, REPO, probes

from spotwatch.commands.check_hibernation import check_hibernation
from spotwatch.commands.settings import load_service_config


def check_command(hib) -> Dict[str, Any]:
    """`spotwatch check --json` as a child process, on this host."""
    done = subprocess.run(
        [sys.executable, "-m", "spotwatch", "check", "--json", "-c", str(hib.config_path)],
        env=hib.env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    doc: Dict[str, Any] = json.loads(done.stdout)
    doc["exit"] = done.returncode
    return doc


def check(hib, systemctl: str = NO_SYSTEMD) -> Dict[str, Dict[str, Any]]:
    """The hibernation checks by name, looking at the host through `hib.root`."""
    config = load_service_config(str(hib.config_path), env={})
    results = check_hibernation(config, probes(hib.root, systemctl))
    return {r.name: {"status": r.status, "detail": r.detail} for r in results}


def proc(hib, ram_kb: int, swap_kb: int, cmdline: str) -> None:
    folder = hib.root / "proc"
    folder.mkdir(exist_ok=True)
    (folder / "meminfo").write_text(f"MemTotal: {ram_kb} kB\nMemFree: 1000 kB\n")
    swaps = "Filename\tType\tSize\tUsed\tPriority\n"
    if swap_kb:
        swaps += f"/swap\tfile\t{swap_kb}\t0\t-2\n"
    (folder / "swaps").write_text(swaps)
    (folder / "cmdline").write_text(cmdline + "\n")


def test_not_in_use_is_one_ok_line(hib):
    hib.config([])
    doc = check_command(hib)
    hibernation = [c for c in doc["checks"] if c["name"].startswith("hibernation")]
    assert [(c["name"], c["status"]) for c in hibernation] == [("hibernation", "ok")]


def test_a_ready_instance(hib):
    hib.imds.set_hibernation_configured(True)
    proc(hib, 8 * 1024 * 1024, 9 * 1024 * 1024, "BOOT_IMAGE=/vmlinuz root=/dev/x resume=/dev/y")
    hib.install_agent("usr/bin/hibinit-agent")
    hib.install_agent("usr/sbin/acpid")
    hib.install_agent("etc/acpi/actions/sleep.sh")
    stand_in = hib.dir / "systemctl"
    stand_in.write_text("#!/bin/sh\necho enabled\n")
    stand_in.chmod(0o755)
    hib.config([])  # relevant because IMDS says hibernation is configured
    statuses = {name: c["status"] for name, c in check(hib, str(stand_in)).items()}
    assert statuses == {
        "hibernation:configured": "ok",
        "hibernation:ram": "ok",
        "hibernation:swap": "ok",
        "hibernation:resume": "ok",
        "hibernation:agent": "ok",
        "hibernation:acpid": "ok",
    }


def test_an_unready_instance_says_why(hib):
    hib.imds.set_hibernation_configured(False)
    proc(hib, 200 * 1024 * 1024, 1024 * 1024, "root=/dev/x")
    hib.config(
        [{"name": "save", "command": "true", "actions": ["hibernate"]}], ecs={"enabled": True}
    )
    by = check(hib)
    assert by["hibernation:configured"]["status"] == "warning"
    assert by["hibernation:ram"]["status"] == "error"
    assert "150 GB" in by["hibernation:ram"]["detail"]
    assert by["hibernation:swap"]["status"] == "error"
    assert by["hibernation:resume"]["status"] == "warning"
    assert by["hibernation:agent"]["status"] == "warning"
    assert by["hibernation:acpid"]["status"] == "warning"
    assert by["hibernation:ecs"]["status"] == "warning"
