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
from moto.server import ThreadedMotoServer


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Callable[[Optional[str]], None]:
    """Dummy credentials, a region, no shared config; call it with an endpoint URL."""
    for name in (
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_ECS",
        "AWS_ENDPOINT_URL_EC2",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

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
