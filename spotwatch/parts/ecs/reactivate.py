"""Back to ACTIVE: when the instance stays after all (a scheduled event called off) or is back
(the first start after a stop), the container instance spotwatch set to DRAINING takes tasks
again (`ecs.reactivate`). Only one spotwatch drained: an operator's own DRAINING is theirs.

Which response drained it is read from the state file (state/history.py): for `cancel`, the
canceled event's own response; for `start`, the earlier boot's.
"""

from __future__ import annotations

from typing import Callable, List, Optional

from spotwatch.config.schema import Config, EcsSettings
from spotwatch.detection.notices import Notice
from spotwatch.parts.ecs.agent import AgentInfo, EcsTarget
from spotwatch.parts.ecs.steps import EcsDrainStep, EcsStep
from spotwatch.response.plan import Step, StepContext, StepOutcome
from spotwatch.state.history import boot_ending_record, drained, drained_for_event
from spotwatch.state.store import StateStore


class EcsReactivateStep(EcsDrainStep):
    """UpdateContainerInstancesState(ACTIVE)."""

    def __init__(self, target: EcsTarget, settings: EcsSettings) -> None:
        EcsStep.__init__(self, "ecs:reactivate", target, settings)

    def act(self, ctx: StepContext, info: AgentInfo) -> StepOutcome:
        return self.set_status(ctx, info, "ACTIVE", "ecs-active")


class EcsReactivation:
    """The `undo` provider for ECS: a reactivate step when spotwatch drained the instance."""

    def __init__(self, target: Callable[[], Optional[EcsTarget]]) -> None:
        self._target = target
        self.store: Optional[StateStore] = None

    def bind(self, daemon: object) -> None:
        """Told the daemon once it is prepared (its state store is then loaded)."""
        store = getattr(daemon, "store", None)
        self.store = store if isinstance(store, StateStore) else None

    def steps(self, notice: Notice, config: Config) -> List[Step]:
        target = self._target()
        if not config.ecs.reactivate or target is None or self.store is None:
            return []
        if not self._drained_before(notice, self.store):
            return []
        return [EcsReactivateStep(target, config.ecs)]

    @staticmethod
    def _drained_before(notice: Notice, store: StateStore) -> bool:
        if notice.action == "cancel":
            responses = store.value("responses")
            return drained_for_event(responses, notice.event_id, notice.canceled_action)
        if notice.action == "start":
            earlier = boot_ending_record(
                store.value("previous"), store.boot_id, store.value("instance_id")
            )
            return earlier is not None and drained(earlier)
        return False
