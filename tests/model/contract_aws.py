"""The invariants on AWS calls (§4, §7), and the runtime's (`StopContainer`), for one
played sequence; hooks are contract_invariants.py's, `status --json` and the process
contract_status.py's, §8 and §9 contract_shutdown.py's; `check` runs them all.

AWS calls carry no response id, so each promise is stated on a time window the model can
vouch for (a response's start and the prelude's hold, a cancel and the end of the
sequence), or conditionally on what the calls show (a cancel puts back ACTIVE only if
spotwatch drained the instance for the canceled response).
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

from contract_invariants import SLACK, Checker, Violation
from contract_model import End, Model, Response
from contract_shutdown import ShutdownChecks
from contract_signals import DRAIN_HOLD, ENDS_THE_BOOT, MUTATING, Settings, applies
from contract_status import StatusChecks
from model_trace import AwsCall, Trace
from model_world import HEARTBEAT_TIMEOUT


def named(call: AwsCall) -> str:
    if call.operation == "UpdateContainerInstancesState":
        return f"UpdateContainerInstancesState:{call.params.get('status')}"
    return call.operation


class AwsChecks:
    def __init__(self, checker: Checker) -> None:
        self.c = checker
        self.trace, self.settings, self.model = checker.trace, checker.settings, checker.model
        self.calls = [c for c in self.trace.calls if c.params.get("DryRun") != "true"]

    def attempts(self, name: str, start: float = 0.0, end: float = float("inf")) -> List[AwsCall]:
        return [c for c in self.calls if named(c) == name and start <= c.t <= end]

    def ok(self, name: str, start: float = 0.0, end: float = float("inf")) -> List[AwsCall]:
        return [c for c in self.attempts(name, start, end) if c.ok]

    def throttled_near(self, moment: float) -> bool:
        throttled = any(c.throttled and moment - 1 <= c.t <= moment + 10 for c in self.calls)
        return throttled or self.c.aws_slow_near(moment)

    def first_window(
        self, response: Response, span: float, until_end: bool = False
    ) -> Optional[float]:
        """The first moment the response (re)started after which the daemon ran `span` s (or
        to the end) with nothing halting it: its steps were then surely begun."""
        if response.uncertain or response.sightings < 2 or response.started is None:
            return None
        for start in self.c.windows(response):
            end = self.trace.ended if until_end else start + span
            if self.trace.up(start, end) and (response.halted is None or response.halted > end):
                return start
        return None

    def run(self) -> None:
        self.dry_run_and_ids()
        self.prelude()
        self.lifecycle()
        self.instance_actions()
        self.undo()
        self.ecs_stops()

    def dry_run_and_ids(self) -> None:
        for call in self.calls:
            if self.settings.dry_run and call.operation in MUTATING:
                self.c.flag("no-mutation-in-dry-run", f"{named(call)} at {self.c.at(call.t)}")
            for key, value in call.params.items():
                if (
                    ("InstanceId" in key or key.startswith("Targets.member"))
                    and key.endswith(("Id", "InstanceId"))
                    and str(value).startswith(("i-", "unknown"))
                    and value != self.trace.instance_id
                ):
                    self.c.flag("instance-id", f"{named(call)} named {value!r}")

    def registered_at(self, moment: float, add: str, remove: str) -> bool:
        """Is the instance registered (as far as the calls tell) at `moment`? It starts
        registered; DetachInstances takes it out of its group's load balancers too."""
        state = True
        for call in self.calls:
            if call.t < moment and call.ok and call.operation in (add, remove, "DetachInstances"):
                state = call.operation == add
        return state

    def prelude(self) -> None:
        """§4 0-1: at once, drain and deregistration; the hooks wait for them only so long."""
        if self.settings.dry_run:
            return
        for end in self.model.ends:
            root = end.root
            span = DRAIN_HOLD + SLACK  # "at once": surely before the hooks' longest wait for it
            start = root.started
            if self.first_window(root, span) != start or start is None:
                continue  # not begun in one go: after a restart, what was done is not redone
            if end.canceled is not None and end.canceled < start + span:
                continue
            if end.transferred is not None:
                continue  # what the canceled one had done counts (§7): no promise of a repeat
            if self.c.deadline(root, start) < start + span:
                continue  # every call is bounded by the time left (§2): none may be left
            span += 5.0 if self.throttled_near(start) else 0.0
            expected = []
            if applies("drain", root.action, self.settings):
                expected.append("UpdateContainerInstancesState:DRAINING")
            if applies("deregister", root.action, self.settings):
                expected.append("DeregisterInstancesFromLoadBalancer")
                detaching = self.attempts("DetachInstances", start - SLACK, start + span)
                registered = self.registered_at(start, "RegisterTargets", "DeregisterTargets")
                if registered and not detaching:  # a detach may take it out first
                    expected.append("DeregisterTargets")
            for name in expected:
                if not self.attempts(name, start - SLACK, start + span):
                    self.c.flag(
                        "prelude-at-once",
                        f"no {name} within {span:.1f} s of the {root.action} response "
                        f"{root.key} starting at {self.c.at(start)}",
                    )
            detaching = self.settings.detach and root.signal.detaches
            if detaching and not self.attempts("DetachInstances", start - SLACK, start + span):
                self.c.flag("detach", f"no DetachInstances for {root.key}")
        self.detach_rules()
        budget = sum(1 for e in self.model.ends if applies("drain", e.action, self.settings))
        budget += sum(1 for e in self.model.ends if e.transferred) + len(self.c.kills)
        drains = self.ok("UpdateContainerInstancesState:DRAINING")
        if len(drains) > budget + sum(1 for life in self.trace.lifetimes if life.how):
            self.c.flag("once-per-end", f"{len(drains)} DRAINING calls for {budget} ends")

    def detach_rules(self) -> None:
        for call in self.attempts("DetachInstances"):
            if not self.settings.detach:
                self.c.flag(
                    "detach", f"DetachInstances at {self.c.at(call.t)} without autoscaling.detach"
                )
            group = [r for r in self.model.responses if r.signal.name == "autoscaling"]
            if any(r.started is not None and r.started < call.t - SLACK for r in group):
                self.c.flag(
                    "detach", f"DetachInstances at {self.c.at(call.t)}: the group already ends it"
                )

    def lifecycle(self) -> None:
        """§7 Auto Scaling: heartbeats while the response runs; completion once it is done:
        after the hooks of its end, after the tasks stopped (lastStatus)."""
        group = [r for r in self.model.responses if r.signal.name == "autoscaling" and r.started]
        completes = self.attempts("CompleteLifecycleAction")
        if len([c for c in completes if c.ok]) > len(group) + len(self.c.kills):
            self.c.flag("once-per-end", f"{len(completes)} CompleteLifecycleAction calls")
        for response in group:
            assert response.started is not None
            deadline = self.c.deadline(response, response.started)
            start = self.first_window(response, deadline + 3 - response.started)
            done = [c for c in completes if c.t >= response.started - SLACK]
            if start is not None and not self.settings.dry_run and not any(c.ok for c in done):
                self.c.flag("lifecycle-complete", f"{response.key}: never completed")
            if not done:
                continue
            first = done[0]
            end = response.end
            runs = self.c.runs_of(end.ever) if end is not None else []
            late = [r for r in runs if r.ended is None or r.ended > first.t + 0.05]
            if late and not (end is not None and end.uncertain):
                self.c.flag(
                    "complete-after-hooks",
                    f"CompleteLifecycleAction at {self.c.at(first.t)} while hook "
                    f"{late[0].name} of its end ran until {self.c.at(late[0].ended)}",
                )
            if end is not None and end.root is not response and self.settings.ecs:
                # Joined (§7): its own steps come after the response it joined has ended,
                # which ends no sooner than its ECS final stop.
                final = self.c.deadline(end.root, first.t) - self.settings.stop_timeout
                if first.t < final - SLACK and end.root.halted is None:
                    self.c.flag(
                        "complete-after-hooks",
                        f"CompleteLifecycleAction at {self.c.at(first.t)} before the response "
                        f"it joined ({end.root.key}) ended: final stop due {self.c.at(final)}",
                    )
            # §7: the final stop at the deadline - stop_timeout, or as soon as no task is
            # left running (lastStatus STOPPED), whichever is first; then it completes.
            told = [t for t in self.trace.task_stops if response.started - SLACK <= t <= first.t]
            final = self.c.deadline(response, first.t) - self.settings.stop_timeout
            delay = self.settings.task_stop_delay
            if told and first.t < final - SLACK and first.t < told[-1] + delay - 0.3:
                self.c.flag(
                    "complete-after-tasks-stopped",
                    f"CompleteLifecycleAction at {self.c.at(first.t)}, {first.t - told[-1]:.2f} s "
                    f"after a task was told to stop (it runs {delay:g} s more; final stop due "
                    f"{self.c.at(final)})",
                )
            # Through the runtime (§4): a task counts as stopped when its containers exited.
            window = self.attempts("StopContainer", response.started - SLACK, first.t)
            running = [c for c in window if (c.params.get("exited") or 1e12) > first.t + 0.05]
            if running and first.t < final - SLACK:
                self.c.flag(
                    "complete-after-tasks-stopped",
                    f"CompleteLifecycleAction at {self.c.at(first.t)} while the container of "
                    f"task {running[0].params.get('task')} (told to stop at "
                    f"{self.c.at(running[0].t)}) still ran",
                )
            if start is not None and self.trace.up(response.started, first.t):
                self.heartbeats(response.started, first.t)

    def heartbeats(self, start: float, end: float) -> None:
        if self.settings.dry_run:
            return
        beats = [c.t for c in self.attempts("RecordLifecycleActionHeartbeat", start, end)]
        moments = [start, *beats, end]
        gaps = [b - a for a, b in zip(moments, moments[1:])]
        if gaps and max(gaps) > HEARTBEAT_TIMEOUT + SLACK:
            self.c.flag("heartbeats", f"{max(gaps):.1f} s without a heartbeat while responding")

    def instance_actions(self) -> None:
        """§4 step 5: once every step is done, and only while the notice still shows."""
        calls = self.attempts("StopInstances") + self.attempts("TerminateInstances")
        window = 2 * self.settings.poll + 0.75
        for call in calls:
            seen = [
                a
                for a in self.trace.answers
                if a.signal in ("spot", "rebalance")
                and a.shown
                and call.t - window <= a.t <= call.t
            ]
            if not seen:
                self.c.flag("never-end-unconfirmed", f"{named(call)} at {self.c.at(call.t)}")
        owed = [
            r for r in self.model.responses if r.signal.ends_instance and r.action != "hibernate"
        ]
        owed = owed if self.settings.after_response != "none" else []
        if self.settings.after_rebalance != "none":
            owed += self.model.of("rebalance")
        for response in owed:
            start = self.first_window(response, 0.0, until_end=True)
            if start is None or response.withdrawn is not None or self.settings.dry_run:
                continue
            after = [c for c in calls if c.t >= start]
            if not any(c.ok for c in after):
                self.c.flag("instance-action", f"{response.key}: no instance action")
                continue
            end = response.end
            runs = self.c.runs_of(end.ever if end is not None else [response])
            late = [r for r in runs if r.started < after[0].t and (r.ended or 0) > after[0].t]
            if late:
                self.c.flag("instance-action", f"{named(after[0])} while hook {late[0].name} ran")
        if len([c for c in calls if c.ok]) > len(owed) + len(self.c.kills):
            self.c.flag("instance-action", f"{len(calls)} instance actions for {len(owed)} notices")

    def undo(self) -> None:
        """§7 Cancel, Start after a stop: what spotwatch changed is put back."""
        if self.settings.dry_run:
            return
        pairs = (
            ("UpdateContainerInstancesState:ACTIVE", "UpdateContainerInstancesState:DRAINING"),
            ("RegisterTargets", "DeregisterTargets"),
            ("RegisterInstancesWithLoadBalancer", "DeregisterInstancesFromLoadBalancer"),
        )
        for response in self.model.of("cancel") + self.model.of("start"):
            if (
                response.uncertain
                or response.started is None
                or not self.trace.up(response.started, response.started + 2)
            ):
                continue
            for back, away in pairs:
                # Throttling is retried while time allows (§2): an answered call, not a try.
                if self.changed_for(response, back, away) and not self.ok(back, response.started):
                    self.c.flag(
                        "put-back-after-cancel-or-start",
                        f"{response.key} at {self.c.at(response.started)}: no {back} after "
                        f"spotwatch's {away}",
                    )
        for call in self.ok("UpdateContainerInstancesState:ACTIVE"):
            standing = [e for e in self.model.ends if self.stands(e.root, call.t)]
            if standing:
                self.c.flag(
                    "no-active-while-end-stands",
                    f"ACTIVE at {self.c.at(call.t)} while {standing[0].root.key} stands",
                )

    def stands(self, root: Response, moment: float) -> bool:
        end = root.end
        if root.started is None or root.started > moment - SLACK or end is None:
            return False
        if not applies("drain", root.action, self.settings) or not end.live_at(moment):
            return False
        if root.boot != self.trace.boot_of(moment) or root.uncertain:
            return False
        # Only a cancel of this end (or a start, on a later boot) puts back what it changed:
        # another end's cancel leaves it drained (§7).
        undo = [
            c for c in self.model.of("cancel") if c.undo_of is not None and c.undo_of.end is end
        ]
        return not any(u.started and root.started <= u.started <= moment + SLACK for u in undo)

    def changed_for(self, response: Response, back: str, away: str) -> bool:
        """Did spotwatch change what `back` puts back, for the response this one undoes?"""
        assert response.started is not None
        if response.action == "cancel":
            canceled = response.undo_of
            if canceled is None or canceled.started is None or canceled.joined is not None:
                return False
            end = canceled.end
            step = "drain" if "Container" in away else "deregister"
            if end is None or end.transferred or not applies(step, canceled.action, self.settings):
                return False  # the end goes on (another signal had joined it), or no such step
            others = [e for e in self.model.ends if e is not end]
            if any(self.stands(e.root, response.started) for e in others):
                return False  # another end drained it and stands: it stays drained (§7)
            span = 2.0 + 4 * self.settings.poll
            span += 5.0 if self.throttled_near(canceled.started) else 0.0
            return bool(self.ok(away, canceled.started - SLACK, canceled.started + span))
        last = [
            c for c in self.calls if c.ok and c.t < response.started and named(c) in (back, away)
        ]
        if not last or named(last[-1]) != away:
            return False
        # The start puts back what the response to the stop or reboot changed (§7).
        span = DRAIN_HOLD + SLACK
        return any(
            self.ok(away, r.started - SLACK, r.started + span)
            for r in self.model.responses
            if r.boot == response.boot - 1
            and r.action in ENDS_THE_BOOT
            and r.started is not None
            and r.joined is None
        )

    def ecs_stops(self) -> None:
        """§4 3-4: StopTask after the hooks, or at the final stop's moment; with
        `ecs.stop_via: runtime` the same promise for each container stopped through the
        runtime, and no StopTask at all (nothing in this world needs one)."""
        for call in self.ok("StopTask"):
            # The reason names the end (`ecs.stop_reason`: "... {action} at {time}").
            reason = str(call.params.get("reason", ""))
            self.stop_in_a_response(call, lambda e, r=reason: f" {e.action} at " in r)
            if self.settings.stop_via == "runtime":
                self.c.flag(
                    "ecs-stop-via-runtime",
                    f"StopTask at {self.c.at(call.t)} though ecs.stop_via is runtime",
                )
        for call in self.attempts("StopContainer"):
            self.stop_in_a_response(call, lambda e: applies("ecs-stop", e.action, self.settings))

    def stop_in_a_response(self, call: AwsCall, names: Callable[[End], bool]) -> None:
        ends = [
            e
            for e in self.model.ends
            if e.began <= call.t and e.root.boot == self.trace.boot_of(call.t) and names(e)
        ]
        if not ends:
            self.c.flag("ecs-stop-in-a-response", f"{named(call)} at {self.c.at(call.t)}")
            return
        end = ends[-1]
        final = self.c.deadline(end.root, call.t) - self.settings.stop_timeout
        running = [
            r
            for r in self.c.runs_of(end.ever)
            if r.started < call.t and (r.ended is None or r.ended > call.t + 0.05)
        ]
        if running and call.t < final - SLACK:
            self.c.flag(
                "ecs-stop-after-hooks",
                f"{named(call)} at {self.c.at(call.t)} while hook {running[0].name} ran "
                f"(final stop due {self.c.at(final)})",
            )


def check(trace: Trace, settings: Settings) -> Tuple[Model, List[Violation]]:
    """Every invariant over one played sequence: the model and what broke it."""
    checker = Checker(trace, settings)
    checker.attribute()
    checker.hooks()
    checker.environment()
    AwsChecks(checker).run()
    StatusChecks(checker).run()
    ShutdownChecks(checker).run()
    return checker.model, checker.found
