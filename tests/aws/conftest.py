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
from testkit import dummy_aws_env, moto_server


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    yield from moto_server()


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
