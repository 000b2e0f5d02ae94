"""Load balancer and Auto Scaling steps: out of the load balancers before the hooks, out of
the group so it launches a replacement now, and back into the load balancers on a cancel.

`lb:deregister` (prelude, the hooks wait for it at most `load_balancer.wait`): for each
target group, DescribeTargetHealth tells this instance's ports and DeregisterTargets takes
them out; DeregisterInstancesFromLoadBalancer for each Classic Load Balancer. Then target
health is asked with backoff (at least every 2 s) until every target is `unused`, or
`wait` has passed, or the deadline: the step returns then, so the hooks start at once.

`asg:detach` (prelude, nothing waits for it): DetachInstances without decrementing the
desired capacity, on a Spot notice only — when Auto Scaling itself ends the instance it is
already replacing it (and once it has begun to, no other end's response detaches it either:
response/ends.py `without_detach`).

`lb:reregister`: what `lb:deregister` recorded for a response, registered again, when a
`cancel` or a `start` undoes that response (response/putback.py): after a scheduled event
is called off, and on the first start after a stop or a reboot.
"""

from __future__ import annotations

import logging
import time
from typing import Dict, List, Optional, Tuple

from spotwatch.config.schema import Config, LoadBalancerSettings
from spotwatch.detection.notices import Notice
from spotwatch.logevents import emit
from spotwatch.parts.awsapi.clients import AwsClients, api_errors, describe_error
from spotwatch.parts.lb.discovery import LoadBalancerDiscovery, LoadBalancers, group_of
from spotwatch.parts.lb.targets import (
    GONE_STATES,
    Deregistered,
    deregister_classic,
    deregister_targets,
    each,
    find_record,
    notice_key,
    registered_ports,
    reregister,
    save_record,
    short_group,
    target_states,
)
from spotwatch.response.plan import Step, StepContext, StepOutcome
from spotwatch.response.putback import PutBack
from spotwatch.state.schema import FAILED, OK

log = logging.getLogger("spotwatch.lb")

LB_ACTIONS = ("terminate", "stop", "reboot", "shutdown")  # maintenance keeps its traffic
DETACH_ACTIONS = ("terminate", "stop")
# A Spot notice: the group does not know the instance is going (a rehearsal stands for one).
DETACH_SOURCES = frozenset({"instance-action", "termination-time", "rehearsal"})
POLL_FIRST = 0.25  # seconds before the first look at target health
POLL_MAX = 2.0  # target health is asked at least this often
DETACH_WAIT = 5.0  # detach waits this long at most for the group (else it asks itself)
DEREGISTER_STEP = "lb:deregister"


def _known(
    discovery: LoadBalancerDiscovery, ctx: StepContext, wait: float
) -> Optional[LoadBalancers]:
    """The discovery's answer, waiting for it at most `wait` (never past the deadline)."""
    return discovery.result(min(wait, max(0.0, ctx.clock.time_left())))


