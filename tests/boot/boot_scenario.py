"""What an operator does with the package on a real machine, step by step; run by
test_boot.py, which asserts on the facts gathered here (one boot serves every test).

The .deb is installed with apt into the image before it boots (an AMI build: enabled, not
started), then the image boots with systemd as PID 1 and IMDS is a simulator on the host's
127.0.0.1 (the container shares the network). The only change to the shipped unit is a
drop-in with WatchdogSec=5s and RestartSec=1s, so a frozen daemon is caught in seconds.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List

import yaml
from machine import Machine, base_image, files_named, offline, unpack
from preset_scenario import install as install_preset_units
from preset_scenario import presets_scenario
from world import Endpoint, dockerd

from spotwatch.simulator.imds import ImdsSimulator, format_time

REPO = Path(__file__).resolve().parents[2]
UNIT = "spotwatch.service"
HOOK = """#!/bin/sh
env | grep '^SPOTWATCH_' | sort > "/var/tmp/hook-$SPOTWATCH_ACTION.env"
echo "start $SPOTWATCH_ACTION" >> /var/tmp/hook.log
sleep "$(cat /var/tmp/hook-sleep 2>/dev/null || echo 0)"
echo "end $SPOTWATCH_ACTION" >> /var/tmp/hook.log
"""
DROP_IN = "[Service]\nWatchdogSec=5s\nRestartSec=1s\n"
# Longer than logind's own InhibitDelayMaxSec (5 s): only the package's drop-in lets the
# delay lock hold the shutdown back that long.
SHUTDOWN_HOOK_SECONDS = 8
# Left behind by design or not ours: the test's own files, kernel and runtime trees, and the
# metrics textfile (a path the operator chose; a stale one is what the alerts look for).
NOT_OURS = ["/proc", "/sys", "/dev", "/run", "/var/tmp", "/tmp", "/root/debs",
            "/etc/systemd/system/spotwatch.service.d", "/var/lib/prometheus"]  # fmt: skip
TEXTFILE = "/var/lib/prometheus/node-exporter/spotwatch.prom"  # Debian's textfile folder
# What CONTRACT §6 promises hooks of the confined unit, one hook each (run at the terminate
# notice, inside the unit like every hook): `promise ARGS`.
PROMISE = """#!/bin/sh
set -eu
case "$1" in
  write) mkdir -p "$2/hook-proof" && echo "$SPOTWATCH_ACTION" > "$2/hook-proof/proof" ;;
  network) python3 -c 'import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=5)' "$2" ;;
  systemctl) systemctl start hook-probe.service && systemctl is-active hook-probe.service ;;
  docker) docker version --format '{{.Server.Version}}' && docker ps --quiet ;;
  kubectl) kubectl --server "$2" version ;;
  user) id -un > /tmp/hook-proof-user ;;
  logind) busctl call org.freedesktop.login1 /org/freedesktop/login1 \\
            org.freedesktop.login1.Manager Inhibit ssss shutdown hook-proof boot-test delay ;;
esac
"""
PROBE_UNIT = "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"
WRITABLE = ("/var", "/srv", "/home", "/opt", "/tmp")  # /tmp: the one the whole system sees


def promises(world: str) -> Dict[str, List[str]]:
    """hook name -> the promise script's arguments."""
    hooks = {f"promise-write{folder.replace('/', '-')}": ["write", folder] for folder in WRITABLE}
    hooks.update({
        "promise-network": ["network", f"{world}/network"],
        "promise-systemctl": ["systemctl"],
        "promise-docker": ["docker"],
        "promise-kubectl": ["kubectl", world],
        "promise-logind": ["logind"],
        "promise-user": ["user"],  # run with `user: nobody`: the daemon drops to another user
    })  # fmt: skip
    return hooks


def wait(predicate: Callable[[], Any], timeout: float) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > end:
            return value
        time.sleep(0.1)


