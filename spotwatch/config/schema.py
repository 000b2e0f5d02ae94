"""The settings spotwatch runs on: one frozen dataclass per config section.

Defaults here are the built-in layer (the configuration block of the README). Durations
are float seconds. Loading, layering and validation live in `spotwatch.config.load`; this
module only says what a valid configuration looks like once loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Union

NOTICE_ACTIONS = ("terminate", "stop", "hibernate")
"""Actions an interruption notice can carry (spot/instance-action)."""

HOOK_ACTIONS = (
    *NOTICE_ACTIONS,
    "rebalance",
    "resume",
    "reboot",
    "maintenance",
    "start",
    "cancel",
    "shutdown",
)
"""Everything a hook may subscribe to (reboot and maintenance come from scheduled events,
start from the first boot after a stop, cancel from a scheduled event called off, shutdown
from a system shutdown no notice announced)."""

CLOUD_NAMES = ("aws", "gcp", "azure")
"""The clouds `cloud:` may name (besides `auto`); clouds/registry.py maps each to its code."""

DEFAULT_CONFIG_PATH = "/etc/spotwatch/config.yaml"
DEFAULT_CONFD_DIR = "/etc/spotwatch/conf.d"


@dataclass(frozen=True)
class ImdsSettings:
    endpoint: str = "http://169.254.169.254"
    timeout: float = 1.0
    token_ttl: float = 21600.0
    allow_imdsv1: bool = False
    user_data: bool = True


@dataclass(frozen=True)
class RebalanceSettings:
    enabled: bool = True
    # While a rebalance recommendation stands, the Spot notice is polled at least this often.
    poll_interval: float = 1.0


@dataclass(frozen=True)
class HookSpec:
    name: str
    # An argv list runs without a shell; a string runs through /bin/sh -c. None: a preset.
    command: Union[Tuple[str, ...], str, None] = None
    actions: Tuple[str, ...] = ("terminate", "stop", "shutdown")
    timeout: float = 60.0
    order: int = 0
    user: Union[str, int, None] = None
    env: Dict[str, str] = field(default_factory=dict)
    # A ready-made hook (spotwatch.presets) instead of a command, and its `with:` arguments
    # (checked and normalised; `${name}` placeholders are filled in when it runs).
    preset: Optional[str] = None
    arguments: Dict[str, Any] = field(default_factory=dict)

    def argv(self) -> Tuple[str, ...]:
        """The command hook's argv (a preset hook has none: ())."""
        if self.command is None:
            return ()
        if isinstance(self.command, str):
            return ("/bin/sh", "-c", self.command)
        return self.command


@dataclass(frozen=True)
class EcsSettings:
    enabled: Union[bool, str] = "auto"  # True | False | "auto"
    agent_url: str = "http://127.0.0.1:51678"
    region: Optional[str] = None
    drain: bool = True
    stop: str = "standalone"  # none | standalone | all
    final_stop: bool = True
    stop_timeout: float = 30.0
    stop_reason: str = "Spot interruption: {action} at {time}"
    # How the ECS stop and the final stop stop a task: `api` (StopTask), `runtime` (the
    # Docker Engine API at docker_host, StopTask only for what must), `auto` (runtime when
    # that answers).
    stop_via: str = "auto"  # auto | api | runtime
    docker_host: str = "unix:///var/run/docker.sock"  # DOCKER_HOST overrides
    # Back to ACTIVE when spotwatch drained the container instance and the instance stays.
    reactivate: bool = True


@dataclass(frozen=True)
class AutoscalingSettings:
    enabled: Union[bool, str] = "auto"  # True | False | "auto"
    lifecycle_hook: Optional[str] = None  # None: discover the terminating hook
    budget: float = 600.0
    complete: bool = True
    detach: bool = False


@dataclass(frozen=True)
class ScheduledEventsSettings:
    enabled: bool = True
    poll_interval: float = 60.0
    lead: float = 600.0