class DeregisterStep(Step):
    kind = "load-balancer"

    def __init__(
        self,
        discovery: LoadBalancerDiscovery,
        clients: AwsClients,
        settings: LoadBalancerSettings,
        state_dir: str,
    ) -> None:
        super().__init__(DEREGISTER_STEP)
        self.discovery = discovery
        self.clients = clients
        self.settings = settings
        self.state_dir = state_dir

    def run(self, ctx: StepContext) -> StepOutcome:
        started = ctx.clock.now()
        # A discovery still failing (an IMDS or AWS outage since the daemon started) is
        # waited for at most `wait`, as the hooks wait for this step; then what is known
        # (the lists given in the config) is taken out, and the step says what was not.
        found = _known(self.discovery, ctx, self.settings.wait)
        unknown = ""
        if found is None:
            latest = self.discovery.latest
            why = latest.why if latest is not None else "it has not answered"
            unknown = f"load balancers not known: discovery failed ({why})"
            found = latest if latest is not None and not latest.empty else None
            if found is None:
                return self._failed(unknown)
        if found.empty:
            if self.settings.enabled is True:
                return self._failed(f"load_balancer.enabled is true but none found ({found.why})")
            return StepOutcome(OK, f"no load balancers ({found.why})")
        instance = ctx.instance_id
        errors = api_errors()
        aws = self.clients.bounded(ctx.clock.time_left)

        def take_out(group: str) -> Tuple[str, List[int], Optional[str]]:
            try:
                ports = registered_ports(aws, group, instance)
                if ports and not ctx.dry_run:
                    deregister_targets(aws, group, instance, ports)
            except errors as failure:
                return group, [], f"{short_group(group)}: {describe_error(failure)}"
            return group, ports, None

        def take_out_classic(name: str) -> Optional[str]:
            if ctx.dry_run:
                return None
            try:
                deregister_classic(aws, name, instance)
            except errors as failure:
                return f"{name}: {describe_error(failure)}"
            return None

        done = each(found.target_groups, take_out)
        classic_failures = [f for f in each(found.classic, take_out_classic) if f]
        failures = [why for _, _, why in done if why] + classic_failures + [unknown]
        targets = tuple((g, p) for g, ports, _ in done for p in ports)
        classic = tuple(
            n for n in found.classic if not any(f.startswith(f"{n}: ") for f in classic_failures)
        )
        key = ctx.response or notice_key(ctx.notice)
        record = Deregistered(instance, targets, classic, key, time.time())
        if ctx.dry_run:
            for group, port in targets:
                emit(
                    log,
                    logging.INFO,
                    "lb-would-deregister",
                    f"would deregister {instance} port {port} from target group {group}",
                )
            for name in classic:
                emit(
                    log,
                    logging.INFO,
                    "lb-would-deregister",
                    f"would deregister {instance} from Classic Load Balancer {name}",
                )
            return self._end(failures, f"dry run: would deregister {record.describe()}")
        if targets or classic:
            save_record(self.state_dir, record)
            emit(
                log,
                logging.INFO,
                "lb-deregistered",
                f"deregistered {instance} from {record.describe()}",
            )
        pending = {g: ports for g, ports, _ in done if ports}
        left = self._drain(ctx, instance, pending, started)
        took = ctx.clock.now() - started
        what = f"deregistered {record.describe()}"
        if left:
            emit(
                log,
                logging.WARNING,
                "lb-still-draining",
                f"{len(left)} targets still draining after {took:.1f} s; the hooks go on",
            )
            return self._end(failures, f"{what}; {len(left)} still draining after {took:.1f} s")
        return self._end(failures, f"{what}; drained in {took:.1f} s")

    def _drain(
        self, ctx: StepContext, instance: str, pending: Dict[str, List[int]], started: float
    ) -> List[Tuple[str, int]]:
        """Asks target health with backoff until no target is left draining, or `wait` has
        passed since `started`, or the deadline; returns the targets still draining."""
        errors = api_errors()
        pause = POLL_FIRST
        aws = self.clients.bounded(ctx.clock.time_left)

        def until() -> float:
            return min(started + self.settings.wait, ctx.clock.deadline)

        def look(group: str) -> Tuple[str, Optional[Dict[int, str]]]:
            try:
                return group, target_states(aws, group, instance)
            except errors as failure:  # asked again on the next round
                emit(log, logging.DEBUG, "lb-health-failed", describe_error(failure))
                return group, None

        while pending:
            remaining = until() - ctx.clock.now()
            if remaining <= 0 or ctx.cancel.wait(min(pause, remaining)):
                break
            if until() - ctx.clock.now() <= 0:
                break
            for group, states in each(list(pending), look):
                if states is not None and all(
                    states.get(port, "unused") in GONE_STATES for port in pending[group]
                ):
                    del pending[group]
            pause = min(pause * 2, POLL_MAX)
        return [(g, p) for g, ports in pending.items() for p in ports]

    def _failed(self, why: str) -> StepOutcome:
        emit(log, logging.ERROR, "lb-failed", f"{self.name}: {why}")
        return StepOutcome(FAILED, why)

    def _end(self, failures: List[str], detail: str) -> StepOutcome:
        failures = [failure for failure in failures if failure]
        if failures:
            return self._failed(f"{'; '.join(failures)} ({detail})")
        return StepOutcome(OK, detail)