def build_debs(work: Path) -> Dict[str, Path]:
    """This checkout's .deb, and one a version later (for the upgrade)."""
    out = {}
    newer = work / "newer-src"
    for name in ("spotwatch", "packaging", "systemd", "docs", "monitoring"):
        shutil.copytree(REPO / name, newer / name, ignore=shutil.ignore_patterns("__pycache__"))
    init = newer / "spotwatch" / "__init__.py"
    text = init.read_text()
    version = text.split('__version__ = "', 1)[1].split('"', 1)[0]
    init.write_text(text.replace(f'"{version}"', f'"{version}.1"'))
    for key, source in (("current", REPO), ("newer", newer)):
        done = subprocess.run(
            [str(source / "packaging" / "build"), str(work / key)],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        out[key] = Path(done.stdout.splitlines()[0])
    out["version"] = Path(version)
    return out


def kept_promises(machine: Machine) -> Dict[str, Any]:
    """After the terminate response: each promise hook's step, what the rest of the system
    (PID 1's mount namespace, not the unit's) sees of its files, and the unit's settings."""
    status = json.loads(machine.run("spotwatch", "status", "--json").stdout or "{}")
    steps = {s["name"]: s for s in status.get("steps", [])}
    hooks = {}
    for name in promises(""):
        output = machine.run("journalctl", "-u", UNIT, f"SPOTWATCH_HOOK={name}", "-o", "cat",
                             "--no-pager").stdout  # fmt: skip
        hooks[name] = {**steps.get(f"hook:{name}", {"status": "missing"}), "log": output[-1500:]}
    return {
        "hooks": hooks,
        "files": {d: machine.run("cat", f"{d}/hook-proof/proof").stdout for d in WRITABLE},
        "probe_unit": machine.run("systemctl", "is-active", "hook-probe.service").stdout.strip(),
        "user": machine.run("cat", "/tmp/hook-proof-user").stdout,
        "settings": machine.show(UNIT, "IPAddressDeny", "IPAddressAllow", "PrivateNetwork",
                                 "PrivateTmp", "ProtectSystem", "ProtectHome"),
    }  # fmt: skip


def exposure(machine: Machine) -> Dict[str, Any]:
    """`systemd-analyze security` of the running unit, as an operator would ask it."""
    done = machine.run("systemd-analyze", "security", "--no-pager", UNIT)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", done.stdout)
    return {
        "rc": done.returncode,
        "score": float(found.group(1)) if found else None,
        "rating": found.group(2) if found else "",
        "table": done.stdout + done.stderr,
    }


def config(port: int, world: str, **changes: Any) -> str:
    doc: Dict[str, Any] = {
        "poll_interval": "1s",
        "deadline_margin": "1s",
        "imds": {"endpoint": f"http://127.0.0.1:{port}", "timeout": "500ms", "user_data": False},
        "ecs": {"enabled": False},
        "hibernate": {"trigger": "none"},
        "metrics": {"textfile": TEXTFILE},
        "hooks": [
            {"name": "checkpoint", "command": ["/usr/local/bin/checkpoint"],
             "actions": ["terminate", "stop"], "timeout": "30s"},
            {"name": "before-sleep", "command": ["/usr/local/bin/checkpoint"],
             "actions": ["hibernate"], "timeout": "5s"},
            *({"name": name, "command": ["/usr/local/bin/promise", *args],
               "actions": ["terminate"], "timeout": "30s",
               **({"user": "nobody"} if args == ["user"] else {})}
              for name, args in promises(world).items()),
        ],
    }  # fmt: skip
    doc.update(changes)
    return yaml.safe_dump(doc)


def main(work: Path) -> Dict[str, Any]:
    facts: Dict[str, Any] = {"timings": {}}
    timings = facts["timings"]
    began = time.monotonic()
    image = base_image()
    timings["image_ready"] = time.monotonic() - began
    debs = build_debs(work)
    root = work / "root"
    began = time.monotonic()
    unpack(image, root)
    timings["unpack"] = time.monotonic() - began

    # --- an image build: apt installs the package; nothing may start ---------------------
    # (not /tmp: nspawn mounts a fresh tmpfs there)
    debs_dir = root / "root" / "debs"
    debs_dir.mkdir()
    shutil.copy(debs["current"], debs_dir / "spotwatch.deb")
    shutil.copy(debs["newer"], debs_dir / "spotwatch-newer.deb")
    installed = offline(root, "apt-get", "install", "-y", "-q", "/root/debs/spotwatch.deb")
    facts["image_install"] = {
        "rc": installed.returncode,
        "output": (installed.stdout + installed.stderr)[-3000:],
        "enabled": offline(root, "systemctl", "is-enabled", UNIT).stdout.strip(),
        "state_files": sorted(p.name for p in (root / "var/lib/spotwatch").iterdir()),
        "monitoring_kit": sorted(str(p.relative_to(root)) for p in
                                 (root / "usr/share/spotwatch").glob("*/spotwatch*.*")),
    }  # fmt: skip

    # What hooks run and reach, besides the package: the host's docker and kubectl clients,
    # a unit for `systemctl start`, the textfile folder node_exporter's package would make.
    local_bin = root / "usr" / "local" / "bin"
    for tool in ("docker", "kubectl"):
        found = shutil.which(tool)
        if found:
            shutil.copy(found, local_bin / tool)
    (root / "etc" / "systemd" / "system" / "hook-probe.service").write_text(PROBE_UNIT)
    (root / TEXTFILE.lstrip("/")).parent.mkdir(parents=True)

    endpoint = Endpoint()
    with ImdsSimulator() as imds, dockerd(work / "dockerd") as docker_socket:
        facts["world"] = {"endpoint": endpoint.url, "dockerd": docker_socket is not None,
                          "tools": sorted(p.name for p in local_bin.iterdir())}  # fmt: skip
        etc = root / "etc" / "spotwatch"

        def configure(**changes: Any) -> None:
            (etc / "config.yaml").write_text(config(imds.port, endpoint.url, **changes))

        configure()
        for name, text in (("checkpoint", HOOK), ("promise", PROMISE)):
            (local_bin / name).write_text(text)
            (local_bin / name).chmod(0o755)
        install_preset_units(root)
        drop_in = root / "etc" / "systemd" / "system" / f"{UNIT}.d"
        drop_in.mkdir(parents=True)
        (drop_in / "boot-test.conf").write_text(DROP_IN)

        binds = [f"{docker_socket}:/run/docker.sock"] if docker_socket else []
        machine = Machine(root, work / "console.log", binds)
        try:
            scenario(machine, imds, root, configure, facts)
            facts["world"]["requests"] = list(endpoint.paths)
        finally:
            machine.poweroff()
            endpoint.close()
            facts["console"] = (work / "console.log").read_text(errors="replace")[-4000:]
    return facts


def scenario(
    machine: Machine,
    imds: ImdsSimulator,
    root: Path,
    configure: Callable[..., None],
    facts: Dict[str, Any],
) -> None:
    timings = facts["timings"]
    etc = root / "etc" / "spotwatch"
    hook_log = root / "var" / "tmp" / "hook.log"

    def show() -> Dict[str, str]:
        return machine.show(UNIT, "ActiveState", "SubState", "StatusText", "MainPID",
                            "NRestarts", "Result")  # fmt: skip

    def starts() -> int:
        text = hook_log.read_text() if hook_log.exists() else ""
        return text.count("start ")

    def main_pid() -> str:
        return show().get("MainPID", "0")

    # --- boot: active with a true status -------------------------------------------------
    began = time.monotonic()
    facts["boot"] = {"system": machine.wait_booted()}
    if not facts["boot"]["system"]:
        facts["boot"]["failed"] = True
        return
    wait(lambda: show().get("ActiveState") == "active", 60)
    timings["boot_to_active"] = time.monotonic() - began
    facts["boot"]["show"] = show()
    facts["security"] = exposure(machine)

    # --- reload: good config in force when reload returns; bad config fails it ----------
    configure(poll_interval="2s")
    good = machine.run("systemctl", "reload", UNIT)
    facts["reload_good"] = {"rc": good.returncode, "stderr": good.stderr, "show": show()}
    pid = main_pid()
    configure(poll_interval="soon")
    bad = machine.run("systemctl", "reload", UNIT)
    facts["reload_bad"] = {
        "rc": bad.returncode,
        "stderr": bad.stderr,
        "show": show(),
        "same_pid": main_pid() == pid,
        "log": machine.run("journalctl", "-u", UNIT, "--no-pager", "-n", "30").stdout,
    }
    configure()
    facts["reload_back"] = machine.run("systemctl", "reload", UNIT).returncode

    # --- a notice: the hook runs once, with the right environment -------------------------
    notice_time = format_time(datetime.now(timezone.utc) + timedelta(seconds=90))
    began = time.monotonic()
    imds.set_instance_action("terminate", notice_time)
    wait(lambda: starts() == 1, 30)
    timings["notice_to_hook"] = time.monotonic() - began
    wait(lambda: "response done" in show().get("StatusText", ""), 30)
    env_file = root / "var" / "tmp" / "hook-terminate.env"
    facts["notice"] = {
        "time": notice_time,
        "env": env_file.read_text() if env_file.exists() else "",
        "status_after": show().get("StatusText", ""),
        "journal": machine.run(
            "journalctl", "-u", UNIT, "SPOTWATCH_EVENT=notice", "-o", "json", "--no-pager"
        ).stdout,
    }
    facts["promises"] = kept_promises(machine)
    facts["textfile"] = machine.run("cat", TEXTFILE).stdout

    # --- kill -9: restarted, the finished hook is not run again --------------------------
    pid = main_pid()
    began = time.monotonic()
    machine.sh(f"kill -9 {pid}")
    wait(lambda: main_pid() not in ("0", pid) and show()["ActiveState"] == "active", 30)
    timings["kill_to_active"] = time.monotonic() - began
    time.sleep(3)  # a few polls that still see the notice
    facts["kill"] = {"show": show(), "hook_starts": starts(), "old_pid": pid}

    # --- a frozen daemon: the watchdog restarts it -------------------------------------
    pid = main_pid()
    restarts = int(show().get("NRestarts", "0"))
    began = time.monotonic()
    machine.sh(f"kill -STOP {pid}")
    seen = set()

    def restarted() -> bool:
        now = show()
        seen.add(now.get("Result", ""))
        return now.get("MainPID") not in ("0", pid) and now.get("ActiveState") == "active"

    wait(restarted, 30)
    timings["freeze_to_active"] = time.monotonic() - began
    facts["watchdog"] = {"show": show(), "restarts_before": restarts, "results": sorted(seen),
                         "hook_starts": starts()}  # fmt: skip

    # --- status by someone other than root ----------------------------------------------
    nobody = machine.run("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                         "spotwatch", "status")  # fmt: skip
    root_status = machine.run("spotwatch", "status", "--json")
    facts["status"] = {
        "nobody_rc": nobody.returncode,
        "nobody_err": nobody.stderr,
        "root_rc": root_status.returncode,
        "root_out": root_status.stdout,
    }

    presets_scenario(machine, imds, root, facts, configure=configure, wait=wait)

    # --- stop during a hook: stop returns once the hook has finished ---------------------
    (root / "var" / "tmp" / "hook-sleep").write_text("4\n")
    imds.set_instance_action("stop", notice_time)  # a new action: a new notice
    wait(lambda: "start stop" in (hook_log.read_text() if hook_log.exists() else ""), 30)
    began = time.monotonic()
    stopped = machine.run("systemctl", "stop", UNIT)
    facts["stop"] = {"rc": stopped.returncode, "seconds": time.monotonic() - began,
                     "hook_log": hook_log.read_text(), "show": show()}  # fmt: skip
    imds.clear_instance_action()
    (root / "var" / "tmp" / "hook-sleep").write_text("0\n")

    # --- the systemd-sleep hook runs the hibernate hooks --------------------------------
    sleep = machine.run("/usr/lib/systemd/system-sleep/spotwatch", "pre", "hibernate")
    hibernate_env = root / "var" / "tmp" / "hook-hibernate.env"
    facts["sleep_hook"] = {
        "rc": sleep.returncode,
        "env": hibernate_env.read_text() if hibernate_env.exists() else "",
    }

    # --- remove, purge, reinstall, upgrade: nothing left behind -------------------------
    machine.run("systemctl", "start", UNIT)
    removed = machine.run("dpkg", "-r", "spotwatch")
    facts["remove"] = {
        "rc": removed.returncode,
        "active": machine.run("systemctl", "is-active", UNIT).stdout.strip(),
        "left": files_named(root, "spotwatch", NOT_OURS),
    }
    purged = machine.run("dpkg", "-P", "spotwatch")
    facts["purge"] = {"rc": purged.returncode, "left": files_named(root, "spotwatch", NOT_OURS)}
    again = machine.run("apt-get", "install", "-y", "-q", "/root/debs/spotwatch.deb")
    facts["reinstall"] = {
        "rc": again.returncode,
        "active": machine.run("systemctl", "is-active", UNIT).stdout.strip(),
    }
    configure()  # an operator's change: kept
    pid = main_pid()
    upgraded = machine.run("apt-get", "install", "-y", "-q", "/root/debs/spotwatch-newer.deb")
    wait(lambda: machine.run("systemctl", "is-active", UNIT).stdout.strip() == "active", 30)
    facts["upgrade"] = {
        "rc": upgraded.returncode,
        "output": (upgraded.stdout + upgraded.stderr)[-2000:],
        "active": machine.run("systemctl", "is-active", UNIT).stdout.strip(),
        "restarted": main_pid() not in ("0", pid),
        "version": machine.run("spotwatch", "--version").stdout.strip(),
        "config_kept": "poll_interval: 1s" in (etc / "config.yaml").read_text(),
    }
    machine.run("dpkg", "-P", "spotwatch")
    facts["final_purge_left"] = files_named(root, "spotwatch", NOT_OURS)
    facts["hook_starts_total"] = starts()
    shutdown(machine, root, configure, facts)


def delay_max(machine: Machine) -> str:
    """logind's InhibitDelayMaxUSec as busctl says it ("t 5000000")."""
    return machine.run(
        "busctl", "get-property", "org.freedesktop.login1", "/org/freedesktop/login1",
        "org.freedesktop.login1.Manager", "InhibitDelayMaxUSec",
    ).stdout.strip()  # fmt: skip


def shutdown(
    machine: Machine, root: Path, configure: Callable[..., None], facts: Dict[str, Any]
) -> None:
    """Last, since it ends the machine: the package installed on the running system (logind
    reads the drop-in on SIGHUP), then `systemctl poweroff` with no notice anywhere. The hook
    sleeps past logind's default InhibitDelayMaxSec (5 s); the state file, on disk after the
    machine is gone, tells whether the response ended before the daemon was stopped."""
    facts["shutdown"] = {"delay_removed": delay_max(machine)}
    installed = machine.run("apt-get", "install", "-y", "-q", "/root/debs/spotwatch.deb")
    configure(hooks=[{"name": "checkpoint", "command": ["/usr/local/bin/checkpoint"],
                      "actions": ["shutdown"], "timeout": "30s"}])  # fmt: skip
    machine.run("systemctl", "restart", UNIT)
    (root / "var" / "tmp" / "hook-sleep").write_text(f"{SHUTDOWN_HOOK_SECONDS}\n")
    (root / "var" / "tmp" / "hook.log").write_text("")
    held = wait(lambda: "spotwatch" in machine.run("systemd-inhibit", "--list").stdout, 30)
    facts["shutdown"].update(
        install_rc=installed.returncode,
        delay_installed=delay_max(machine),
        inhibitors=machine.run("systemd-inhibit", "--list", "--mode=delay").stdout if held else "",
        check=machine.run("spotwatch", "check", "--json").stdout,
    )
    began = time.monotonic()
    machine.run("systemctl", "poweroff", "--no-block", timeout=20)
    with contextlib.suppress(subprocess.TimeoutExpired):
        machine.process.wait(120)
    facts["timings"]["poweroff_to_gone"] = time.monotonic() - began
    state = root / "var" / "lib" / "spotwatch" / "state.json"
    env_file = root / "var" / "tmp" / "hook-shutdown.env"
    facts["shutdown"].update(
        gone=machine.process.poll() is not None,
        hook_log=(root / "var" / "tmp" / "hook.log").read_text(),
        env=env_file.read_text() if env_file.exists() else "",
        state=json.loads(state.read_text()) if state.exists() else {},
    )
    for record in facts["shutdown"]["state"].get("responses", {}).values():
        for step in record.get("steps", []) if record.get("tracker") == "shutdown" else []:
            if step.get("started") and step.get("ended"):  # the hook's own time, for the figures
                took = iso_seconds(step["ended"]) - iso_seconds(step["started"])
                facts["timings"]["shutdown_hook"] = took


def iso_seconds(text: str) -> float:
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.replace(tzinfo=timezone.utc).timestamp()
