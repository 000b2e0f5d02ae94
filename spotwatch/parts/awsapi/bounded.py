"""AWS calls bounded by one deadline: what every AWS step is given (`AwsClients.bounded`).

Every call in a response is bounded by the time left before the deadline (or by less, when
a step is told its own bound); throttling and transient failures are retried while that
allows (spotwatch.parts.awsapi.clients, spotwatch.parts.awsapi.retry).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Protocol

from spotwatch.parts.awsapi.retry import DeadlineBackoff

TimeLeft = Callable[[], float]  # seconds left for a call (and its retries)


class Caller(Protocol):
    """What makes the calls (`AwsClients`): one attempt after another within `time_left`."""

    def call(
        self,
        service: str,
        operation: str,
        params: Dict[str, Any],
        time_left: TimeLeft,
        policy: DeadlineBackoff,
        urgent: bool = False,
    ) -> Dict[str, Any]: ...


class Bounded:
    """AWS calls bounded by one `time_left`: `bounded.ecs("stop_task", cluster=..., ...)`."""

    def __init__(
        self,
        clients: Caller,
        time_left: TimeLeft,
        policy: DeadlineBackoff,
        urgent: bool = False,
    ) -> None:
        self.clients = clients
        self.time_left = time_left
        self.policy = policy
        self.urgent = urgent

    def call(self, service: str, operation: str, **params: Any) -> Dict[str, Any]:
        """One call to `service` (ecs, ec2, autoscaling, elbv2, elb, ...), bounded."""
        return self.clients.call(
            service, operation, params, self.time_left, self.policy, self.urgent
        )

    def ecs(self, operation: str, **params: Any) -> Dict[str, Any]:
        return self.call("ecs", operation, **params)

    def ec2(self, operation: str, **params: Any) -> Dict[str, Any]:
        return self.call("ec2", operation, **params)

    def autoscaling(self, operation: str, **params: Any) -> Dict[str, Any]:
        return self.call("autoscaling", operation, **params)


def within(seconds: float) -> TimeLeft:
    """A bound `seconds` from now (for calls outside a response, such as `check`'s)."""
    ends = time.monotonic() + seconds

    def time_left() -> float:
        return ends - time.monotonic()

    return time_left
