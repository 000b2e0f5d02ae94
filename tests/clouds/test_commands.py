"""The commands on the other clouds: `check` says which cloud and why, `cloud: auto` reads
the firmware the process sees, `simulate-imds --cloud` and `rehearse --cloud`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import requests
from clouds_support import config_for, env_hook, runs
from testkit import REPO, child_env

from spotwatch.clouds.gcp.simulator import PREEMPTED, PREFIX, GcpMetadataSimulator
from spotwatch.exits import EX_CONFIG


def spotwatch(
    *args: str,
    env: Optional[Dict[str, str]] = None,
    timeout: float = 60,
    firmware: Optional[Dict[str, str]] = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m spotwatch ARGS`; with `firmware`, in a world whose DMI strings are those."""
    command = [sys.executable, "-m", "spotwatch", *args]
    return subprocess.run(
        in_firmware(firmware, *command) if firmware is not None else command,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO),
        check=False,
    )


def checks(stdout: str) -> Dict[str, List[Dict[str, str]]]:
    found: Dict[str, List[Dict[str, str]]] = {}
    for check in json.loads(stdout)["checks"]:
        found.setdefault(check["name"], []).append(check)
    return found


def test_check_on_gcp_says_which_cloud_and_reports_aws_only_parts(
    gcp: GcpMetadataSimulator, workdir: Path
) -> None:
    """`check` on a config naming gcp, with ECS and an instance action configured: the cloud
    and why, one warning per AWS-only part (never an error: exit 0), the VM's id from the
    metadata server, and no ECS or instance-action preflight (they would ask AWS)."""
    config = config_for(
        workdir,
        "gcp",
        gcp.endpoint,
        ecs={"enabled": True},
        instance={"after_response": "stop"},
    )
    done = spotwatch("check", "--json", "-c", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    found = checks(done.stdout)
    assert found["cloud"][0]["detail"] == "gcp (Google Cloud): configured (cloud: gcp)"
    notes = [c["detail"] for c in found["cloud:aws-only"]]
    assert notes == [
        "ecs.enabled: true: ECS is AWS-only; off on gcp",
        "instance.after_response: stop: the EC2 instance action is AWS-only; off on gcp",
    ]
    assert all(c["status"] == "warning" for c in found["cloud:aws-only"])
    assert found["imds"][0]["status"] == "ok" and gcp.instance_id in found["imds"][0]["detail"]
    assert found["clock"][0]["status"] == "ok"
    assert not any(name.startswith(("ecs", "instance")) for name in found)


def in_firmware(fields: Dict[str, str], *command: str) -> List[str]:
    """`command` run in a mount namespace of its own whose /sys/class/dmi/id holds `fields`:
    the world the process sees, changed the way a VM on that cloud shows it."""
    files = " && ".join(f"printf '%s\\n' '{v}' > /sys/class/dmi/id/{k}" for k, v in fields.items())
    script = f'mount -t tmpfs none /sys/class && mkdir -p /sys/class/dmi/id && {files} && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *command]


def can_change_the_firmware_view() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        in_firmware({"sys_vendor": "x"}, "true"), capture_output=True, check=False
    )
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(
    not can_change_the_firmware_view(), reason="no mount namespace here (needs root and unshare)"
)


@needs_namespaces
def test_cloud_auto_reads_the_firmware_the_process_sees(
    gcp: GcpMetadataSimulator, workdir: Path
) -> None:
    """No `cloud:` in the config; the process sees Google's DMI strings in
    /sys/class/dmi/id, and GCE_METADATA_HOST names the metadata server. `check` says gcp and
    why; `run --once` handles the preemption there with SPOTWATCH_CLOUD=gcp."""
    out = workdir / "env.jsonl"
    config = config_for(workdir, "gcp", gcp.endpoint, hooks=[env_hook("h", out, ["terminate"])])
    text = config.read_text().replace("cloud: gcp\n", "")
    config.write_text(text)
    google = {"sys_vendor": "Google", "product_name": "Google Compute Engine"}
    env = {"GCE_METADATA_HOST": gcp.endpoint.replace("http://", "")}
    done = spotwatch("check", "--json", "-c", str(config), env=env, firmware=google)
    assert done.returncode == 0, done.stdout + done.stderr
    detail = checks(done.stdout)["cloud"][0]["detail"]
    assert detail == (
        "gcp (Google Cloud): auto: /sys/class/dmi/id/product_name is 'Google Compute Engine'"
    )
    gcp.preempt()
    once = spotwatch("run", "--once", "-c", str(config), env=env, firmware=google)
    assert once.returncode == 0, once.stderr
    (seen,) = runs(out)
    assert seen["SPOTWATCH_CLOUD"] == "gcp" and seen["SPOTWATCH_SOURCE"] == "gcp-preempted"


