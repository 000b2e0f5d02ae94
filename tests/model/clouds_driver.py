"""The driver on Google Cloud and Azure: the AWS model's `World` (the daemon as a child
process under `unshare -m`, a new boot as a new boot_id, `status` checkpoints, settling)
with that cloud's metadata simulator in place of IMDS and AWS, and the AWS API and AWS
instance metadata pointed at `AwsForbidden` (nothing may ask them there, §10).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

from clouds_signals import CloudSettings
from clouds_world import AwsForbidden, RecordingAzure, RecordingGcp
from model_config import hooks_config
from model_driver import DaemonProcess, World, daemon_env, write_config
from model_trace import Trace, WorldEvent

GCP_VALUES = {
    "preempt": ("instance/preempted", "TRUE"),
    "preempt-clear": ("instance/preempted", "FALSE"),
}
AZURE_COMPLETES_AFTER = 3.0  # a started event leaves the list this long after (it is done)
OTHER_VM = "spot-vm-2"
EVENT_SETTLES = 4.0  # seconds after an event's response is due: its first hooks have run


@dataclass
class CloudTrace(Trace):
    """A `Trace`, plus what only these clouds have."""

    cloud: str = ""
    approvals: List[Tuple[float, str]] = field(default_factory=list)  # (t, EventId) POSTed
    started_when: Dict[str, float] = field(default_factory=dict)  # EventId -> Started at
    metadata_writes: List[str] = field(default_factory=list)  # requests that were not reads
    vm_name: str = ""
    # Lifetime index -> whether it had polled (state/poll.json written) when it was stopped:
    # a Google watch reads the values before the poll loop (and its SIGTERM handler) runs.
    ready: Dict[int, bool] = field(default_factory=dict)


class CloudDaemon(DaemonProcess):
    """The daemon, noting at each stop whether this run had polled (§6: READY once the
    first poll was tried; SIGTERM is handled from then on)."""

    trace: CloudTrace

    def stop(self, how: str) -> None:
        if self.process is not None:
            polled = self.folder / "state" / "poll.json"
            life = self.trace.lifetimes[-1]
            ready = polled.exists() and polled.stat().st_mtime >= life.started
            self.trace.ready[len(self.trace.lifetimes) - 1] = ready
        super().stop(how)


def event_id(number: int) -> str:
    return f"EV-{number:04d}"


def config_for(settings: CloudSettings, endpoint: str, aws: str, folder: Path) -> Dict[str, Any]:
    hooks = hooks_config(settings, folder)
    config: Dict[str, Any] = {
        "cloud": settings.cloud,
        "poll_interval": f"{int(settings.poll * 1000)}ms",
        "deadline_margin": f"{settings.margin}s",
        "dry_run": settings.dry_run,
        "state_dir": str(folder / "state"),
        "imds": {"endpoint": aws, "timeout": "400ms"},
        "gcp": {"endpoint": endpoint, "notice": f"{settings.gcp_notice:g}s"},
        "azure": {"endpoint": endpoint, "acknowledge": settings.acknowledge},
        "scheduled_events": {"lead": f"{settings.lead:g}s"},
        "hooks": hooks,
        "log": {"level": "info", "format": "text"},
    }
    if settings.aws_configured:  # configured, and off on this cloud (§10): never an error
        config["ecs"] = {"enabled": True, "agent_url": aws}
        config["load_balancer"] = {"enabled": True, "classic": ["legacy"]}
        config["autoscaling"] = {"enabled": True}
        config["instance"] = {"after_response": "stop"}
        config["hibernate"] = {"trigger": "auto"}
    return config


class CloudWorld(World):
    """One sequence's world on Google Cloud or Azure."""

    def __init__(self, settings: CloudSettings, forbidden: AwsForbidden, folder: Path) -> None:
        self.settings, self.folder, self.forbidden = settings, folder, forbidden
        self.cloud = settings.cloud
        self.meta: Union[RecordingGcp, RecordingAzure]
        if self.cloud == "gcp":
            self.meta = RecordingGcp()
        else:
            self.meta = RecordingAzure(
                first_answer_delay=settings.first_answer_delay,
                complete_after=AZURE_COMPLETES_AFTER,
            )
        self.meta.start()
        self.trace = CloudTrace(
            settings=asdict(settings), instance_id=self.meta.instance_id, cloud=self.cloud
        )
        self.trace.vm_name = getattr(self.meta, "vm_name", "")
        forbidden.requests.clear()
        config = config_for(settings, self.meta.endpoint, forbidden.url, folder)
        self.config = write_config(config, folder)
        # Every AWS endpoint, the SDK's instance metadata included, is the forbidden one.
        env = daemon_env(forbidden.url, folder, AWS_EC2_METADATA_SERVICE_ENDPOINT=forbidden.url)
        self.env = {k: v for k, v in env.items() if k != "GCE_METADATA_HOST"}
        self.daemon = CloudDaemon(folder, self.config, self.env, self.trace)
        self.events = 0
        self.timers = []
        self.logind = None  # no logind here (§8 is the AWS model's)

    def polled_since(self, since: float) -> int:
        return sum(1 for answer in self.meta.answers if answer[0] >= since)

    def _calm(self) -> bool:
        """Also: every Azure event still waiting for its moment has had it, and the time
        for its first hooks (else the end of a sequence would leave it unjudged)."""
        if not super()._calm():
            return False
        if not isinstance(self.meta, RecordingAzure):
            return True
        due = [
            self.meta.not_before(event) - self.settings.lead + EVENT_SETTLES
            for event in self.meta.listed()
        ]
        return all(moment <= time.time() for moment in due)

    # ------------------------------------------------------------------ playing

    def apply(self, event: Tuple[Any, ...]) -> None:
        kind, args, gap = event[0], tuple(event[1:-1]), float(event[-1])
        self.trace.events.append(WorldEvent(time.time(), kind, args))
        meta = self.meta
        if kind in ("sigterm", "kill", "boot", "sigterm-twice"):
            self.restart(kind)
        elif kind == "raise-while-down":  # the signal comes while the daemon restarts
            self.daemon.stop("sigterm")
            self.status("sigterm")
            self.raise_signal(kind, args)
            self.daemon.start()
        elif kind == "status":
            self.status("checkpoint")
        elif kind == "fault-503":  # a burst of 503s (Google: its maintenance, under a second)
            meta.inject_status(503, count=int(args[0]))
        elif kind == "outage":
            meta.inject_status(503, count=None)
            self._later(float(args[0]), meta.clear_faults)
        elif kind == "slow":  # the next answers come late (the client's timeout may cut them)
            meta.inject_hang(float(args[0]), count=2)
        elif kind == "cut":  # the server drops every connection, a hanging GET's included
            meta.stop()
            time.sleep(0.2)
            meta.start()
        else:
            self.raise_signal(kind, args)
        time.sleep(gap)

    def raise_signal(self, kind: str, args: Tuple[Any, ...]) -> None:
        if isinstance(self.meta, RecordingGcp):
            if kind == "raise-while-down":
                kind, args = args[0], args[1:]
            if kind in GCP_VALUES:
                self.meta.set_value(*GCP_VALUES[kind])
            elif kind == "maint":
                self.meta.set_maintenance_event(str(args[0]))
            return
        azure = self.meta
        if kind == "raise-while-down":
            kind = "event"
        if kind == "event":
            when = datetime.fromtimestamp(time.time() + float(args[1]), timezone.utc)
            azure.add_event(str(args[0]), when, event_id=event_id(int(args[2])))
        elif kind == "event-elsewhere":  # listed for another VM of the scale set: not ours
            when = datetime.fromtimestamp(time.time() + float(args[1]), timezone.utc)
            azure.add_event(str(args[0]), when, resources=[OTHER_VM])
        elif kind == "event-move":
            when = datetime.fromtimestamp(time.time() + float(args[1]), timezone.utc)
            azure.move_event(event_id(int(args[0])), when)
        elif kind == "event-remove":  # before NotBefore: canceled (Azure has no Canceled)
            azure.remove_event(event_id(int(args[0])))

    def booted(self) -> None:
        if isinstance(self.meta, RecordingGcp):
            self.meta.set_value("instance/preempted", "FALSE")
            self.meta.set_maintenance_event("NONE")
        else:
            for listed in self.meta.listed():
                self.meta.remove_event(listed)

    # ------------------------------------------------------------------ the end

    def collected(self) -> Trace:
        from clouds_collect import collect

        return collect(self)

    def close_services(self) -> None:
        self.meta.stop()