class DetachStep(Step):
    kind = "autoscaling"

    def __init__(self, discovery: LoadBalancerDiscovery, clients: AwsClients) -> None:
        super().__init__("asg:detach")
        self.discovery = discovery
        self.clients = clients

    def run(self, ctx: StepContext) -> StepOutcome:
        instance = ctx.instance_id
        aws = self.clients.bounded(ctx.clock.time_left)
        try:
            found = _known(self.discovery, ctx, DETACH_WAIT)
            group = found.group if found is not None and found.group else None
            group = group or group_of(aws, instance)
            if group is None:
                return StepOutcome(OK, "not in an Auto Scaling group: nothing to detach")
            if ctx.dry_run:
                emit(
                    log,
                    logging.INFO,
                    "asg-would-detach",
                    f"would detach {instance} from Auto Scaling group {group} "
                    "(desired capacity kept: the group launches a replacement now)",
                )
                return StepOutcome(OK, f"dry run: would detach from {group}")
            answer = aws.autoscaling(
                "detach_instances",
                InstanceIds=[instance],
                AutoScalingGroupName=group,
                ShouldDecrementDesiredCapacity=False,
            )
        except api_errors() as failure:
            why = describe_error(failure)
            emit(log, logging.ERROR, "asg-detach-failed", f"{self.name}: {why}")
            return StepOutcome(FAILED, f"DetachInstances: {why}")
        activities = answer.get("Activities") or []
        for activity in activities:
            emit(
                log,
                logging.INFO,
                "asg-activity",
                f"{group}: {activity.get('Description', '?')} ({activity.get('StatusCode', '?')})",
                activity=str(activity.get("ActivityId", "")),
            )
        said = activities[0].get("Description", "") if activities else "no activity reported"
        return StepOutcome(OK, f"detached from {group}, desired capacity kept: {said}")


class ReregisterStep(Step):
    kind = "load-balancer"

    def __init__(
        self, putback: PutBack, undone: Dict[str, str], clients: AwsClients, state_dir: str
    ) -> None:
        super().__init__("lb:reregister")
        self.putback = putback
        self.undone = undone  # response key -> its notice's key (records of older versions)
        self.clients = clients
        self.state_dir = state_dir

    def run(self, ctx: StepContext) -> StepOutcome:
        done: List[str] = []
        for key, legacy in sorted(self.undone.items()):
            self.putback.settled(ctx.notice, key, DEREGISTER_STEP, ctx)  # once it has ended
            record = find_record(self.state_dir, key) or find_record(self.state_dir, legacy)
            if record is None:
                continue
            ok, detail = reregister(record, self.clients, ctx.clock.time_left, dry_run=ctx.dry_run)
            if not ok:
                return StepOutcome(FAILED, detail)
            done.append(detail)
        return StepOutcome(OK, "; ".join(done) or "nothing was deregistered")


class LoadBalancerResponse:
    """The load balancer and detach steps a notice gets (providers for response/build.py)."""

    def __init__(
        self, config: Config, clients: AwsClients, putback: Optional[PutBack] = None
    ) -> None:
        self.clients = clients
        self.discovery = LoadBalancerDiscovery(config, clients)
        self.putback = putback or PutBack()

    @staticmethod
    def wanted(config: Config) -> bool:
        return config.load_balancer.enabled is not False or config.autoscaling.detach

    def start(self) -> LoadBalancerResponse:
        self.discovery.start()
        return self

    def stop(self) -> None:
        """Superseded (a reload): its discovery tries no more."""
        self.discovery.stop()

    def deregister(self, notice: Notice, config: Config) -> List[Step]:
        settings = config.load_balancer
        if settings.enabled is False or notice.action not in LB_ACTIONS:
            return []
        given = settings.target_groups or settings.classic
        found = self.discovery.result()
        if settings.enabled == "auto" and not given and found is not None and found.empty:
            return []  # auto and none found (a discovery not done yet is waited for)
        return [DeregisterStep(self.discovery, self.clients, settings, config.state_dir)]

    def detach(self, notice: Notice, config: Config) -> List[Step]:
        if not config.autoscaling.detach or notice.action not in DETACH_ACTIONS:
            return []
        if notice.source not in DETACH_SOURCES:
            return []
        return [DetachStep(self.discovery, self.clients)]

    def put_back(self, notice: Notice, config: Config) -> List[Step]:
        """An undo provider (`Providers.undo`): for a `cancel` or a `start`, put back what
        the responses it undoes deregistered."""
        if config.load_balancer.enabled is False:
            return []
        undone = {
            key: notice_key(Notice.from_json(record["notice"]))
            for key, record in self.putback.planned(notice, DEREGISTER_STEP).items()
        }
        if not undone:
            return []
        return [ReregisterStep(self.putback, undone, self.clients, config.state_dir)]
