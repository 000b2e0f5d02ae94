"""moto's S3 over real HTTP for the s3-sync tests: one server per module, reset per test,
and boto3 (in the preset, and in the test's own eyes) pointed at it by the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from testkit import dummy_aws_env

REGION = "eu-west-1"


@pytest.fixture
def s3(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A fresh moto, the environment pointing at it, and an S3 client of the test's own
    (not the preset's)."""
    requests.post(moto_url + "/moto-api/reset", timeout=5).raise_for_status()
    dummy_aws_env(monkeypatch, tmp_path, REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    return boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
