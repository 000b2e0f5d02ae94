"""The invariants of §8 (logind's delay lock and the shutdown nobody announced) and of §9's
preset hook, for one played sequence.

- `lock-held`: while a daemon polls and no shutdown is under way, it holds logind's delay
  lock (taken at start, taken again when a shutdown is called off);
- `shutdown-release`: after PrepareForShutdown(true) the lock goes once the response it
  waits for (its own `shutdown` response, or the end response already running or ended)
  has ended: never while a hook of that end runs, within moments of its last step, and
  never later than `shutdown.budget`;
- `shutdown-no-instance-action`: a `shutdown` response never stops or terminates the
  instance (§8: "never an instance action");
- `called-off-starts-nothing`: a shutdown called off starts no further hook (§8);
- `preset-gives-up-at-T`: an http preset waits for its answer no longer than the time it is
  given (§9: its timeout capped by the time left); the next order's hooks then go on.
"""

from __future__ import annotations

from typing import Optional

from contract_invariants import SLACK, Checker
from contract_model import LOCK_READY, Shutdown
from contract_signals import PRESET_TIMEOUT
from model_trace import HookRun, LockSpan

RELEASE_SLACK = 2.0  # seconds from a response's last step to the lock's release
CALLED_OFF_SLACK = 1.0  # seconds after PrepareForShutdown(false) to take the lock again
INSTANCE_ENDING = ("StopInstances", "TerminateInstances")


