"""The contract's tables for Google Cloud and Azure (CONTRACT.md §10, docs/gcp.md,
docs/azure.md), as the model reads them. Written from the contract, not from the code.

- Google: `instance/preempted` TRUE is a `terminate` (source `gcp-preempted`, notice time
  first seen + `gcp.notice`); `instance/maintenance-event` TERMINATE_ON_HOST_MAINTENANCE a
  `stop`, MIGRATE_ON_HOST_MAINTENANCE a `maintenance` (source `gcp-maintenance-event`, first
  seen + 60 s). Neither waits nor is canceled; the time is kept while the value stays and
  reckoned afresh when it comes back (docs/gcp.md).
- Azure: each Scheduled Event for this VM is one notice (source `azure-scheduled-event`,
  EVENT_ID / EVENT_CODE the EventId / EventType, time its NotBefore): Preempt and Terminate a
  `terminate`, Redeploy a `stop`, Reboot a `reboot`, Freeze a `maintenance`. Its response
  waits for NotBefore - `scheduled_events.lead`; leaving the list before NotBefore cancels it
  (§7 Cancel); a Started event's time is the earlier of its NotBefore and when it was seen
  started. With `azure.acknowledge` a StartRequests POST follows the response's end.

On both, everything AWS-only is off (§10): no AWS API call and no request to the AWS
instance metadata service, whatever the config says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from contract_signals import Hook, Settings, Signal
from model_trace import Shown

GCP_MAINTENANCE_LEAD = 60.0  # §10: first seen + 60 s
AZURE_ACTIONS = {
    "Preempt": "terminate",
    "Terminate": "terminate",
    "Redeploy": "stop",
    "Reboot": "reboot",
    "Freeze": "maintenance",
}
GCP_MEANINGS = {
    "preempted": {"TRUE": "terminate"},
    "maintenance-event": {
        "TERMINATE_ON_HOST_MAINTENANCE": "stop",
        "MIGRATE_ON_HOST_MAINTENANCE": "maintenance",
    },
}


@dataclass(frozen=True)
class CloudSettings(Settings):
    """A sequence's configuration on another cloud (clouds_driver.py writes it as YAML).
    The AWS fields of `Settings` keep their meaning for the shared checks: no load balancer
    (`lb` off) and no ECS are ever on there, whatever `aws_configured` asks for."""

    cloud: str = "gcp"  # gcp | azure
    gcp_notice: float = 30.0
    acknowledge: bool = True  # azure.acknowledge
    aws_configured: bool = False  # ECS, load balancers, Auto Scaling... configured (all off)
    first_answer_delay: float = 0.0  # Azure: the service's first answer takes this long

    def all_hooks(self, with_presets: bool = False) -> Tuple[Hook, ...]:
        hooks = [
            Hook("checkpoint", ("terminate", "stop", "reboot"), 0, seconds=0.5),
            Hook("flush", ("terminate", "stop"), 1, seconds=0.3),
            Hook("maint", ("maintenance",), 0, seconds=0.2),
        ]
        if self.back_hook:
            hooks.append(Hook("back", ("cancel", "start"), 0, timeout=5.0, seconds=0.3))
        return tuple(hooks)


def _gcp_value(name: str) -> Callable[[Shown], Optional[str]]:
    return lambda shown: GCP_MEANINGS[name].get(shown.what)


def _azure_event(shown: Shown) -> Optional[str]:
    return AZURE_ACTIONS.get(shown.what)


SIGNALS: Dict[str, Signal] = {
    s.name: s
    for s in (
        Signal("preempted", "gcp-preempted", _gcp_value("preempted"), "first-seen+budget"),
        Signal(
            "maintenance-event",
            "gcp-maintenance-event",
            _gcp_value("maintenance-event"),
            "first-seen+budget",
        ),
        Signal(
            "azure",
            "azure-scheduled-event",
            _azure_event,
            "not-before",
            per_event=True,
            waits=True,
            cancelable=True,
        ),
    )
}


def budget(signal: str, settings: CloudSettings) -> float:
    """Seconds from first seen to the notice's time, for a signal that names no moment."""
    return settings.gcp_notice if signal == "preempted" else GCP_MAINTENANCE_LEAD
