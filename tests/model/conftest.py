"""Fixtures for the model's sequences: one recording endpoint in front of the module's moto
server (`moto_url`, tests/conftest.py); each sequence resets moto and the endpoint's records."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

# The AWS tests' helpers (the ECS agent stand-in, the quiet HTTP handler) are shared.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "aws"))

from model_world import AwsEndpoint


@pytest.fixture(scope="module")
def aws(moto_url: str) -> Iterator[AwsEndpoint]:
    endpoint = AwsEndpoint(moto_url)
    try:
        yield endpoint
    finally:
        endpoint.close()
