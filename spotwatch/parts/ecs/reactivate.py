"""Back to ACTIVE: when the instance stays after all (a scheduled event called off) or is back
(the first start after a stop or reboot), the container instance spotwatch set to DRAINING
takes tasks again (`ecs.reactivate`). Only one spotwatch drained: an operator's own DRAINING
is theirs.

Which responses are undone, and whether they drained, is read from the state file
(response/putback.py): when the response being undone planned a drain, the reactivation is
planned, and decides when it runs, once that drain has ended (a drain still in flight when
the cancel came is waited for).
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

from spotwatch.config.schema import Config, EcsSettings
from spotwatch.detection.notices import Notice
from spotwatch.parts.ecs.agent import AgentInfo, EcsTarget
from spotwatch.parts.ecs.steps import EcsDrainStep, EcsStep
from spotwatch.response.plan import Step, StepContext, StepOutcome
from spotwatch.response.putback import PutBack
from spotwatch.state.schema import OK

DRAIN_STEP = "ecs:drain"


class EcsReactivateStep(EcsDrainStep):
    """UpdateContainerInstancesState(ACTIVE), when a response it undoes drained."""

    def __init__(
        self, target: EcsTarget, settings: EcsSettings, putback: PutBack, undone: Sequence[str]
    ) -> None:
        EcsStep.__init__(self, "ecs:reactivate", target, settings)
        self.putback = putback
        self.undone = list(undone)

    def act(self, ctx: StepContext, info: AgentInfo) -> StepOutcome:
        drained = [
            key
            for key in self.undone
            if self.putback.settled(ctx.notice, key, DRAIN_STEP, ctx) == OK
        ]
        if not drained:
            return StepOutcome(OK, f"{info} was not set to DRAINING by spotwatch: left as it is")
        return self.set_status(ctx, info, "ACTIVE", "ecs-active")


class EcsReactivation:
    """The `undo` provider for ECS: a reactivate step when a response it undoes planned a
    drain."""

    def __init__(self, target: Callable[[], Optional[EcsTarget]], putback: PutBack) -> None:
        self._target = target
        self.putback = putback

    def steps(self, notice: Notice, config: Config) -> List[Step]:
        target = self._target()
        if not config.ecs.reactivate or target is None:
            return []
        undone = self.putback.planned(notice, DRAIN_STEP)
        if not undone:
            return []
        return [EcsReactivateStep(target, config.ecs, self.putback, sorted(undone))]