class ShutdownChecks:
    def __init__(self, checker: Checker) -> None:
        self.c, self.trace, self.model = checker, checker.trace, checker.model
        self.settings = checker.settings

    def run(self) -> None:
        if self.trace.logind:
            self.lock_held()
            for shutdown in self.model.shutdowns:
                self.released(shutdown)
        self.no_instance_action()
        self.called_off_starts_nothing()
        self.presets_give_up()

    # ------------------------------------------------------------------ the lock

    def held_at(self, moment: float) -> Optional[LockSpan]:
        return next(
            (
                lock
                for lock in self.trace.locks
                if lock.taken <= moment and (lock.released is None or lock.released >= moment)
            ),
            None,
        )

    def under_way(self, moment: float) -> bool:
        """Is a shutdown announced and not yet called off (plus the moment to take the lock
        again) at `moment`?"""
        boot = self.trace.boot_of(moment)  # a new boot's logind announced nothing yet
        announced = [
            a for a in self.trace.announcements if a.t <= moment and self.trace.boot_of(a.t) == boot
        ]
        return bool(announced) and (
            announced[-1].active or moment < announced[-1].t + CALLED_OFF_SLACK
        )

    def lock_held(self) -> None:
        for life in self.trace.lifetimes:
            until = (life.signalled or life.ended or self.trace.ended) - 0.1
            polls = [
                a.t
                for a in self.trace.answers
                if a.signal == "spot" and life.started + LOCK_READY <= a.t <= until
            ]
            for moment in polls[1:]:  # the first poll may come before the bus answered
                if not self.under_way(moment) and self.held_at(moment) is None:
                    self.c.flag(
                        "lock-held",
                        f"the daemon polled at {self.c.at(moment)} without logind's delay lock "
                        "(no shutdown under way)",
                    )
                    break

    def released(self, shutdown: Shutdown) -> None:
        lock = self.held_at(shutdown.t)
        if shutdown.uncertain or lock is None:
            if lock is None and not shutdown.uncertain:
                told = self.c.at(shutdown.t)
                self.c.flag("lock-held", f"no lock held at the announcement {told}")
            return
        budget = self.settings.shutdown_budget
        release = lock.released
        if shutdown.called_off is not None and (release is None or release > shutdown.called_off):
            return  # called off while held: the lock stays (lock-held checks it)
        if release is None or not self.trace.up(shutdown.t, release):
            if self.trace.up(shutdown.t, shutdown.t + budget + SLACK):
                self.c.flag(
                    "shutdown-release",
                    f"the shutdown announced at {self.c.at(shutdown.t)} was held back longer "
                    f"than shutdown.budget ({budget:g} s)",
                )
            return
        if release > shutdown.t + budget + SLACK:
            self.c.flag(
                "shutdown-release",
                f"lock released {release - shutdown.t:.1f} s after the announcement "
                f"{self.c.at(shutdown.t)}: over shutdown.budget ({budget:g} s)",
            )
        end = shutdown.response.end if shutdown.response is not None else shutdown.waits_for
        runs = self.c.runs_of(end.ever) if end is not None else []
        cut_by_budget = release >= shutdown.t + budget - 0.5
        running = [r for r in runs if r.started <= release and (r.ended or 1e12) > release + 0.05]
        if running and not cut_by_budget:
            self.c.flag(
                "shutdown-release",
                f"lock released at {self.c.at(release)} while hook {running[0].name} of the "
                f"end it holds the shutdown for ran (until {self.c.at(running[0].ended)})",
            )
        steps = [r.ended or r.started for r in runs]
        steps += [c.t for c in self.trace.calls if shutdown.t <= c.t <= release]
        last = max([shutdown.t, *steps])
        if release > last + RELEASE_SLACK:
            self.c.flag(
                "shutdown-release",
                f"lock released at {self.c.at(release)}, {release - last:.1f} s after the last "
                f"step of the response it waited for ({self.c.at(last)})",
            )

    # ------------------------------------------------------------------ the response

    def no_instance_action(self) -> None:
        responses = self.model.responses
        owed = [r for r in responses if r.signal.ends_instance or r.action == "rebalance"]
        for response in self.model.of("shutdown"):
            start = response.started or 0.0
            for call in self.trace.calls:
                if call.operation not in INSTANCE_ENDING or call.params.get("DryRun") == "true":
                    continue
                if not start <= call.t <= start + self.settings.shutdown_budget:
                    continue
                if self.trace.boot_of(call.t) != response.boot:
                    continue  # the shutdown went on: the next boot's notices are their own
                if any(o.boot == response.boot and (o.started or 1e12) < call.t for o in owed):
                    continue  # another notice's instance action (§4 step 5)
                self.c.flag(
                    "shutdown-no-instance-action",
                    f"{call.operation} at {self.c.at(call.t)} during the shutdown response "
                    f"{response.key}",
                )

    def called_off_starts_nothing(self) -> None:
        for response in self.model.of("shutdown"):
            if response.halted is None or response.uncertain:
                continue
            late = [r for r in self.c.runs_of([response]) if r.started > response.halted + SLACK]
            if late:
                self.c.flag(
                    "called-off-starts-nothing",
                    f"hook {late[0].name} started at {self.c.at(late[0].started)}, after the "
                    f"shutdown was called off at {self.c.at(response.halted)}",
                )

    # ------------------------------------------------------------------ §9 preset

    def presets_give_up(self) -> None:
        hook = self.settings.hook("notify")
        if hook is None or not hook.preset:
            return
        orders = {h.name: h.order for h in self.settings.all_hooks()}
        for end in self.model.ends:
            runs = self.c.runs_of(end.ever)
            for preset in [r for r in runs if r.name == hook.name]:
                limit = self.limit(preset)
                later = [
                    r
                    for r in runs
                    if orders.get(r.name, 0) > hook.order and r.started > preset.started
                ]
                given = preset.started + limit + 2 * SLACK
                if later and later[0].started > given and self.trace.up(preset.started, given):
                    self.c.flag(
                        "preset-gives-up-at-T",
                        f"the http preset started at {self.c.at(preset.started)} was given "
                        f"{limit:.1f} s, yet hook {later[0].name} (a higher order) started only "
                        f"at {self.c.at(later[0].started)}",
                    )

    @staticmethod
    def limit(run: HookRun) -> float:
        """The time a preset is given: its timeout capped by the time left (§9)."""
        deadline = run.env.get("SPOTWATCH_DEADLINE", "")
        left = float(deadline) - run.started if deadline.lstrip("-").isdigit() else PRESET_TIMEOUT
        return max(0.0, min(PRESET_TIMEOUT, left))
