"""Azure: Spot VMs and scale sets (docs/azure.md). The Instance Metadata Service
(clouds/azure/metadata.py), Scheduled Events for this VM (clouds/azure/monitors.py), and
their acknowledgement once the response has ended (clouds/azure/acknowledge.py); none of
the AWS-only parts."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional, Tuple

from spotwatch.clouds.azure.acknowledge import start_requests
from spotwatch.clouds.azure.events import EVENT_ACTIONS
from spotwatch.clouds.azure.metadata import HEADER, INSTANCE_VERSION, VM_ID, AzureClient
from spotwatch.clouds.azure.monitors import AzureEventsMonitor
from spotwatch.clouds.azure.simulator import AzureMetadataSimulator
from spotwatch.clouds.cloud import Cloud, ProvidersFor, SimulateRequest, Simulation
from spotwatch.clouds.confine import ONLY_AWS
from spotwatch.clouds.dmi import DmiFacts
from spotwatch.config.schema import Config
from spotwatch.detection.metadata import MetadataClient
from spotwatch.detection.monitors import Monitor
from spotwatch.response.build import Providers
from spotwatch.simulator.service import SimulatedService

# Every Azure VM's chassis asset tag ("MSFT AZURE VM" in ASCII codes); other Hyper-V guests
# share its vendor and product name.
ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
# What each rehearsed action lists (and `simulate-imds --action`).
EVENT_OF = {"terminate": "Preempt", "stop": "Redeploy", "reboot": "Reboot", "maintenance": "Freeze"}


class Azure(Cloud):
    name = "azure"
    title = "Microsoft Azure"
    lacks = ONLY_AWS
    settings = ("azure", "imds")  # imds.timeout bounds every request
    rehearsals = {action: f"a {kind} scheduled event" for action, kind in EVENT_OF.items()}

    def recognizes(self, dmi: DmiFacts) -> Optional[str]:
        return dmi.where("chassis_asset_tag") if dmi.chassis_asset_tag == ASSET_TAG else None

    def client(self, config: Config, *, cancel: Optional[threading.Event] = None) -> AzureClient:
        return AzureClient(config.azure.endpoint, timeout=config.imds.timeout, cancel=cancel)

    def monitors(self, config: Config, client: MetadataClient) -> List[Monitor]:
        assert isinstance(client, AzureClient)
        return [AzureEventsMonitor(client, lambda: self.client(config))]

    def instance_id(self, client: MetadataClient, deadline: float) -> Tuple[Optional[str], str]:
        return client.read_text(VM_ID, deadline)

    def providers(self, base: ProvidersFor) -> ProvidersFor:
        def with_acknowledgement(config: Config, dry_run: bool) -> Providers:
            return replace(base(config, dry_run), release=start_requests)

        return with_acknowledgement

    def date_probe(self, config: Config) -> Tuple[str, str, str, Dict[str, str]]:
        path = f"/metadata/instance?api-version={INSTANCE_VERSION}"
        return config.azure.endpoint, "GET", path, {HEADER: "true"}

    # ----------------------------------------------------------------- simulator

    def simulation(self, request: SimulateRequest) -> Simulation:
        request.refuse_aws_only(self.title)
        if request.action is not None and request.action not in EVENT_OF:
            raise ValueError(f"--action {request.action}: Azure lists {', '.join(EVENT_OF)}")
        event = request.scheduled_event
        if event is not None and event not in EVENT_ACTIONS:
            raise ValueError(f"--scheduled-event {event}: one of {', '.join(EVENT_ACTIONS)}")
        lead = 30.0 if request.lead is None else request.lead  # Preempt's notice: 30 s
        sim = AzureMetadataSimulator(port=request.port, delay=request.answer_delay)

        def setup() -> None:
            if event is not None:
                sim.add_event(event, _ahead(lead))

        def raise_notice() -> str:
            assert request.action is not None
            kind = EVENT_OF[request.action]
            return f"{kind} event {sim.add_event(kind, _ahead(lead))}"

        return Simulation(sim, setup, raise_notice if request.action else None)

    def rehearsal_simulator(self) -> SimulatedService:
        return AzureMetadataSimulator()

    def pointed_at(self, config: Config, endpoint: str) -> Config:
        return replace(config, azure=replace(config.azure, endpoint=endpoint))

    def rehearse(self, sim: SimulatedService, action: str, lead: float) -> Optional[str]:
        assert isinstance(sim, AzureMetadataSimulator)
        kind = EVENT_OF[action]
        event_id = sim.add_event(kind, _ahead(lead))
        return f"scheduled event listed: {kind} ({event_id}), NotBefore in {lead:g} s"

    def rehearsal_title(self, action: str, lead: float) -> str:
        return f"{self.rehearsals[action]}, NotBefore {lead:g} s ahead"

    def deadline_words(self, action: str, config: Config) -> str:
        return f"NotBefore - deadline_margin {config.deadline_margin:g} s"


def _ahead(seconds: float) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).replace(microsecond=0)


AZURE = Azure()
