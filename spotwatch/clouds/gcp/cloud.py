"""Google Cloud: Spot and preemptible VMs (docs/gcp.md). The metadata server
(clouds/gcp/metadata.py), the preemption and the host maintenance event
(clouds/gcp/monitors.py), each followed by a hanging GET (clouds/gcp/watch.py); none of the
AWS-only parts."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

from spotwatch.clouds.cloud import Cloud, SimulateRequest, Simulation
from spotwatch.clouds.confine import ONLY_AWS
from spotwatch.clouds.dmi import DmiFacts
from spotwatch.clouds.gcp import simulator
from spotwatch.clouds.gcp.metadata import FLAVOR, GOOGLE, PREFIX, GcpClient
from spotwatch.clouds.gcp.monitors import monitors_for
from spotwatch.config.schema import Config
from spotwatch.detection.metadata import MetadataClient
from spotwatch.detection.monitors import Monitor
from spotwatch.simulator.service import SimulatedService

INSTANCE_ID = "instance/id"
PRODUCT = "Google Compute Engine"
MAINTENANCE_VALUES = ("TERMINATE_ON_HOST_MAINTENANCE", "MIGRATE_ON_HOST_MAINTENANCE")
# What each rehearsed (and simulated) action turns on in the metadata server.
SIGNALS = {
    "terminate": (simulator.PREEMPTED, "TRUE"),
    "stop": (simulator.MAINTENANCE_EVENT, "TERMINATE_ON_HOST_MAINTENANCE"),
    "maintenance": (simulator.MAINTENANCE_EVENT, "MIGRATE_ON_HOST_MAINTENANCE"),
}


class Gcp(Cloud):
    name = "gcp"
    title = "Google Cloud"
    lacks = ONLY_AWS
    # The hanging GET waits at most poll_interval; imds.timeout bounds every request.
    settings = ("gcp", "poll_interval", "imds")
    rehearsals = {
        "terminate": "a preemption (instance/preempted TRUE)",
        "stop": "a host maintenance that stops the VM (TERMINATE_ON_HOST_MAINTENANCE)",
        "maintenance": "a live migration (MIGRATE_ON_HOST_MAINTENANCE)",
    }

    def recognizes(self, dmi: DmiFacts) -> Optional[str]:
        if dmi.product_name == PRODUCT:
            return dmi.where("product_name")
        if dmi.sys_vendor == GOOGLE:
            return dmi.where("sys_vendor")
        return None

    def client(self, config: Config, *, cancel: Optional[threading.Event] = None) -> GcpClient:
        return GcpClient(config.gcp.endpoint, timeout=config.imds.timeout, cancel=cancel)

    def monitors(self, config: Config, client: MetadataClient) -> List[Monitor]:
        assert isinstance(client, GcpClient)
        return monitors_for(config, client, lambda: self.client(config))

    def instance_id(self, client: MetadataClient, deadline: float) -> Tuple[Optional[str], str]:
        text, why = client.read_text(INSTANCE_ID, deadline)
        if text is not None and not (text.isdigit() and len(text) < 40):
            return None, f"{INSTANCE_ID} answered {len(text)} characters that are no id"
        return text, why

    def date_probe(self, config: Config) -> Tuple[str, str, str, Dict[str, str]]:
        return config.gcp.endpoint, "GET", PREFIX, {FLAVOR: GOOGLE}

    # ----------------------------------------------------------------- simulator

    def simulation(self, request: SimulateRequest) -> Simulation:
        request.refuse_aws_only(self.title)
        if request.action is not None and request.action not in ("terminate", "stop"):
            raise ValueError(f"--action {request.action}: Google preempts (terminate) or stops")
        event = request.scheduled_event
        if event is not None and event not in MAINTENANCE_VALUES:
            raise ValueError(f"--scheduled-event {event}: one of {', '.join(MAINTENANCE_VALUES)}")
        sim = simulator.GcpMetadataSimulator(port=request.port, delay=request.answer_delay)

        def setup() -> None:
            if event is not None:
                sim.set_maintenance_event(event)

        def raise_notice() -> str:
            assert request.action is not None
            path, value = SIGNALS[request.action]
            sim.set_value(path, value)
            return f"{path} {value}"

        return Simulation(sim, setup, raise_notice if request.action else None)

    def rehearsal_simulator(self) -> SimulatedService:
        return simulator.GcpMetadataSimulator()

    def pointed_at(self, config: Config, endpoint: str) -> Config:
        return replace(config, gcp=replace(config.gcp, endpoint=endpoint))

    def rehearse(self, sim: SimulatedService, action: str, lead: float) -> Optional[str]:
        assert isinstance(sim, simulator.GcpMetadataSimulator)
        path, value = SIGNALS[action]
        sim.set_value(path, value)
        return f"{path} turned {value}"

    def deadline_words(self, action: str, config: Config) -> str:
        lead = config.gcp.notice if action == "terminate" else 60.0
        return f"first seen + {lead:g} s - deadline_margin {config.deadline_margin:g} s"


GCP = Gcp()
