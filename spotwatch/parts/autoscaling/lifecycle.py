"""The Auto Scaling lifecycle action of an instance its group is terminating.

With an `autoscaling:EC2_INSTANCE_TERMINATING` lifecycle hook the group waits for us: the
instance stays in Terminating:Wait until CompleteLifecycleAction, or until the hook's
HeartbeatTimeout runs out (each RecordLifecycleActionHeartbeat restarts it, up to the
global timeout of 100 x HeartbeatTimeout, at most 48 h: docs/aws-facts.md).

- `HeartbeatKeeper` is a response listener: when a response that ends in the lifecycle
  action starts (or is taken up after a restart), it finds the group and the hook and
  records a heartbeat every third of HeartbeatTimeout until the response ends, its
  deadline passes or the daemon stops.
- `CompleteStep` is that response's last step (the finale: after every other step, failed
  ones included): heartbeats stop and, with `autoscaling.complete`, CompleteLifecycleAction
  CONTINUE lets the group go on at once.

Without a terminating hook there is nothing to keep alive or complete: the group ends the
instance when it will, and the response runs until the OS shuts down (`check` warns).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional
from weakref import WeakKeyDictionary

from spotwatch.config.schema import AutoscalingSettings, Config
from spotwatch.detection.notices import SOURCE_TARGET_LIFECYCLE_STATE, Notice
from spotwatch.logevents import emit
from spotwatch.parts.awsapi.bounded import Bounded
from spotwatch.parts.awsapi.clients import AwsClients, api_errors, describe_error
from spotwatch.response.deadline import NoticeClock
from spotwatch.response.plan import Step, StepContext, StepOutcome
from spotwatch.response.responder import Response
from spotwatch.response.runner import StepJournal
from spotwatch.state.schema import FAILED, OK

log = logging.getLogger("spotwatch.autoscaling")

TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
COMPLETE_STEP = "autoscaling:complete"
MAX_GLOBAL_TIMEOUT = 48 * 3600.0
HEARTBEATS_PER_TIMEOUT = 3  # a heartbeat every third of HeartbeatTimeout: two may be lost


@dataclass(frozen=True)
class LifecycleHook:
    group: str
    name: str
    heartbeat_timeout: float
    global_timeout: float

    @property
    def heartbeat_every(self) -> float:
        return self.heartbeat_timeout / HEARTBEATS_PER_TIMEOUT

    def __str__(self) -> str:
        return (
            f"lifecycle hook {self.name} of group {self.group} "
            f"(HeartbeatTimeout {self.heartbeat_timeout:g} s)"
        )


class NoHook(Exception):
    """No terminating hook to wait for us (`str()` says why: no group, no hook, an error)."""


def find_hook(asg: Bounded, instance_id: str, configured: Optional[str] = None) -> LifecycleHook:
    """The instance's group and its terminating hook (DescribeAutoScalingInstances,
    DescribeLifecycleHooks); raises `NoHook`, or the API's error."""
    found = asg.autoscaling("describe_auto_scaling_instances", InstanceIds=[instance_id])
    instances = found.get("AutoScalingInstances") or []
    if not instances:
        raise NoHook(f"{instance_id} is in no Auto Scaling group")
    group = str(instances[0]["AutoScalingGroupName"])
    ask: Dict[str, Any] = {"AutoScalingGroupName": group}
    if configured:
        ask["LifecycleHookNames"] = [configured]
    hooks = asg.autoscaling("describe_lifecycle_hooks", **ask).get("LifecycleHooks") or []
    terminating = [h for h in hooks if h.get("LifecycleTransition") == TERMINATING]
    if not terminating:
        named = f"lifecycle hook {configured} for termination" if configured else TERMINATING
        raise NoHook(f"group {group} has no {named} hook: nothing waits for the response")
    hook = terminating[0]
    heartbeat = float(hook.get("HeartbeatTimeout") or 3600)
    limit = float(hook.get("GlobalTimeout") or min(100 * heartbeat, MAX_GLOBAL_TIMEOUT))
    return LifecycleHook(group, str(hook["LifecycleHookName"]), heartbeat, limit)


class Lifecycle:
    """This instance's terminating hook, found once per response and shared by its parts."""

    def __init__(self, clients: AwsClients, settings: AutoscalingSettings) -> None:
        self.clients = clients
        self.settings = settings
        self._lock = threading.Lock()
        self._finding = threading.Lock()
        # By the response's clock itself, held weakly: an entry goes with its response (a
        # response halted before its completion leaves nothing behind), and a later
        # response is never taken for it (as one whose clock got the same id() could be).
        self._found: WeakKeyDictionary[NoticeClock, Optional[LifecycleHook]] = (
            WeakKeyDictionary()
        )
        self._stops: WeakKeyDictionary[NoticeClock, threading.Event] = WeakKeyDictionary()

    def hook(self, ctx: StepContext) -> Optional[LifecycleHook]:
        """The hook (None: there is none, logged once); asked once per response."""
        key = ctx.clock
        with self._finding:  # the heartbeats and the completion ask at once: look up once
            with self._lock:
                if key in self._found:
                    return self._found[key]
            return self._find(ctx, key)

    def _find(self, ctx: StepContext, key: NoticeClock) -> Optional[LifecycleHook]:
        try:
            found: Optional[LifecycleHook] = find_hook(
                self.clients.bounded(ctx.clock.time_left),
                ctx.instance_id,
                self.settings.lifecycle_hook,
            )
            emit(log, logging.INFO, "asg-hook", f"Auto Scaling: {found}")
        except NoHook as none:
            emit(log, logging.WARNING, "asg-no-hook", str(none))
            found = None
        except api_errors() as failure:
            emit(
                log,
                logging.ERROR,
                "asg-failed",
                f"finding the lifecycle hook: {describe_error(failure)}",
            )
            found = None
        with self._lock:
            self._found[key] = found
        return found

    def stop_event(self, ctx: StepContext) -> threading.Event:
        with self._lock:
            return self._stops.setdefault(ctx.clock, threading.Event())

    def forget(self, ctx: StepContext) -> None:
        with self._lock:
            self._found.pop(ctx.clock, None)
            self._stops.pop(ctx.clock, None)

    def call(self, operation: str, ctx: StepContext, hook: LifecycleHook, **extra: str) -> None:
        """RecordLifecycleActionHeartbeat or CompleteLifecycleAction for this instance, bounded
        by the time left (throttling retried while it allows)."""
        self.clients.bounded(ctx.clock.time_left).autoscaling(
            operation,
            AutoScalingGroupName=hook.group,
            LifecycleHookName=hook.name,
            InstanceId=ctx.instance_id,
            **extra,
        )


