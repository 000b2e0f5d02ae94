"""Letting an Azure event go ahead once its response has ended (`azure.acknowledge`).

`POST metadata/scheduledevents` with `{"StartRequests": [{"EventId": ID}]}` tells Azure the VM
is ready: the event may start before its NotBefore. It goes last in the response (the
finale), after every hook and step, failed ones included: the event comes at NotBefore
anyway, and waiting longer only keeps a VM that is ready to go. Approving an event lets it
proceed for every VM in its `Resources`, which is right for a Spot eviction or a VM's own
reboot; operators who share events across VMs that must agree keep `azure.acknowledge` off.

The step is of kind `release`: an event that leaves the list after it went ahead, it was
not called off (daemon/scheduled.py). In a dry run (and in a rehearsal) nothing is sent.
"""

from __future__ import annotations

import json
import logging
import time
from typing import List

from spotwatch.clouds.azure.events import SOURCE
from spotwatch.clouds.azure.metadata import SCHEDULED_EVENTS, AzureClient
from spotwatch.config.schema import Config
from spotwatch.detection.metadata import MetadataError
from spotwatch.detection.notices import Notice
from spotwatch.logevents import emit
from spotwatch.response.build import RELEASE
from spotwatch.response.plan import Step, StepContext, StepOutcome
from spotwatch.state.schema import FAILED, OK, SKIPPED

log = logging.getLogger("spotwatch.response")

NAME = "azure:start-requests"
BUDGET = 10.0  # seconds, retries included: the event no longer waits for anything of ours


class StartRequest(Step):
    kind = RELEASE

    def __init__(self, endpoint: str, timeout: float, event_id: str) -> None:
        super().__init__(NAME)
        self.endpoint = endpoint
        self.timeout = timeout
        self.event_id = event_id

    def run(self, ctx: StepContext) -> StepOutcome:
        body = json.dumps({"StartRequests": [{"EventId": self.event_id}]}).encode()
        if ctx.dry_run:
            detail = f"would POST StartRequests for event {self.event_id}"
            emit(log, logging.INFO, "azure-would-acknowledge", detail, event_id=self.event_id)
            return StepOutcome(SKIPPED, f"dry run: {detail}")
        client = AzureClient(self.endpoint, timeout=self.timeout, cancel=ctx.abort)
        try:
            reply = client.send("POST", SCHEDULED_EVENTS, body, deadline=time.monotonic() + BUDGET)
        except MetadataError as failure:
            return StepOutcome(FAILED, f"StartRequests for {self.event_id}: {failure}")
        finally:
            client.close()
        if reply.status != 200:
            return StepOutcome(FAILED, f"StartRequests for {self.event_id}: HTTP {reply.status}")
        emit(
            log,
            logging.INFO,
            "azure-acknowledged",
            f"event {self.event_id} may start now (StartRequests sent)",
            event_id=self.event_id,
        )
        return StepOutcome(OK, f"event {self.event_id} may start now")


def start_requests(notice: Notice, config: Config) -> List[Step]:
    """The finale step for an Azure event's response (not for its cancel)."""
    if not config.azure.acknowledge or notice.signal != SOURCE or notice.event_id is None:
        return []
    if notice.action == "cancel":
        return []
    return [StartRequest(config.azure.endpoint, config.imds.timeout, notice.event_id)]