@dataclass(frozen=True)
class LoadBalancerSettings:
    enabled: Union[bool, str] = "auto"  # True | False | "auto"
    target_groups: Tuple[str, ...] = ()  # target group ARNs
    classic: Tuple[str, ...] = ()  # Classic Load Balancer names
    wait: float = 30.0


@dataclass(frozen=True)
class InstanceSettings:
    after_response: str = "none"  # none | stop | hibernate | terminate
    after_rebalance: str = "none"  # none | stop | terminate


@dataclass(frozen=True)
class HibernateSettings:
    trigger: str = "auto"  # auto | command | none
    command: Union[Tuple[str, ...], str] = ("systemctl", "hibernate")
    budget: float = 10.0


@dataclass(frozen=True)
class ShutdownSettings:
    """The logind delay lock that holds a system shutdown back for the `shutdown` response."""

    enabled: Union[bool, str] = "auto"  # True | False | "auto": on when logind answers
    budget: float = 60.0  # the longest spotwatch holds a shutdown back


@dataclass(frozen=True)
class LogSettings:
    level: str = "info"  # debug | info | warning | error
    format: str = "auto"  # auto | journal | json | text


@dataclass(frozen=True)
class MetricsSettings:
    textfile: Optional[str] = None
    listen: Optional[str] = None  # "127.0.0.1:9464"


@dataclass(frozen=True)
class WebhookSettings:
    url: Optional[str] = None
    headers: Dict[str, str] = field(default_factory=dict)
    timeout: float = 5.0
    retries: int = 3
    format: str = "json"  # json | slack | text
    template: Optional[str] = None  # ${name} placeholders; None: the built-in summary


@dataclass(frozen=True)
class EventsSettings:
    sns_topic_arn: Optional[str] = None
    eventbridge_bus: Optional[str] = None  # a bus name or ARN


@dataclass(frozen=True)
class GcpSettings:
    endpoint: str = "http://metadata.google.internal"  # GCE_METADATA_HOST overrides
    # How long after `preempted` turns TRUE the VM is gone (30 s; 150 s with a 120 s
    # preemption notice duration).
    notice: float = 30.0


@dataclass(frozen=True)
class AzureSettings:
    endpoint: str = "http://169.254.169.254"
    acknowledge: bool = True  # once an event's response has ended, POST StartRequests for it


@dataclass(frozen=True)
class Config:
    poll_interval: float = 5.0
    deadline_margin: float = 10.0
    dry_run: bool = False
    state_dir: str = "/var/lib/spotwatch"
    imds: ImdsSettings = field(default_factory=ImdsSettings)
    rebalance: RebalanceSettings = field(default_factory=RebalanceSettings)
    hooks: Tuple[HookSpec, ...] = ()
    ecs: EcsSettings = field(default_factory=EcsSettings)
    autoscaling: AutoscalingSettings = field(default_factory=AutoscalingSettings)
    scheduled_events: ScheduledEventsSettings = field(default_factory=ScheduledEventsSettings)
    load_balancer: LoadBalancerSettings = field(default_factory=LoadBalancerSettings)
    instance: InstanceSettings = field(default_factory=InstanceSettings)
    hibernate: HibernateSettings = field(default_factory=HibernateSettings)
    shutdown: ShutdownSettings = field(default_factory=ShutdownSettings)
    log: LogSettings = field(default_factory=LogSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    events: EventsSettings = field(default_factory=EventsSettings)
    cloud: str = "auto"  # auto | one of CLOUD_NAMES
    gcp: GcpSettings = field(default_factory=GcpSettings)
    azure: AzureSettings = field(default_factory=AzureSettings)
    # Where each layer came from, for `check` and logs:
    # e.g. ("defaults", "/etc/spotwatch/config.yaml").
    sources: Tuple[str, ...] = ("defaults",)

    def hooks_for(self, action: str) -> Tuple[HookSpec, ...]:
        """Hooks subscribed to `action`, sorted by order (stable, so file order breaks ties)."""
        return tuple(sorted((h for h in self.hooks if action in h.actions), key=lambda h: h.order))