class HeartbeatKeeper:
    """A response listener: heartbeats while a response that ends in the lifecycle action runs."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    def response_started(self, response: Response) -> None:
        if response.plan.find(COMPLETE_STEP) is None:
            return
        threading.Thread(
            target=self._keep, args=(response,), name=f"heartbeat:{response.key}", daemon=True
        ).start()

    def journal(self, response: Response) -> Optional[StepJournal]:
        return None

    def _keep(self, response: Response) -> None:
        ctx = response.ctx
        hook = self.lifecycle.hook(ctx)
        if hook is None:
            return
        cap_deadline(ctx, hook, self.lifecycle.settings.budget)
        stop = self.lifecycle.stop_event(ctx)
        beats = failures = 0
        while not stop.wait(hook.heartbeat_every):
            if response.ended.is_set() or ctx.cancel.is_set() or ctx.clock.time_left() <= 0:
                break
            if ctx.dry_run:
                emit(
                    log,
                    logging.INFO,
                    "asg-would-heartbeat",
                    f"would RecordLifecycleActionHeartbeat for {hook}",
                )
                continue
            try:
                self.lifecycle.call("record_lifecycle_action_heartbeat", ctx, hook)
                beats += 1
            except api_errors() as failure:
                failures += 1
                if failures == 1:  # the same failure every few seconds is one log line
                    emit(
                        log,
                        logging.WARNING,
                        "asg-heartbeat-failed",
                        f"RecordLifecycleActionHeartbeat: {describe_error(failure)}",
                    )
        emit(log, logging.DEBUG, "asg-heartbeats", f"{beats} heartbeats, {failures} failed")


def cap_deadline(ctx: StepContext, hook: LifecycleHook, budget: float) -> None:
    """The group waits at most the hook's global timeout from when termination began (about
    when it was first seen): the deadline never lies beyond it."""
    notice = ctx.notice
    if notice.signal != SOURCE_TARGET_LIFECYCLE_STATE or budget <= hook.global_timeout:
        return
    latest = notice.epoch - budget + hook.global_timeout
    moment = datetime.fromtimestamp(int(latest), timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    ctx.clock.update(replace(notice, time=moment, time_text=text))


class CompleteStep(Step):
    """Heartbeats end; CompleteLifecycleAction CONTINUE (with `autoscaling.complete`)."""

    kind = "autoscaling"

    def __init__(self, lifecycle: Lifecycle, complete: bool) -> None:
        super().__init__(COMPLETE_STEP)
        self.lifecycle = lifecycle
        self.complete = complete

    def run(self, ctx: StepContext) -> StepOutcome:
        self.lifecycle.stop_event(ctx).set()
        hook = self.lifecycle.hook(ctx)
        self.lifecycle.forget(ctx)
        if hook is None:
            return StepOutcome(OK, "no terminating lifecycle hook: nothing to complete")
        if not self.complete:
            return StepOutcome(OK, f"autoscaling.complete is false: {hook} runs out by itself")
        if ctx.dry_run:
            emit(
                log,
                logging.INFO,
                "asg-would-complete",
                f"would CompleteLifecycleAction CONTINUE for {hook}",
            )
            return StepOutcome(OK, "dry run: would complete the lifecycle action")
        try:
            self.lifecycle.call(
                "complete_lifecycle_action", ctx, hook, LifecycleActionResult="CONTINUE"
            )
        except api_errors() as failure:
            detail = f"CompleteLifecycleAction: {describe_error(failure)}"
            emit(log, logging.ERROR, "asg-failed", detail)
            return StepOutcome(FAILED, detail)
        emit(log, logging.INFO, "asg-completed", f"completed the lifecycle action of {hook}")
        return StepOutcome(OK, f"CompleteLifecycleAction CONTINUE ({hook})")


def is_asg_termination(notice: Notice) -> bool:
    return notice.signal == SOURCE_TARGET_LIFECYCLE_STATE and notice.action == "terminate"


class AutoscalingResponse:
    """The lifecycle parts of a response, per the config in force when the notice comes."""

    def __init__(self, clients: AwsClients, settings: AutoscalingSettings) -> None:
        self.lifecycle = Lifecycle(clients, settings)
        self.keeper = HeartbeatKeeper(self.lifecycle)

    def finale(self, notice: Notice, config: Config) -> List[Step]:
        self.lifecycle.settings = config.autoscaling
        if not is_asg_termination(notice):
            return []
        return [CompleteStep(self.lifecycle, config.autoscaling.complete)]
