"""Fixtures for the model's sequences: one recording endpoint in front of the module's moto
server (`moto_url`, tests/conftest.py); each sequence resets moto and the endpoint's records.
`host`: logind on a private bus (where dbus-daemon and jeepney are there) and the http
preset's receiver (model_host.py), shared the same way."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

# The AWS tests' helpers (the ECS agent stand-in, the quiet HTTP handler) and the logind
# tests' private bus and login1 stand-in are shared.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "aws"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "logind"))

from model_host import Host
from model_world import AwsEndpoint


@pytest.fixture(scope="module")
def aws(moto_url: str) -> Iterator[AwsEndpoint]:
    endpoint = AwsEndpoint(moto_url)
    try:
        yield endpoint
    finally:
        endpoint.close()


@pytest.fixture(scope="module")
def host(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Host]:
    try:  # the session's dockerd (tests/conftest.py); without one, runtime is not drawn
        docker = request.getfixturevalue("dockerd")
    except pytest.skip.Exception:
        docker = None
    shared = Host.start(tmp_path_factory.mktemp("host"), docker)
    try:
        yield shared
    finally:
        shared.close()
