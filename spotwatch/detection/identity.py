"""This VM's id, from its cloud's metadata service (AWS: IMDS `meta-data/instance-id`),
asked until the service answers it.

Hooks (`SPOTWATCH_INSTANCE_ID`) and every step that names the instance (instance action,
load balancers, the lifecycle action) need it. IMDS may not answer it at start (an outage,
a timeout): then it is asked again before a response needs it, so no response runs with an
unknown id while IMDS can answer (CONTRACT §4). Once known it never changes: an instance
keeps its id for life.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional, Tuple

from spotwatch.detection.metadata import MetadataClient

UNKNOWN = "unknown"  # what hooks are told when the metadata service could not say
# The cloud's way to read the id: (id, "") or (None, why not) by a deadline on the client's clock.
ReadId = Callable[[MetadataClient, float], Tuple[Optional[str], str]]


class InstanceIdentity:
    """The id once known; until then each `learn` asks the metadata service (one caller at
    a time: others wait for its answer rather than ask too). `why` says why it is not known."""

    def __init__(
        self,
        client: Callable[[], MetadataClient],
        read: Callable[[], ReadId],
        known: Optional[str] = None,
    ) -> None:
        self._client = client  # the daemon's current client (a reload may replace it)
        self._read = read  # the current cloud's reader (clouds/<cloud>/cloud.py)
        self._lock = threading.Lock()
        self.known = known
        self.why = "" if known else "not asked yet"

    def learn(self, seconds: float) -> Optional[str]:
        """The id, asking the metadata service for at most `seconds` when not known yet."""
        if self.known is not None:
            return self.known
        with self._lock:
            if self.known is None:
                client = self._client()
                self.known, self.why = self._read()(client, client.now() + seconds)
            return self.known
