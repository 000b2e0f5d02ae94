"""Amazon EC2: IMDSv2 (clouds/aws/imds.py), the Spot notice, rebalance recommendations, the
Auto Scaling lifecycle state and scheduled events (clouds/aws/monitors.py). Every part of
spotwatch is there; the AWS-only ones (parts/) are its own."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

from spotwatch.clouds.aws import rehearsal
from spotwatch.clouds.aws.imds import (
    TTL_HEADER,
    ImdsClient,
    read_instance_id,
    read_local_hostname,
)
from spotwatch.clouds.aws.monitors import monitors_for
from spotwatch.clouds.cloud import Cloud, SimulateRequest, Simulation
from spotwatch.clouds.dmi import DmiFacts
from spotwatch.config.schema import Config
from spotwatch.detection.metadata import MetadataClient
from spotwatch.detection.monitors import Monitor
from spotwatch.simulator.imds import ImdsSimulator
from spotwatch.simulator.service import SimulatedService

VENDOR = "Amazon EC2"  # sys_vendor and chassis_asset_tag on Nitro instances


class Aws(Cloud):
    name = "aws"
    title = "Amazon EC2"
    settings = ("imds", "rebalance", "autoscaling", "scheduled_events")
    rehearsals = {
        "terminate": "a Spot terminate notice",
        "stop": "a Spot stop notice",
        "hibernate": "a Spot hibernate notice",
        "rebalance": "a rebalance recommendation",
        "asg-terminate": "an Auto Scaling termination (target-lifecycle-state Terminated)",
        "reboot": "a scheduled instance-reboot event",
        "maintenance": "a scheduled system-maintenance event",
        "start": "the first start after a handled stop",
    }

    def recognizes(self, dmi: DmiFacts) -> Optional[str]:
        for field in ("sys_vendor", "chassis_asset_tag"):
            if getattr(dmi, field) == VENDOR:
                return dmi.where(field)
        return None

    def client(self, config: Config, *, cancel: Optional[threading.Event] = None) -> ImdsClient:
        return ImdsClient(
            config.imds.endpoint,
            timeout=config.imds.timeout,
            token_ttl=config.imds.token_ttl,
            allow_imdsv1=config.imds.allow_imdsv1,
            cancel=cancel,
        )

    def monitors(self, config: Config, client: MetadataClient) -> List[Monitor]:
        assert isinstance(client, ImdsClient)
        return monitors_for(config, client)

    def instance_id(self, client: MetadataClient, deadline: float) -> Tuple[Optional[str], str]:
        return read_instance_id(client, deadline)

    def node_name(self, config: Config) -> Optional[str]:
        return read_local_hostname(config.imds)

    def date_probe(self, config: Config) -> Tuple[str, str, str, Dict[str, str]]:
        # A token PUT with the shortest TTL: every IMDS answer, even a refusal, has a Date.
        return config.imds.endpoint, "PUT", "/latest/api/token", {TTL_HEADER: "1"}

    def simulation(self, request: SimulateRequest) -> Simulation:
        return rehearsal.simulation(request)

    def rehearsal_simulator(self) -> SimulatedService:
        return ImdsSimulator()

    def pointed_at(self, config: Config, endpoint: str) -> Config:
        return replace(config, imds=replace(config.imds, endpoint=endpoint, user_data=False))

    def rehearse(self, sim: SimulatedService, action: str, lead: float) -> Optional[str]:
        assert isinstance(sim, ImdsSimulator)
        return rehearsal.raise_signal(sim, action, lead)

    def rehearsal_title(self, action: str, lead: float) -> str:
        return rehearsal.title(action, lead)

    def watching(self, action: str, config: Config) -> Config:
        return rehearsal.watching(action, config)

    def deadline_words(self, action: str, config: Config) -> str:
        return rehearsal.deadline_words(action, config)


AWS = Aws()
