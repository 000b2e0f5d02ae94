"""The invariants: what the contract promises about hooks, checked against one played
sequence (AWS calls and `status`: contract_aws.py). Each finding is a `Violation` naming
its invariant; `check` gathers them all.

Hook runs are attributed to responses by what the contract gives every hook
(SPOTWATCH_ACTION, _SOURCE, _EVENT_ID) and by time; a run nobody owes is a finding too.
Where timing decides and the contract gives only bounds (a notice seen once, a halt while
the prelude may still hold the hooks back, a kill while a hook ran), the model asks for
nothing and allows what may have happened, never more.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from contract_model import End, Model, Response, interpret
from contract_signals import PER_HOOK, Hook, Settings
from model_trace import HookRun, Trace

SLACK = 1.0  # seconds: a step recorded, a process started, a poll answered
KILL_SLACK = 1.0  # a hook that ended this close to a kill -9 may not have been recorded
# Notice times spotwatch reckons itself, to the second, from a moment it saw (the group's
# first sighting + budget, §7; a shutdown's announcement + budget, §8): ±1 s of the model's.
RECKONED = ("first-seen+budget", "announced+budget")


@dataclass(frozen=True)
class Violation:
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.detail}"


def iso_epoch(text: str) -> Optional[float]:
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


def stamp(moment: float, origin: float) -> str:
    return f"+{moment - origin:.2f}s"


class Checker:
    def __init__(self, trace: Trace, settings: Settings, model: Optional[Model] = None) -> None:
        self.trace, self.settings = trace, settings
        self.model: Model = model if model is not None else interpret(trace, settings)
        self.found: List[Violation] = []
        self.origin = trace.events[0].t if trace.events else 0.0
        self.owner: Dict[int, Response] = {}
        self.kills = [life.ended for life in trace.lifetimes if life.how == "kill" and life.ended]

    def flag(self, invariant: str, detail: str) -> None:
        self.found.append(Violation(invariant, detail))

    def at(self, moment: Optional[float]) -> str:
        return "never" if moment is None else stamp(moment, self.origin)

    # ------------------------------------------------------------------ attribution

    def attribute(self) -> None:
        for index, run in enumerate(self.trace.hooks):
            owner = self.owner_of(run)
            if owner is None:
                self.flag(
                    "no-unowed-hook",
                    f"hook {run.name} ran at {self.at(run.started)} for {run.action} from "
                    f"{run.source} ({run.env.get('SPOTWATCH_EVENT_ID', '')}): no notice the "
                    "contract knows asked for it",
                )
            else:
                self.owner[index] = owner

    def owner_of(self, run: HookRun) -> Optional[Response]:
        boot = self.trace.boot_of(run.started)
        event = run.env.get("SPOTWATCH_EVENT_ID", "")
        candidates = [
            r
            for r in self.model.responses
            if r.action == run.action
            and r.boot == boot
            and r.started is not None
            and r.started <= run.started + SLACK
            and (not event or r.notice.event_id == event)
            and r.source == run.source
        ]
        return max(candidates, key=lambda r: r.started or 0.0, default=None)

    def runs_of(self, responses: Sequence[Response], hook: Optional[str] = None) -> List[HookRun]:
        wanted = {id(r) for r in responses}
        return [
            run
            for index, run in enumerate(self.trace.hooks)
            if id(self.owner.get(index)) in wanted and (hook is None or run.name == hook)
        ]

    # ------------------------------------------------------------------ windows

    def deadline(self, response: Response, moment: float) -> float:
        """§4/§7: notice time - margin; one end: the earliest of its notices' (joined by then)."""
        margin = self.settings.margin
        if response.action == "hibernate":
            return (response.started or moment) + self.settings.hibernate_budget
        if response.action in PER_HOOK:
            return float("inf")
        members = response.end.ever if response.end is not None else [response]
        joined = [
            m
            for m in {id(m): m for m in [*members, response]}.values()
            if m.started is not None
            and m.started <= moment
            and (m.halt_why != "canceled" or (m.halted or 0.0) > moment)
        ]
        return min(m.epoch_at(moment) for m in joined or [response]) - margin

    def due(self, response: Response, hook: Hook, start: float) -> float:
        """By when, at the latest, `hook` starts in a response (re)started at `start`."""
        throttled = self.aws_slow_near(start)
        hold = self.settings.hold(throttled) if response.action not in PER_HOOK else 1.5
        earlier = {h.order: h.seconds for h in self.settings.hooks_for(response.action)}
        stages = sorted(o for o in earlier if o < hook.order)
        return start + hold + sum(earlier[o] + SLACK for o in stages)

    def aws_slow_near(self, moment: float) -> bool:
        """Was AWS told to throttle or hang around `moment`? (The drain then may hold the
        hooks back its whole 5 s.)"""
        slow = ("throttle", "hang")
        return any(e.kind in slow and moment - 10 <= e.t <= moment + 5 for e in self.trace.events)

    def windows(self, response: Response) -> List[float]:
        """Moments the response (re)started: its start, and each restart on its boot after
        which a poll showed its notice again (§3: a restart finishes what is not done)."""
        start = response.started
        if start is None:
            return []
        found = [start]
        if response.end is not None and response.end.transferred is not None:
            found = [response.end.transferred]
        for life in self.trace.lifetimes:
            if life.boot != response.boot or life.started <= found[0]:
                continue
            seen = [t for t, _, _ in response.shown if t >= life.started]
            if seen:
                found.append(seen[0])
        return found

    def must_run(self, end: End, hook: Hook) -> bool:
        """§3, §7: every end seen for 2 polls gets its hooks, once the daemon had the time."""
        root = end.root
        if root.uncertain or any(m.uncertain for m in end.members) or root.sightings < 2:
            return False
        for start in self.windows(root):
            due = self.due(root, hook, start)
            halted = [m for m in (root.halted, end.canceled) if m is not None]
            if (
                self.trace.up(start, due)
                and all(h > due for h in halted)
                and self.deadline(root, start) > due
            ):
                return True
        return False

    # ------------------------------------------------------------------ invariants

    def hooks(self) -> None:
        for end in self.model.ends:
            members = end.ever
            for hook in self.settings.hooks_for(end.action):
                runs = self.runs_of(members, hook.name)
                allowed = 1 + sum(1 for run in runs if self.cut(run, end))
                if len(runs) > allowed and not end.uncertain:
                    self.flag(
                        "once-per-end",
                        f"hook {hook.name} ran {len(runs)} times for one {end.action} end "
                        f"({', '.join(m.key for m in members)}) at "
                        f"{', '.join(self.at(r.started) for r in runs)}",
                    )
                if not runs and self.must_run(end, hook):
                    self.flag(
                        self.why_missing(end),
                        f"the {end.action} notice {end.root.key} first seen at "
                        f"{self.at(end.root.first_seen)} ({end.root.sightings} polls) never "
                        f"ran hook {hook.name}",
                    )
            for joiner in end.members:
                if joiner is end.root or joiner.source == end.root.source:
                    continue
                own = [
                    r
                    for r in self.runs_of([joiner])
                    if r.source == joiner.source and not self.rerun(r, end)
                ]
                if own and not joiner.uncertain and not end.uncertain:
                    self.flag(
                        "once-per-end",
                        f"{joiner.key} joined {end.root.key} (one end) yet ran hooks of its "
                        f"own: {', '.join(r.name for r in own)}",
                    )
            self.by_order(end, members)

    def rerun(self, run: HookRun, end: End) -> bool:
        """Is `run` the re-run of a run of the same hook of its end that was cut short (a
        restart finishes it, under whichever of the end's notices it resumes)?"""
        return any(
            earlier.name == run.name and earlier.started < run.started and self.cut(earlier, end)
            for earlier in self.runs_of(end.ever)
        )

    def why_missing(self, end: End) -> str:
        """The invariant an end without its hooks breaks: a canceled response of the same
        end before it absorbed it (§7), or plainly every end seen for 2 polls gets hooks."""
        canceled = [
            e
            for e in self.model.ends
            if e.action == end.action
            and e.canceled is not None
            and e.root.boot == end.root.boot
            and e.canceled <= (end.root.started or 0.0)
        ]
        return "canceled-absorbs-nothing" if canceled else "seen-twice-gets-hooks"

    def cut(self, run: HookRun, end: End) -> bool:
        """May this run have ended unfinished or unrecorded (SIGTERM cut it, a kill -9 came,
        or a cancel handed the end over while it ran)? Then running it again is allowed."""
        if run.stopped:
            return True  # cut short by SIGTERM: not finished, so a restart runs it again
        ends = [*self.kills, *([end.transferred] if end.transferred else [])]
        return any(
            run.started <= k and (run.ended is None or run.ended >= k - KILL_SLACK) for k in ends
        )

    def by_order(self, end: End, members: List[Response]) -> None:
        runs = self.runs_of(members)
        orders = {h.name: h.order for h in self.settings.all_hooks()}
        for later in runs:
            for earlier in runs:
                if orders.get(earlier.name, 0) >= orders.get(later.name, 0):
                    continue
                if earlier.started < later.started and (
                    earlier.ended is None or earlier.ended > later.started + 0.05
                ):
                    self.flag(
                        "hooks-by-order",
                        f"hook {later.name} started at {self.at(later.started)} before hook "
                        f"{earlier.name} (a lower order) ended at {self.at(earlier.ended)}",
                    )

    def environment(self) -> None:
        for index, run in enumerate(self.trace.hooks):
            owner = self.owner.get(index)
            if owner is None:
                continue
            for problem in self.env_problems(run, owner):
                self.flag(
                    "hook-environment", f"hook {run.name} at {self.at(run.started)}: {problem}"
                )

    def env_problems(self, run: HookRun, owner: Response) -> List[str]:
        env, problems = run.env, []
        if env.get("SPOTWATCH_INSTANCE_ID") != self.trace.instance_id:
            problems.append(f"SPOTWATCH_INSTANCE_ID={env.get('SPOTWATCH_INSTANCE_ID')!r}")
        if env.get("SPOTWATCH_DRY_RUN") != ("1" if self.settings.dry_run else "0"):
            problems.append(f"SPOTWATCH_DRY_RUN={env.get('SPOTWATCH_DRY_RUN')!r}")
        told, left = env.get("SPOTWATCH_DEADLINE", ""), env.get("SPOTWATCH_SECONDS_LEFT", "")
        if not (told.lstrip("-").isdigit() and left.isdigit()):
            return [*problems, f"deadline {told!r}, seconds left {left!r}"]
        deadline, seconds = float(told), float(left)
        if abs(seconds - max(0.0, deadline - run.started)) > 1.5:
            problems.append(
                f"SECONDS_LEFT {left} but the deadline is {deadline - run.started:.1f} s away"
            )
        expected = self.expected_deadlines(run, owner)
        members = owner.end.ever if owner.end is not None else [owner]
        if any(m.uncertain for m in members):
            expected = []  # which notices make up its end is itself uncertain
        if expected and not any(abs(deadline - e) <= 1.5 for e in expected):
            shown = ", ".join(self.at(e) for e in sorted(set(expected)))
            problems.append(f"SPOTWATCH_DEADLINE {self.at(deadline)}, expected {shown}")
        problems += self.notice_problems(env, owner)
        return problems

    def expected_deadlines(self, run: HookRun, owner: Response) -> List[float]:
        hook = self.settings.hook(run.name)
        if owner.action in PER_HOOK and hook is not None:
            return [run.started + hook.timeout]  # §4: no deadline of their own
        root = owner.end.root if owner.end is not None else owner
        window = 2 * self.settings.poll + 0.5  # what a poll in flight may not have told yet
        return [self.deadline(root, run.started), self.deadline(root, run.started - window)]

    def notice_problems(self, env: Dict[str, str], owner: Response) -> List[str]:
        problems = []
        text = env.get("SPOTWATCH_NOTICE_TIME", "")
        if owner.signal.timing == "first-seen+budget" and owner.action == "terminate":
            epoch, deadline = iso_epoch(text), float(env.get("SPOTWATCH_DEADLINE", "0"))
            if epoch is None or abs(epoch - self.settings.margin - deadline) > 1.5:
                problems.append(f"NOTICE_TIME {text!r} is not the deadline + deadline_margin")
        else:
            # As IMDS gave it; for one end, any of its notices' (the group's and a shutdown's:
            # reckoned by spotwatch, to the second).
            members = owner.end.ever if owner.end is not None else []
            texts = {t for m in [owner, *members] for _, _, t in m.shown} | {owner.notice.text}
            texts |= set(owner.also_times)
            told = iso_epoch(text)
            group = [m.notice.epoch for m in members if m.signal.timing in RECKONED]
            near = told is not None and any(abs(told - e) <= 1.5 for e in group)
            if text not in texts and not near:
                problems.append(f"NOTICE_TIME {text!r}, the notice said {sorted(texts)}")
        expect = {"SPOTWATCH_SOURCE": owner.source}
        if owner.notice.event_id:
            expect["SPOTWATCH_EVENT_ID"] = owner.notice.event_id
            expect["SPOTWATCH_EVENT_CODE"] = owner.notice.code
        if owner.action == "cancel":
            expect["SPOTWATCH_CANCELED_ACTION"] = owner.canceled_action
        for name, value in expect.items():
            if env.get(name) != value and not (
                name == "SPOTWATCH_SOURCE" and owner.end is not None
            ):
                problems.append(f"{name}={env.get(name)!r}, expected {value!r}")
        return problems
