"""The driver: plays a sequence of world events against the REAL daemon and collects a
`Trace` (model_trace.py) for the model to judge.

The daemon is `python -m spotwatch run` in a child process with its own config and state
folder, under `unshare -m` with a file bind-mounted over /proc/sys/kernel/random/boot_id,
so that a "new boot" is a change of the world the process sees (no product switch).
IMDS is the simulator in this process (real HTTP on 127.0.0.1); AWS is moto's server
behind the recording endpoint (model_world.py); the ECS agent is the tests' stand-in;
hooks are real processes (recording_hook.py). The world's events are in `World.apply`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml
from awshelpers import REGION, FakeAgent
from contract_signals import Settings
from model_config import config_for
from model_host import Host
from model_runtime import RuntimeTasks
from model_trace import Announcement, Lifetime, StatusShot, Trace, WorldEvent
from model_world import AwsEndpoint, RecordingImds, build_fleet
from testkit import REPO, child_env

from spotwatch.simulator.imds import MAX_TOKEN_TTL

BOOT_ID = "/proc/sys/kernel/random/boot_id"
SETTLE_LIMIT = 45.0  # seconds the driver waits, at the end, for every response to end
SETTLE_AFTER = 5.5  # and at least this long after the last event
STOP_LIMIT = 90.0  # §4 Shutdown: the daemon exits within 90 s of SIGTERM


def can_change_boot() -> str:
    """Why a new boot cannot be played here ("" when it can): it needs root and unshare."""
    if os.geteuid() != 0:
        return "needs root (unshare -m and a bind mount over boot_id)"
    if shutil.which("unshare") is None:
        return "unshare is not installed (util-linux)"
    return ""


def write_config(config: Dict[str, Any], folder: Path) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def daemon_env(aws_url: str, folder: Path, **extra: str) -> Dict[str, str]:
    """The daemon's environment: test credentials, every AWS endpoint at `aws_url`."""
    env = child_env(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": aws_url,
            "AWS_CONFIG_FILE": str(folder / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(folder / "no-aws-credentials"),
            **extra,
        }
    )
    return {k: v for k, v in env.items() if not k.startswith("AWS_ENDPOINT_URL_")} | {
        "AWS_ENDPOINT_URL": aws_url
    }


class DaemonProcess:
    """The daemon, one process at a time, each lifetime recorded in the trace."""

    def __init__(self, folder: Path, config: Path, env: Dict[str, str], trace: Trace) -> None:
        self.folder, self.config, self.env, self.trace = folder, config, env, trace
        self.boot_file = folder / "boot_id"
        self.boot = 0
        self.boot_file.write_text(str(uuid.uuid4()) + "\n")
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.log = folder / "daemon.log"
        self.unshare = not can_change_boot()

    def start(self, *extra: str) -> None:
        command = [sys.executable, "-m", "spotwatch", "run", "-c", str(self.config), *extra]
        if self.unshare:
            mount = 'mount --bind "$0" ' + BOOT_ID + ' && exec "$@"'
            command = ["unshare", "-m", "--propagation", "private", "--", "sh", "-c", mount,
                       str(self.boot_file), *command]  # fmt: skip
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=str(REPO)
            )
        self.trace.lifetimes.append(Lifetime(time.time(), self.boot))

    def new_boot(self) -> None:
        self.boot += 1
        self.boot_file.write_text(str(uuid.uuid4()) + "\n")

    def stop(self, how: str) -> None:
        process = self.process
        if process is None:
            return
        sent = time.time()
        process.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
        if how == "sigterm-twice":  # §4: a second SIGTERM shortens the wait
            time.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            how = "sigterm"
        try:
            code = process.wait(STOP_LIMIT)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
            self.trace.log_problems.append(f"did not exit within {STOP_LIMIT:g} s of SIGTERM")
        ended = time.time()
        life = self.trace.lifetimes[-1]
        self.trace.lifetimes[-1] = Lifetime(life.started, life.boot, ended, how, code, sent)
        self.process = None
        if how == "sigterm" and ended - sent > STOP_LIMIT:
            self.trace.log_problems.append(f"exit {ended - sent:.1f} s after SIGTERM")


