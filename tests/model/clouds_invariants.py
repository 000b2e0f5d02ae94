"""The invariants on Google Cloud and Azure, for one played sequence.

Every hook invariant of the AWS model holds as it is (contract_invariants.py: each end seen
twice gets its hooks, once per end, by order, with the environment §4 and §10 give; a
canceled response absorbs nothing), and so do the `status` and process ones
(contract_aws.StatusChecks). On top, what only these clouds promise:

- `nothing-asks-aws`: no AWS API call and no request to the AWS instance metadata service,
  whatever the config says (§10: the AWS-only parts are off there).
- `hook-cloud`: every hook gets SPOTWATCH_CLOUD, the cloud it runs on (§10).
- `metadata-read-only`: on Google, the daemon only reads the metadata server.
- `ack-only-when-asked`: no StartRequests in a dry run or with `azure.acknowledge: false`.
- `ack-after-response`: StartRequests only for an event the daemon responded to, after every
  hook of its end ended, never for a canceled one (§10, docs/azure.md).
- `ack-follows-response`: with `azure.acknowledge`, an event's response that ran its hooks
  while the event was still Scheduled is followed by its StartRequests.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from clouds_driver import CloudTrace
from clouds_model import interpret
from clouds_signals import CloudSettings
from contract_invariants import KILL_SLACK, SLACK, Checker, Violation
from contract_model import End, Model, Response
from contract_status import StatusChecks
from model_trace import HookRun

ACK_WITHIN = 3.0  # seconds after the last hook of its end ends: the finale step is next
ACK_BUDGET = 10.0  # the StartRequests step's own budget, retries included (a failing service)
FAULTS = ("fault-503", "outage", "slow", "cut")


SECOND_SIGTERM = 0.3  # the driver's second SIGTERM comes this long after the first
SPAWN = 0.5  # a hook spawned just before a kill -9 notes its start this much later at most


class CloudChecker(Checker):
    def cut(self, run: HookRun, end: End) -> bool:
        """Also a run that ended as a second SIGTERM cut the wait short (§4): the daemon may
        have given it up (`interrupted`) just as it exited 0, and a restart runs it again; and
        a run spawned just before a kill -9 (its start line comes after the kill)."""
        twice = [e.t + SECOND_SIGTERM for e in self.trace.events if e.kind == "sigterm-twice"]
        ended = run.ended
        spawned_as_killed = any(k <= run.started <= k + SPAWN for k in self.kills)
        return (
            super().cut(run, end)
            or spawned_as_killed
            or any(
                ended is not None and run.started <= t and abs(ended - t) <= KILL_SLACK
                for t in twice
            )
        )


class CloudStatusChecks(StatusChecks):
    """`status` and the process, judged by when each run was ready: a Google watch reads the
    values before the poll loop (and its SIGTERM handler) runs, so an answer is no proof."""

    trace: CloudTrace  # its answers are no Spot poll's: readiness is CloudTrace.ready

    def run(self) -> None:
        super().run()
        for index, life in enumerate(self.trace.lifetimes):
            ready = self.trace.ready.get(index, False)
            if life.how == "sigterm" and ready and life.exit_code != 0:
                self.c.flag("sigterm-exits-0", f"exit status {life.exit_code}")

    def shot(self, moment: float, after: str, doc: Optional[Any]) -> None:
        if after == "sigterm" and not self.ready_before(moment):
            after = "checkpoint"  # stopped before it was ready: what it left is an earlier run's
        super().shot(moment, after, doc)

    def ready_before(self, moment: float) -> bool:
        ended = [
            i for i, life in enumerate(self.trace.lifetimes) if life.ended and life.ended <= moment
        ]
        return bool(ended) and self.trace.ready.get(ended[-1], False)


class CloudChecks:
    def __init__(self, checker: Checker, trace: CloudTrace, settings: CloudSettings) -> None:
        self.c, self.trace, self.settings = checker, trace, settings

    def run(self) -> None:
        for call in self.trace.calls:
            self.c.flag("nothing-asks-aws", f"{call.operation} at {self.c.at(call.t)}")
        for run in self.trace.hooks:
            if run.env.get("SPOTWATCH_CLOUD") != self.settings.cloud:
                told = run.env.get("SPOTWATCH_CLOUD")
                self.c.flag("hook-cloud", f"hook {run.name} at {self.c.at(run.started)}: {told!r}")
        for write in self.trace.metadata_writes:
            self.c.flag("metadata-read-only", write)
        if self.settings.cloud == "azure":
            self.approvals()
            self.owed()

    def responses_of(self, event: str) -> List[Response]:
        return [
            r
            for r in self.c.model.responses
            if r.notice.event_id == event and r.action != "cancel" and r.started is not None
        ]

    def approvals(self) -> None:
        asked = self.settings.acknowledge and not self.settings.dry_run
        for t, event in self.trace.approvals:
            if not asked:
                self.c.flag("ack-only-when-asked", f"StartRequests for {event} at {self.c.at(t)}")
                continue
            responses = [r for r in self.responses_of(event) if (r.started or 0.0) <= t + SLACK]
            if not responses:
                self.c.flag(
                    "ack-after-response",
                    f"StartRequests for {event} at {self.c.at(t)}: no response to it had started",
                )
                continue
            for response in responses:
                if response.halt_why == "canceled" and (response.halted or 0.0) < t - SLACK:
                    self.c.flag(
                        "ack-after-response",
                        f"StartRequests for {event} at {self.c.at(t)}, canceled at "
                        f"{self.c.at(response.halted)}",
                    )
                members = response.end.ever if response.end is not None else [response]
                for run in self.c.runs_of(members):
                    if run.started < t and (run.ended is None or run.ended > t + 0.05):
                        self.c.flag(
                            "ack-after-response",
                            f"StartRequests for {event} at {self.c.at(t)} while hook {run.name} "
                            f"(started {self.c.at(run.started)}) ran",
                        )

    def owed(self) -> None:
        if not self.settings.acknowledge or self.settings.dry_run:
            return
        for response in self.c.model.responses:
            end, event = response.end, response.notice.event_id
            if not event or response.action == "cancel" or end is None or end.root is not response:
                continue
            if response.halted is not None or end.canceled is not None or response.started is None:
                continue
            hooks = self.settings.hooks_for(response.action)
            if not hooks or not all(self.c.must_run(end, hook) for hook in hooks):
                continue
            runs = self.c.runs_of(end.ever)
            if not runs or any(run.ended is None for run in runs):
                continue
            last = max(run.ended or 0.0 for run in runs)
            within = ACK_WITHIN + (ACK_BUDGET if self.faults_near(last) else 0.0)
            still_scheduled = self.trace.started_when.get(event, float("inf")) > last + SLACK
            if not (still_scheduled and self.trace.up(response.started, last + within)):
                continue
            if not any(e == event and t <= last + within for t, e in self.trace.approvals):
                self.c.flag(
                    "ack-follows-response",
                    f"{response.key}: its hooks ended at {self.c.at(last)}, event {event} still "
                    f"Scheduled, no StartRequests within {within:g} s",
                )

    def faults_near(self, moment: float) -> bool:
        """Did the metadata service fail around `moment`? (The POST is then retried within
        the step's budget.)"""
        return any(
            e.kind in FAULTS and moment - 15.0 <= e.t <= moment + ACK_WITHIN
            for e in self.trace.events
        )


def check(trace: CloudTrace, settings: CloudSettings) -> Tuple[Model, List[Violation]]:
    """Every invariant over one sequence played on Google Cloud or Azure."""
    model = interpret(trace, settings)
    checker = CloudChecker(trace, settings, model)
    checker.attribute()
    checker.hooks()
    checker.environment()
    CloudChecks(checker, trace, settings).run()
    CloudStatusChecks(checker).run()
    return model, checker.found
