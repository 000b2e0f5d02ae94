"""The seam: what a cloud brings to the daemon. One `Cloud` per folder (clouds/aws,
clouds/gcp, clouds/azure), registered once in clouds/registry.py.

A cloud brings its metadata client (endpoint, headers, how an answer is trusted), its
monitors (the `Monitor` interface of detection/monitors.py), the VM's identity, what it
cannot do (the AWS-only parts of clouds/confine.py), steps of its own if it has any (Azure's
acknowledgement), and its simulator for `simulate-imds --cloud` and `rehearse --cloud`.
Nothing outside clouds/ asks which cloud it is: the daemon and the commands only call this.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from spotwatch.clouds.confine import AwsOnly
from spotwatch.clouds.dmi import DmiFacts
from spotwatch.config.schema import Config
from spotwatch.detection.metadata import MetadataClient
from spotwatch.detection.monitors import Monitor
from spotwatch.response.build import Providers
from spotwatch.simulator.service import SimulatedService

ProvidersFor = Callable[[Config, bool], Providers]


@dataclass(frozen=True)
class SimulateRequest:
    """`spotwatch simulate-imds`, as parsed."""

    port: int = 0
    action: Optional[str] = None  # raise this signal `delay` seconds after start
    lead: Optional[float] = None  # its warning (a NotBefore this far ahead)
    delay: float = 0.0
    answer_delay: float = 0.0  # every answer held this long
    scheduled_event: Optional[str] = None  # list an event of this code/type, NotBefore `lead` ahead
    imdsv2_only: bool = False
    asg_state: Optional[str] = None
    scenario: Optional[str] = None

    def refuse_aws_only(self, cloud: str) -> None:
        """ValueError when an option only AWS's IMDS simulator plays is given."""
        given = [
            flag
            for flag, value in (
                ("--imdsv2-only", self.imdsv2_only),
                ("--asg-state", self.asg_state),
                ("--scenario", self.scenario),
            )
            if value
        ]
        if given:
            raise ValueError(f"{', '.join(given)}: AWS's IMDS only; {cloud} has none")


@dataclass
class Simulation:
    """A cloud's simulator set up for one `simulate-imds` run."""

    service: SimulatedService  # not yet started
    setup: Callable[[], None]  # right after start: what is there from the beginning
    raise_notice: Optional[Callable[[], str]] = None  # at `delay`, when --action was given
    play: Optional[Callable[[threading.Event], None]] = None  # a scenario, until the event is set


class Cloud(ABC):
    name = ""  # `cloud:` in the config, SPOTWATCH_CLOUD for hooks
    title = ""  # "Google Cloud", for people
    # The AWS-only parts this cloud cannot use (clouds/confine.py); AWS: none.
    lacks: Tuple[AwsOnly, ...] = ()
    # Config sections its client and monitors are built from: a reload that changes one
    # builds them again.
    settings: Tuple[str, ...] = ()
    # `rehearse --action` values it can play, with what each raises.
    rehearsals: Mapping[str, str] = {}

    @abstractmethod
    def recognizes(self, dmi: DmiFacts) -> Optional[str]:
        """Why the firmware says this is that cloud (`cloud: auto`), or None."""

    @abstractmethod
    def client(self, config: Config, *, cancel: Optional[threading.Event] = None) -> MetadataClient:
        """The poll loop's metadata client."""

    @abstractmethod
    def monitors(self, config: Config, client: MetadataClient) -> List[Monitor]:
        """Every signal the config asks to watch, in the order they are asked each poll."""

    @abstractmethod
    def instance_id(self, client: MetadataClient, deadline: float) -> Tuple[Optional[str], str]:
        """(the VM's id (SPOTWATCH_INSTANCE_ID), "") or (None, why not) when the metadata
        service does not give it before `deadline` (the client's clock)."""

    def node_name(self, config: Config) -> Optional[str]:
        """The name a cluster knows this VM by (the `node: auto` of the kubectl-drain
        preset), asked once, briefly; None: the host name is all there is."""
        return None

    def providers(self, base: ProvidersFor) -> ProvidersFor:
        """The response's parts on this cloud: `base` (AWS's parts, off where `lacks` says
        so) plus any of its own."""
        return base

    @abstractmethod
    def date_probe(self, config: Config) -> Tuple[str, str, str, Dict[str, str]]:
        """(endpoint, method, path, headers) of a cheap request whose answer's Date header
        `check` compares the clock with."""

    # ----------------------------------------------------------------- simulator

    @abstractmethod
    def simulation(self, request: SimulateRequest) -> Simulation:
        """Its simulator for `simulate-imds`; ValueError (shown to the operator) for an
        option this cloud has no use for."""

    @abstractmethod
    def rehearsal_simulator(self) -> SimulatedService:
        """A fresh simulator for `rehearse` (not yet started)."""

    @abstractmethod
    def pointed_at(self, config: Config, endpoint: str) -> Config:
        """`config` with this cloud's metadata service at `endpoint` (a simulator)."""

    @abstractmethod
    def rehearse(self, sim: SimulatedService, action: str, lead: float) -> Optional[str]:
        """Raise the signal `rehearse --action` plays; what to print about it."""

    def rehearsal_title(self, action: str, lead: float) -> str:
        """What `rehearse --action` plays, with `--lead` where it counts (the first line)."""
        return self.rehearsals[action]

    def watching(self, action: str, config: Config) -> Config:
        """The config a rehearsal of `action` runs on (the signal rehearsed is watched)."""
        return config

    @abstractmethod
    def deadline_words(self, action: str, config: Config) -> str:
        """How the deadline of `action`'s response is reckoned, for the rehearsal's header."""
