"""A preset hook as a step of the response: the same name (`hook:NAME`), kind, time limit,
log lines and record as a command hook; what it does is its preset's (spotwatch.presets).

The step gives the preset its `Call`: T (the hook's timeout capped by the time left, whole
seconds, at least 1), the `${name}` values, programs run by the hook runner (the hook's
environment, `user:` and output; the whole group stopped at the hook's limit), the time left
before that limit, the §6 event JSON, and the `Services` the daemon wired. In dry run and in
a rehearsal it does nothing: it logs, and records as its detail, "would …" with the exact
command or call.
"""

from __future__ import annotations

import logging
import math
import shlex
import time
from typing import Any, Dict, Mapping, Optional, Sequence

from spotwatch.config.schema import HookSpec
from spotwatch.detection.notices import SOURCE_REHEARSAL
from spotwatch.logevents import emit
from spotwatch.presets.base import Ran, Result, Services, Status, fill_arguments, find_program
from spotwatch.presets.registry import PRESETS
from spotwatch.response.eventjson import OPENING_FIELDS, event_json, opening_kind
from spotwatch.response.hooks import (
    HookResult,
    Limit,
    RunAs,
    UserError,
    announce_end,
    announce_start,
    hook_limit,
    run_as_of,
    run_program,
)
from spotwatch.response.plan import Step, StepContext, StepOutcome
from spotwatch.state.schema import FAILED, OK, TIMEOUT, step_status

log = logging.getLogger("spotwatch.hooks")


def whole_seconds(allowed: float) -> int:
    """T: the seconds a preset is told it has, at least 1 (tools read 0 as "no limit")."""
    return max(1, math.floor(allowed))


class PresetStep(Step):
    kind = "hook"

    def __init__(self, spec: HookSpec, services: Services, *, hard_deadline: bool = False) -> None:
        super().__init__(f"hook:{spec.name}")
        assert spec.preset is not None
        self.spec = spec
        self.preset = PRESETS[spec.preset]
        self.services = services
        self.hard_deadline = hard_deadline

    def run(self, ctx: StepContext) -> StepOutcome:
        spec, preset = self.spec, self.preset
        started = time.monotonic()
        try:
            run_as = run_as_of(spec) if preset.runs_programs else None
        except UserError as problem:
            emit(log, logging.ERROR, "hook-failed", f"hook {spec.name}: {problem}", hook=spec.name)
            return StepOutcome(FAILED, str(problem))
        limit = hook_limit(spec, ctx, started, hard_deadline=self.hard_deadline)
        call = StepCall(spec, ctx, self.services, limit, run_as, started)
        args = fill_arguments(spec.arguments, call.values)
        if ctx.dry_run or ctx.notice.source == SOURCE_REHEARSAL:
            return self._would(args, call)
        what = f" (preset {preset.name}, T = {call.seconds} s)"
        announce_start(spec, ctx, started, limit, hard_deadline=self.hard_deadline, what=what)
        try:
            result = preset.run(args, call)
        except Exception as failure:  # a preset's bug must not end the response
            log.exception("hook %s: the %s preset failed", spec.name, preset.name)
            result = Result("failed", f"the {preset.name} preset failed: {failure!r}")
        duration = time.monotonic() - started
        status = step_status(result.status)
        announce_end(spec, HookResult(status, None, duration, status == TIMEOUT, result.detail))
        return StepOutcome(status, result.detail)

    def _would(self, args: Mapping[str, Any], call: StepCall) -> StepOutcome:
        try:
            text = "would " + self.preset.would(args, call)
        except Exception as failure:
            text = f"would run the {self.preset.name} preset (not described: {failure!r})"
        emit(
            log,
            logging.INFO,
            "hook-would",
            f"hook {self.spec.name} (preset {self.preset.name}): {text}",
            hook=self.spec.name,
        )
        return StepOutcome(OK, text)


class StepCall:
    """`spotwatch.presets.base.Call` for one run of a preset step."""

    def __init__(
        self,
        spec: HookSpec,
        ctx: StepContext,
        services: Services,
        limit: Limit,
        run_as: Optional[RunAs],
        started: float,
    ) -> None:
        self.spec = spec
        self.ctx = ctx
        self.services = services
        self._limit = limit
        self._run_as = run_as
        notice = ctx.notice
        self.hook = spec.name
        self.action: str = notice.action
        self.seconds = whole_seconds(limit()[0] - started)
        self.values: Mapping[str, str] = {
            "instance_id": ctx.instance_id,
            "action": notice.action,
            "notice_time": notice.time_text,
        }

    def program(self, argv: Sequence[str]) -> Ran:
        found = find_program(argv[0])
        if found.path is None:
            emit(log, logging.ERROR, "hook-failed", f"hook {self.hook}: {found.problem}")
            return Ran("failed", None, found.problem)
        emit(
            log,
            logging.INFO,
            "hook-command",
            f"hook {self.hook} runs: {shlex.join(argv)}",
            hook=self.hook,
        )
        done = run_program(self.spec, [found.path, *argv[1:]], self.ctx, self._run_as, self._limit)
        return Ran(_status(done.status), done.returncode, done.detail)

    def time_left(self) -> float:
        return self._limit()[0] - time.monotonic()

    def stopping(self) -> bool:
        return self.ctx.abort.is_set()

    def event(self) -> Dict[str, Any]:
        notice = self.ctx.notice
        deadline = self.ctx.clock.deadline_epoch
        return event_json(
            opening_kind(notice), notice, deadline, self.ctx.instance_id, OPENING_FIELDS
        )


_PRESET_STATUS: Dict[str, Status] = {
    "ok": "ok",
    "failed": "failed",
    "timeout": "timeout",
    "interrupted": "interrupted",
}


def _status(value: str) -> Status:
    return _PRESET_STATUS.get(value, "failed")
