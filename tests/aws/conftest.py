"""Fixtures for the AWS parts: moto's server over real HTTP, a fake ECS agent, an ECS world.

One moto server per test module (reset before each test); the environment points boto3 at
it through `AWS_ENDPOINT_URL` with dummy credentials, and never at a real account.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Iterator, Optional

import pytest
import requests
from awshelpers import REGION, EcsWorld, FakeAgent, ScriptedEndpoint, build_world
from lbhelpers import LIFECYCLE, LbSetup, RecordingProxy, build_lb_world
from proxy import Proxy
from testkit import dummy_aws_env

from spotwatch.simulator.imds import ImdsSimulator


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Callable[[Optional[str]], None]:
    """Dummy credentials, a region, no shared config; call it with an endpoint URL."""
    dummy_aws_env(monkeypatch, tmp_path, REGION)

    def point_at(url: Optional[str]) -> None:
        if url:
            monkeypatch.setenv("AWS_ENDPOINT_URL", url)

    return point_at


@pytest.fixture
def moto(moto_url: str, aws_env: Callable[[Optional[str]], None]) -> str:
    """moto's server, reset, with the environment pointing at it."""
    requests.post(moto_url + "/moto-api/reset", timeout=5).raise_for_status()
    aws_env(moto_url)
    return moto_url


@pytest.fixture
def world(moto: str) -> EcsWorld:
    return build_world()


@pytest.fixture
def proxy(moto: str, world: EcsWorld, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    """The recording endpoint in front of moto; spotwatch's ECS and EC2 clients are pointed
    at it (the world was built on moto directly, before)."""
    front = Proxy(moto)
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", front.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", front.url)
    try:
        yield front
    finally:
        front.close()


# --------------------------------------------------------------------- fake ECS agent


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    fake = FakeAgent()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def dead_url() -> str:
    """A URL on which nothing listens (connection refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def scripted() -> Iterator[ScriptedEndpoint]:
    endpoint = ScriptedEndpoint().start()
    try:
        yield endpoint
    finally:
        endpoint.stop()


@pytest.fixture
def imds() -> Iterator[ImdsSimulator]:
    """The IMDS simulator (a real HTTP server on 127.0.0.1)."""
    with ImdsSimulator() as simulator:
        yield simulator


@pytest.fixture
def lb(moto: str, aws_env: Callable[[Optional[str]], None]) -> Iterator[LbSetup]:
    """Target groups, Classic Load Balancers and an Auto Scaling group in moto, behind the
    recording endpoint (which plays the target group `web`, where this instance listens on
    two ports); the IMDS simulator answers for the group's instance, InService."""
    world = build_lb_world()
    proxy = RecordingProxy(moto).start()
    proxy.own(world.web, world.instance_id, [80, 8081])
    aws_env(proxy.url)  # spotwatch's clients go through the recording endpoint
    try:
        with ImdsSimulator(instance_id=world.instance_id) as sim:
            sim.set_path(LIFECYCLE, 200, "InService")
            yield world, proxy, sim
    finally:
        proxy.stop()
