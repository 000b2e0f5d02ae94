"""Ending the instance on our terms once the response is done.

`instance.after_response` (stop | hibernate | terminate) after a terminate or stop notice,
`instance.after_rebalance` (stop | terminate) after a rebalance recommendation's hooks.
Always the graceful way: never `Force`, never `SkipOsShutdown`. The call is bounded by the
time left and retried while it allows (`Bounded`, parts/awsapi/bounded.py). The answer's
state codes are read from their low byte (the high byte is internal to EC2) and logged as
"running → stopping". Failures are reported in the API's words.
"""

from __future__ import annotations

import logging
from typing import Any, List, Mapping, Optional, Tuple

from spotwatch.config.schema import Config
from spotwatch.detection.notices import REBALANCE, Notice
from spotwatch.logevents import emit
from spotwatch.parts.awsapi.bounded import Bounded
from spotwatch.parts.awsapi.clients import AwsClients, api_errors, describe_error, error_code
from spotwatch.response.plan import Step, StepContext, StepOutcome
from spotwatch.state.schema import FAILED, OK, SKIPPED

log = logging.getLogger("spotwatch.instance")

STATE_NAMES = {
    0: "pending",
    16: "running",
    32: "shutting-down",
    48: "terminated",
    64: "stopping",
    80: "stopped",
}
AFTER_RESPONSE = ("stop", "hibernate", "terminate")
AFTER_REBALANCE = ("stop", "terminate")
API_NAMES = {
    "stop": "StopInstances",
    "hibernate": "StopInstances(Hibernate=True)",
    "terminate": "TerminateInstances",
}
ALLOWED, DENIED, UNKNOWN = "allowed", "denied", "unknown"


def state_name(state: Optional[Mapping[str, Any]]) -> str:
    """An InstanceState's name from the low byte of its code (EC2 may set the high byte)."""
    if not state:
        return "?"
    code = state.get("Code")
    if isinstance(code, int):
        return STATE_NAMES.get(code & 0xFF, f"code {code & 0xFF}")
    return str(state.get("Name") or "?")


def transition(change: Mapping[str, Any]) -> str:
    """`running → stopping` from a StoppingInstances / TerminatingInstances item."""
    return f"{state_name(change.get('PreviousState'))} → {state_name(change.get('CurrentState'))}"


def request_action(
    aws: Bounded, action: str, instance_id: str, *, dry_run: bool = False
) -> Mapping[str, Any]:
    """Ask EC2 to stop / hibernate / terminate the instance; returns its state change."""
    extra = {"DryRun": True} if dry_run else {}
    if action == "terminate":
        changes: List[Any] = list(
            aws.ec2("terminate_instances", InstanceIds=[instance_id], **extra).get(
                "TerminatingInstances", []
            )
        )
    elif action in ("stop", "hibernate"):
        if action == "hibernate":
            extra["Hibernate"] = True
        changes = list(
            aws.ec2("stop_instances", InstanceIds=[instance_id], **extra).get(
                "StoppingInstances", []
            )
        )
    else:
        raise ValueError(f"not an instance action: {action!r}")
    return changes[0] if changes else {}


def check_permission(aws: Bounded, action: str, instance_id: str) -> Tuple[str, str]:
    """(ALLOWED | DENIED | UNKNOWN, detail) from the call with `DryRun=True`."""
    api = API_NAMES[action]
    try:
        request_action(aws, action, instance_id, dry_run=True)
    except api_errors() as failure:
        code = error_code(failure)
        if code == "DryRunOperation":
            return ALLOWED, f"{api} on {instance_id} allowed (DryRunOperation)"
        if code == "UnauthorizedOperation":
            return DENIED, f"{api} on {instance_id}: {describe_error(failure)}"
        return UNKNOWN, f"{api} on {instance_id}: {describe_error(failure)}"
    return UNKNOWN, f"{api} with DryRun=True on {instance_id} gave no DryRunOperation answer"


class InstanceActionStep(Step):
    """StopInstances / StopInstances(Hibernate=True) / TerminateInstances on this instance."""

    kind = "instance"

    def __init__(self, action: str, clients: AwsClients) -> None:
        if action not in API_NAMES:
            raise ValueError(f"not an instance action: {action!r}")
        super().__init__(f"instance:{action}")
        self.action = action
        self.clients = clients

    def run(self, ctx: StepContext) -> StepOutcome:
        api = API_NAMES[self.action]
        instance_id = ctx.instance_id
        if not instance_id.startswith("i-"):
            return StepOutcome(FAILED, f"{api}: this instance's id is unknown ({instance_id!r})")
        if not ctx.confirmed():  # never end an instance on a notice we cannot confirm
            detail = f"{api} not called: no recent poll saw the notice still there"
            emit(log, logging.WARNING, "instance-unconfirmed", detail, instance=instance_id)
            return StepOutcome(SKIPPED, detail)
        if ctx.dry_run:
            emit(
                log,
                logging.INFO,
                "instance-would-act",
                f"would call {api} on {instance_id} (graceful OS shutdown)",
                instance=instance_id,
            )
            return StepOutcome(OK, "dry run")
        try:
            aws = self.clients.bounded(ctx.clock.time_left)
            change = request_action(aws, self.action, instance_id)
        except api_errors() as failure:
            detail = f"{api}: {describe_error(failure)}"
            emit(
                log,
                logging.ERROR,
                "instance-action-failed",
                f"{instance_id}: {detail}",
                instance=instance_id,
            )
            return StepOutcome(FAILED, detail)
        moved = transition(change)
        emit(
            log,
            logging.INFO,
            "instance-action",
            f"{api} {instance_id}: {moved}",
            instance=instance_id,
        )
        return StepOutcome(OK, f"{api}: {moved}")


class InstanceResponse:
    """The instance step a notice gets: `after_response` or `after_rebalance`, or none."""

    def __init__(self, clients: AwsClients) -> None:
        self.clients = clients

    def steps(self, notice: Notice, config: Config) -> List[Step]:
        if notice.action == REBALANCE:
            action = config.instance.after_rebalance
        elif notice.action in ("terminate", "stop"):
            action = config.instance.after_response
        else:  # hibernate: EC2 is already hibernating us
            return []
        if action not in API_NAMES:
            return []
        return [InstanceActionStep(action, self.clients)]