class World:
    """One sequence's world: IMDS, AWS (reset), the agent, the daemon and its folder."""

    def __init__(
        self, settings: Settings, moto_url: str, aws: AwsEndpoint, host: Host, folder: Path
    ) -> None:
        self.settings, self.folder, self.aws, self.host = settings, folder, aws, host
        self.logind = host.logind
        host.receiver.reset(settings.preset_answer)
        if self.logind is not None:
            self.logind.mark()
        aws.reset()
        aws.task_stop_delay = settings.task_stop_delay
        self.fleet = build_fleet(moto_url)
        self.imds = RecordingImds(instance_id=self.fleet.instance_id, max_token_ttl=MAX_TOKEN_TTL)
        self.imds.start()
        self.imds.set_asg_state("InService")
        self.agent = FakeAgent()
        self.agent.metadata = {
            "Cluster": self.fleet.cluster,
            "ContainerInstanceArn": self.fleet.container_instance,
            "Version": "Amazon ECS Agent - v1.80.0 (stand-in)",
        }
        self.trace = Trace(settings=asdict(settings), instance_id=self.fleet.instance_id)
        self.trace.logind = self.logind is not None
        self.runtime: Optional[RuntimeTasks] = None
        if settings.stop_via == "runtime" and host.docker is not None:
            self.runtime = RuntimeTasks(host.docker, self.agent, self.fleet)
        urls = {"imds": self.imds.endpoint, "agent": self.agent.url, "receiver": host.receiver.url}
        urls["docker"] = host.docker.host if host.docker is not None else ""
        config = config_for(settings, self.fleet, urls, folder, logind=self.trace.logind)
        self.config = write_config(config, folder)
        env = daemon_env(aws.url, folder, AWS_EC2_METADATA_DISABLED="true")
        if self.logind is not None:  # its system bus is the world's (§8)
            env["DBUS_SYSTEM_BUS_ADDRESS"] = self.logind.address
        self.env = env
        self.daemon = DaemonProcess(folder, self.config, env, self.trace)
        self.events = 0
        self.timers: List[threading.Timer] = []

    # ------------------------------------------------------------------ playing

    def begin(self) -> None:
        self.daemon.start()
        self._wait_for_polls(1)
        if self.logind is not None:  # §8: it takes the lock at start; the sequence begins then
            end = time.time() + 5.0
            while time.time() < end and not self.logind.holding():
                time.sleep(0.05)

    def _wait_for_polls(self, count: int, limit: float = 20.0) -> None:
        end = time.time() + limit
        since = time.time()
        while time.time() < end:
            if self.polled_since(since) >= count:
                return
            time.sleep(0.05)

    def polled_since(self, since: float) -> int:
        """How many polls the daemon made since `since` (the Spot notice's answers count them)."""
        return sum(1 for a in self.imds.answers if a[0] >= since and "instance-action" in a[1])

    def apply(self, event: Tuple[Any, ...]) -> None:
        """One world event (model_sequences.py says which there are), then its gap."""
        kind, args, gap = event[0], tuple(event[1:-1]), float(event[-1])
        self.trace.events.append(WorldEvent(time.time(), kind, args))
        imds = self.imds
        if kind == "spot":
            imds.raise_spot(args[0], args[1])
        elif kind == "spot-clear":
            imds.clear_instance_action()
        elif kind == "rebalance":
            imds.set_rebalance(datetime.now(timezone.utc))
        elif kind == "rebalance-clear":
            imds.set_rebalance(None)
        elif kind == "asg":
            imds.set_asg_state("Terminated")
        elif kind == "sched":
            when = datetime.fromtimestamp(time.time() + args[1], timezone.utc)
            imds.scheduled.add(args[0], when, event_id=f"instance-event-{args[2]:017x}")
        elif kind.startswith("sched-"):
            self._scheduled(kind, args)
        elif kind in ("sigterm", "kill", "boot", "sigterm-twice"):
            self.restart(kind)
        elif kind == "imds-down":
            imds.inject_status(503, count=None)
            self._later(args[0], imds.clear_faults)
        elif kind == "imds-down-restart":
            self.daemon.stop("sigterm")
            self.status("sigterm")
            imds.stop()
            self.daemon.start()
            self._later(args[0], imds.start)
        elif kind == "once":
            self.once(args[0], args[1])
        elif kind == "raise-while-down":  # the notice comes while the daemon restarts
            self.daemon.stop("sigterm")
            self.status("sigterm")
            imds.raise_spot(args[0], args[1])
            self.daemon.start()
        elif kind == "throttle":
            self.aws.throttle[args[0]] = int(args[1])
        elif kind == "hang":
            self.aws.hang[args[0]] = time.time() + float(args[1])
        elif kind == "status":
            self.status("checkpoint")
        elif kind.startswith("shutdown"):
            self.shutdown(kind)
        time.sleep(gap)

    def shutdown(self, kind: str) -> None:
        """§8: logind announces a shutdown (`shutdown`), calls it off (`shutdown-off`), or
        lets it go on once the lock is released (`shutdown-through`: then a new boot)."""
        logind = self.logind
        if kind == "shutdown-through":
            if logind is not None:
                logind.wait_released(self.settings.shutdown_budget + 3.0)
            self.restart("boot")
        elif logind is not None:
            active = kind == "shutdown"
            self.trace.announcements.append(Announcement(logind.announce(active), active))

    def _scheduled(self, kind: str, args: Tuple[Any, ...]) -> None:
        event_id = f"instance-event-{args[0]:017x}"
        if event_id not in {e["EventId"] for e in self.imds.scheduled.listed()}:
            return
        if kind == "sched-cancel":
            self.imds.scheduled.set_state(event_id, "canceled")
        elif kind == "sched-complete":
            self.imds.scheduled.set_state(event_id, "completed")
        elif kind == "sched-remove":
            self.imds.scheduled.remove(event_id)
        elif kind == "sched-move":
            when = datetime.fromtimestamp(time.time() + args[1], timezone.utc)
            self.imds.scheduled.move(event_id, when)

    def _later(self, seconds: float, action: Any) -> None:
        timer = threading.Timer(seconds, action)
        timer.daemon = True
        timer.start()
        self.timers.append(timer)

    def restart(self, how: str) -> None:
        self.daemon.stop(how if how in ("kill", "sigterm-twice") else "sigterm")
        if how != "kill":
            self.status("sigterm")
        if how == "boot" and self.daemon.unshare:
            self.daemon.new_boot()
            self.booted()
        self.daemon.start()

    def booted(self) -> None:
        """A new boot: the instance's metadata shows none of the earlier boot's notices."""
        self.imds.clear_instance_action()
        self.imds.set_rebalance(None)
        self.imds.set_asg_state("InService")
        for event in self.imds.scheduled.listed():
            self.imds.scheduled.remove(event["EventId"])

    def once(self, action: str, lead: float) -> None:
        """`run --once` instead of the daemon, a new notice for it to answer, and SIGTERM as
        soon as its first hook starts (§4: `run --once` follows the same shutdown rules)."""
        self.daemon.stop("sigterm")
        self.status("sigterm")
        from model_collect import hook_runs

        before = len(hook_runs(self.folder / "hooks.jsonl"))
        self.imds.raise_spot(action, lead)
        self.daemon.start("--once")
        end = time.time() + 10.0
        process = self.daemon.process
        while time.time() < end and process is not None and process.poll() is None:
            if len(hook_runs(self.folder / "hooks.jsonl")) > before:
                break
            time.sleep(0.02)
        self.daemon.stop("sigterm")
        self.status("sigterm")
        self.daemon.start()

    def status(self, after: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "spotwatch", "status", "--json", "-c", str(self.config)],
            capture_output=True,
            env=self.env,
            cwd=str(REPO),
            timeout=60,
        )
        try:
            doc = json.loads(done.stdout) if done.returncode == 0 else None
        except ValueError:
            doc = None
        self.trace.statuses.append(StatusShot(time.time(), doc, done.returncode, after))

    # ------------------------------------------------------------------ the end

    def settle(self) -> None:
        """Wait until every response has ended (its record done, no hook running)."""
        for timer in self.timers:
            timer.join()
        end = time.time() + SETTLE_LIMIT
        last = self.trace.events[-1].t if self.trace.events else 0.0
        calm_since: Optional[float] = None
        while time.time() < end:
            # A response seen late (a poll or two after the last event) must have had the
            # time its hooks are owed in (the model's hold), whatever the state file says.
            if self._calm() and time.time() >= last + SETTLE_AFTER:
                calm_since = calm_since or time.time()
                if time.time() - calm_since >= 1.0:
                    return
            else:
                calm_since = None
            time.sleep(0.2)
        self.trace.log_problems.append(
            f"responses still running {SETTLE_LIMIT:g} s after the last event"
        )

    def _calm(self) -> bool:
        from model_collect import hook_runs

        if any(run.ended is None for run in hook_runs(self.folder / "hooks.jsonl")):
            return False
        since = self.trace.lifetimes[-1].started  # the daemon now running has polled twice
        if self.polled_since(since) < 2:
            return False
        try:
            state = json.loads((self.folder / "state" / "state.json").read_text())
        except (OSError, ValueError):
            return True
        # A record not done but with nothing running or pending runs no more by itself
        # (interrupted, or halted for good): `status` is judged on it, not waited for.
        return all(
            record.get("done")
            or not any(s.get("status") in ("running", "pending") for s in record.get("steps", []))
            for record in state.get("responses", {}).values()
        )

    def finish(self) -> Trace:
        try:
            self.settle()
            self.status("end")
            self.daemon.stop("sigterm")  # every response has ended: nothing left to record
        finally:
            self.close()
        return self.collected()

    def collected(self) -> Trace:
        from model_collect import collect

        return collect(self)

    def close(self) -> None:
        if self.daemon.process is not None:
            self.daemon.stop("kill")
        for timer in self.timers:
            timer.cancel()
        self.close_services()

    def close_services(self) -> None:
        """Stop this world's simulated services (another cloud's world has its own)."""
        self.imds.stop()
        self.agent.close()
        if self.runtime is not None:
            self.runtime.close()
