"""The metadata tree: what the simulated instance's fixed paths say, and how IMDS answers a
path (a document, a directory listing, or 404).

Standard library only, like the rest of the simulator.
"""

import json
from datetime import datetime, timezone
from typing import Dict, Tuple, Union

from spotwatch.simulator.http import TEXT, phrase

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_time(value: Union[str, datetime]) -> str:
    """IMDS time format, UTC, whole seconds. Strings pass through untouched (they may be
    deliberately malformed); naive datetimes are taken as UTC."""
    if isinstance(value, str):
        return value
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc)
    return value.strftime(TIME_FORMAT)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def instance_documents(instance_id: str, region: str) -> Dict[str, bytes]:
    """The paths every instance answers: its id, placement and identity document."""
    zone = region + "a"
    identity = {
        "accountId": "123456789012",
        "architecture": "x86_64",
        "availabilityZone": zone,
        "imageId": "ami-0123456789abcdef0",
        "instanceId": instance_id,
        "instanceType": "m5.large",
        "pendingTime": "2024-01-01T00:00:00Z",
        "privateIp": "10.0.0.10",
        "region": region,
        "version": "2017-09-30",
    }
    # EC2's private DNS name (the node name EKS registers): ec2.internal in us-east-1.
    domain = "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"
    return {
        "/latest/meta-data/instance-id": instance_id.encode(),
        "/latest/meta-data/local-hostname": f"ip-10-0-0-10.{domain}".encode(),
        "/latest/meta-data/placement/region": region.encode(),
        "/latest/meta-data/placement/availability-zone": zone.encode(),
        "/latest/dynamic/instance-identity/document": json.dumps(identity, indent=2).encode(),
    }


def answer_from_tree(docs: Dict[str, bytes], path: str) -> Tuple[int, bytes, str]:
    """(status, body, content type) for a GET of `path` among `docs` (path -> body)."""
    if path in docs:
        octets = path == "/latest/user-data"
        return 200, docs[path], "application/octet-stream" if octets else TEXT
    # A directory (with or without its trailing slash) lists what is under it, as IMDS does.
    prefix = path if path.endswith("/") else path + "/"
    children = sorted(
        {
            rest.split("/", 1)[0] + ("/" if "/" in rest else "")
            for rest in (p[len(prefix) :] for p in docs if p.startswith(prefix))
        }
    )
    if children:
        return 200, "\n".join(children).encode(), TEXT
    return 404, phrase(404), TEXT