def simulator(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "spotwatch", "simulate-imds", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=str(REPO),
    )


def test_simulate_imds_plays_google_and_azure() -> None:
    """`simulate-imds --cloud gcp --action terminate` preempts the VM after --delay;
    `--cloud azure --scheduled-event Reboot --lead 900` lists a Reboot 15 minutes ahead. Each
    prints its endpoint first and keeps its service's header rules."""
    gcp = simulator("--cloud", "gcp", "--action", "terminate", "--delay", "0.3")
    azure = simulator("--cloud", "azure", "--scheduled-event", "Reboot", "--lead", "900")
    try:
        assert gcp.stdout is not None and azure.stdout is not None
        google = gcp.stdout.readline().strip()
        microsoft = azure.stdout.readline().strip()
        url = google + PREFIX + PREEMPTED
        assert requests.get(url, timeout=5).status_code == 403  # no Metadata-Flavor
        headers = {"Metadata-Flavor": "Google"}
        assert requests.get(url, headers=headers, timeout=5).text == "FALSE"
        time.sleep(0.6)
        assert requests.get(url, headers=headers, timeout=5).text == "TRUE"
        events = requests.get(
            microsoft + "/metadata/scheduledevents?api-version=2020-07-01",
            headers={"Metadata": "true"},
            timeout=5,
        ).json()["Events"]
        assert [e["EventType"] for e in events] == ["Reboot"]
    finally:
        for process in (gcp, azure):
            process.terminate()
            assert process.wait(10) == 0


def test_simulate_imds_refuses_what_a_cloud_has_not() -> None:
    """IMDS-only options on another cloud, or an event type it does not list: exit 78 and
    one line saying why, before anything is served."""
    for args in (
        ("--cloud", "gcp", "--asg-state", "Terminated"),
        ("--cloud", "azure", "--scheduled-event", "instance-stop"),
    ):
        done = spotwatch("simulate-imds", *args, timeout=30)
        assert done.returncode == EX_CONFIG and done.stdout == "", args
        assert done.stderr.startswith("simulate-imds: "), done.stderr


@pytest.mark.parametrize(
    ("cloud", "action", "source"),
    [("gcp", "terminate", "rehearsal"), ("azure", "reboot", "rehearsal")],
)
def test_rehearse_on_another_cloud(cloud: str, action: str, source: str, tmp_path: Path) -> None:
    """`rehearse --cloud gcp|azure` runs the real daemon against that cloud's simulator with
    the built-in demo config: the demo hook shows SPOTWATCH_CLOUD, and the rehearsal ends
    well."""
    done = spotwatch(
        "rehearse", "--cloud", cloud, "--action", action, env={"HOME": str(tmp_path)}, timeout=90
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SPOTWATCH_CLOUD={cloud}" in done.stdout
    assert f"SPOTWATCH_SOURCE={source}" in done.stdout
    assert "rehearsal ok" in done.stdout


def test_rehearse_refuses_a_signal_the_cloud_has_not() -> None:
    """Google has no Auto Scaling group: `rehearse --cloud gcp --action asg-terminate` exits
    78 and says what it rehearses instead."""
    done = spotwatch("rehearse", "--cloud", "gcp", "--action", "asg-terminate")
    assert done.returncode == EX_CONFIG
    assert "gcp rehearses terminate, stop, maintenance" in done.stderr
