"""Shared fixtures for the detection tests: a live IMDS simulator and clients pointed at it."""

from __future__ import annotations

import socket
from typing import Callable, Iterator, List

import pytest

from spotwatch.clouds.aws.imds import ImdsClient
from spotwatch.simulator.imds import ImdsSimulator


@pytest.fixture
def sim() -> Iterator[ImdsSimulator]:
    """A started simulator on a free port, stopped after the test."""
    simulator = ImdsSimulator().start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def make_client(sim: ImdsSimulator) -> Iterator[Callable[..., ImdsClient]]:
    """Build ImdsClients against `sim` (keyword arguments go to ImdsClient); all closed after."""
    made: List[ImdsClient] = []

    def factory(**kwargs: object) -> ImdsClient:
        client = ImdsClient(sim.endpoint, **kwargs)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> List[object]:
    """Counts TCP connections opened by http.client from now on (one entry per connect)."""
    opened: List[object] = []
    real = socket.create_connection

    def counting(*args: object, **kwargs: object) -> socket.socket:
        sock = real(*args, **kwargs)  # type: ignore[arg-type]
        opened.append(sock)
        return sock

    monkeypatch.setattr(socket, "create_connection", counting)
    return opened
