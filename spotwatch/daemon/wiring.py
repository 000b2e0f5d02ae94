"""Which optional parts a daemon gets, decided from the config in one place."""

from __future__ import annotations

import threading
from typing import Callable, Optional, Tuple

from spotwatch.clouds.registry import Settled, settle
from spotwatch.config.schema import Config
from spotwatch.daemon.boot import on_daemon_start
from spotwatch.daemon.shell import DaemonParts
from spotwatch.daemon.shutdown import ShutdownParts
from spotwatch.parts.autoscaling.lifecycle import AutoscalingResponse
from spotwatch.parts.awsapi.clients import AwsClients
from spotwatch.parts.ecs.agent import EcsTarget
from spotwatch.parts.ecs.empty import until_no_task_left
from spotwatch.parts.ecs.onhost import say_if_sdk_missing
from spotwatch.parts.ecs.reactivate import EcsReactivation
from spotwatch.parts.ecs.steps import EcsResponse
from spotwatch.parts.hibernate import Probes, add_hibernate_trigger
from spotwatch.parts.instance import InstanceResponse
from spotwatch.parts.lb.steps import LoadBalancerResponse
from spotwatch.parts.presetservices import DaemonServices
from spotwatch.response.build import Providers
from spotwatch.response.putback import PutBack
from spotwatch.state.ledger import HibernateLedger
from spotwatch.telemetry.events import Telemetry

FIRST_DISCOVERY_WAIT = 2.0  # seconds the first poll waits at most for discovery's first try


def aws_clients(config: Config) -> AwsClients:
    """The one AWS session of this process (clients are made on first use)."""
    return AwsClients(
        region=config.ecs.region,
        imds_endpoint=config.imds.endpoint,
        imds_timeout=config.imds.timeout,
        allow_imdsv1=config.imds.allow_imdsv1,
    )


class AwsParts:
    """ECS, load balancer, detach and instance steps for each notice. ECS discovery runs at
    start; a reload that changes where ECS or AWS is found (enabled, agent_url, region, IMDS)
    starts afresh. Load balancer discovery runs at start and on every reload. `node_name`:
    the cloud's name for this VM, for presets (`Cloud.node_name`; None: the host name)."""

    def __init__(
        self, config: Config, node_name: Callable[[Config], Optional[str]] = lambda _: None
    ) -> None:
        self._lock = threading.Lock()
        self._node_name = node_name
        self._key: Optional[Tuple[object, ...]] = None
        self.ecs: Optional[EcsResponse] = None
        self.instance: InstanceResponse
        self.services: DaemonServices
        self.lb: Optional[LoadBalancerResponse] = None
        self._clients: AwsClients
        self.autoscaling = AutoscalingResponse(aws_clients(config), config.autoscaling)
        self._setup(config)
        # For cancel and start: what the responses they undo changed (bound to the state).
        self.putback = PutBack()
        self.reactivation = EcsReactivation(
            lambda: self.ecs.target if self.ecs else None, self.putback
        )
        self.rediscover(config)

    def first_discovery(self, daemon: object) -> None:
        """`on_start`: before the first poll, give load balancer discovery's first try up to
        FIRST_DISCOVERY_WAIT to end (an instance in no group knows from IMDS in
        milliseconds), so whether a notice standing at start gets `lb:deregister` does not
        depend on which thread ran first. A discovery still under way after that is waited
        for by the step itself (at most `load_balancer.wait`)."""
        lb = self.lb
        if lb is not None:
            lb.discovery.first_try(FIRST_DISCOVERY_WAIT)

    def rediscover(self, config: Config) -> None:
        """Load balancers and Auto Scaling group, found again in the background."""
        with self._lock:
            if self._key_of(config) != self._key:
                self._setup(config)
            fresh = None
            if LoadBalancerResponse.wanted(config):
                fresh = LoadBalancerResponse(config, self._clients, self.putback).start()
            if self.lb is not None:
                self.lb.stop()  # a discovery still trying again answers for the old config
            self.lb = fresh

    @staticmethod
    def _key_of(config: Config) -> Tuple[object, ...]:
        return (config.ecs.enabled, config.ecs.agent_url, config.ecs.region, config.imds)

    def _setup(self, config: Config) -> None:
        self._key = self._key_of(config)
        clients = aws_clients(config)
        self._clients = clients
        self.instance = InstanceResponse(clients)
        self.services = DaemonServices(clients, lambda: self._node_name(config))
        self.autoscaling.lifecycle.clients = clients
        self.ecs = None
        if config.ecs.enabled is not False:
            target = EcsTarget(config.ecs, clients)
            if target.start() is not None or config.ecs.enabled is True:
                say_if_sdk_missing(config.ecs)  # once: `auto` then means `api`
            self.ecs = EcsResponse(target)

    def providers(self, config: Config, dry_run: bool) -> Providers:
        """The daemon asks on every notice, with the config then in force."""
        with self._lock:
            if self._key_of(config) != self._key:
                self._setup(config)
            ecs, instance, lb = self.ecs, self.instance, self.lb
        parts = Providers(
            instance=instance.steps,
            lifecycle_end=self.autoscaling.finale,
            undo=[self.reactivation.steps],
            preset_services=self.services,
        )
        if lb is not None:
            parts.lb_deregister = lb.deregister
            parts.asg_detach = lb.detach
            parts.undo.append(lb.put_back)
        if ecs is not None:
            parts.ecs_drain = ecs.drain
            parts.ecs_stop = ecs.stop
            parts.ecs_final = until_no_task_left(ecs.final)
        return parts


def add_telemetry(parts: DaemonParts, config: Config) -> Telemetry:
    """Metrics (textfile, /metrics, /healthz) and events: a listener of every response."""
    telemetry = Telemetry(config)
    parts.on_start.append(telemetry.bind)
    parts.on_poll.append(telemetry.on_poll)
    parts.listeners.append(telemetry)
    parts.on_stop.append(telemetry.finish)
    return telemetry


def daemon_parts(
    config: Config,
    *,
    probes: Optional[Probes] = None,
    settle: Callable[[Config], Settled] = settle,
) -> DaemonParts:
    """The daemon's parts for this config (ECS, EC2, hibernation, telemetry, and the cloud's
    own), on the cloud `settle` finds: what that cloud lacks is off before anything starts.
    `probes`: where the hibernate trigger looks at the host (default: / and systemctl)."""
    settled = settle(config)
    config = settled.config
    aws = AwsParts(config, settled.cloud.node_name)
    parts = DaemonParts(providers=settled.cloud.providers(aws.providers))
    parts.on_reload.append(aws.rediscover)
    parts.listeners.append(aws.autoscaling.keeper)  # heartbeats while the group waits
    parts.providers = add_hibernate_trigger(parts.providers, HibernateLedger, probes)
    parts.on_start.append(aws.putback.bind)
    parts.on_start.append(aws.first_discovery)
    add_telemetry(parts, config)
    parts.on_start.append(on_daemon_start)  # after telemetry: the start response is heard
    shutdown = ShutdownParts()  # logind's delay lock (CONTRACT §8)
    parts.on_start.append(shutdown.on_start)
    parts.on_reload.append(shutdown.on_reload)
    parts.on_stop.insert(0, shutdown.on_stop)  # the lock first: events may take seconds
    return parts
