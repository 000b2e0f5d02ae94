"""Azure's Instance Metadata Service client (http://169.254.169.254/metadata/...).

Every request carries `Metadata: true` (the service answers 400 without it: the header shows
the request was meant for it and not redirected) and names its `api-version`.
"""

from __future__ import annotations

from typing import Dict

from spotwatch.detection.metadata import MetadataClient

PREFIX = "/metadata/"
HEADER = "Metadata"
EVENTS_VERSION = "2020-07-01"
INSTANCE_VERSION = "2021-02-01"
SCHEDULED_EVENTS = f"scheduledevents?api-version={EVENTS_VERSION}"
VM_NAME = f"instance/compute/name?api-version={INSTANCE_VERSION}&format=text"
VM_ID = f"instance/compute/vmId?api-version={INSTANCE_VERSION}&format=text"


class AzureClient(MetadataClient):
    def full_path(self, path: str) -> str:
        return PREFIX + path.lstrip("/")

    def request_headers(self) -> Dict[str, str]:
        return {HEADER: "true"}
