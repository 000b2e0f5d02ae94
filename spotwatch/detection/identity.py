"""This instance's id, from IMDS `meta-data/instance-id`, asked until IMDS answers it.

Hooks (`SPOTWATCH_INSTANCE_ID`) and every step that names the instance (instance action,
load balancers, the lifecycle action) need it. IMDS may not answer it at start (an outage,
a timeout): then it is asked again before a response needs it, so no response runs with an
unknown id while IMDS can answer (CONTRACT §4). Once known it never changes: an instance
keeps its id for life.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional, Tuple

from spotwatch.detection.imds import ImdsClient, ImdsError

INSTANCE_ID_PATH = "meta-data/instance-id"
UNKNOWN = "unknown"  # what hooks are told when IMDS could not say
_MOST_CHARS = 40  # i-0123456789abcdef0 is 19; anything far longer is not an id


def read_instance_id(client: ImdsClient, deadline: float) -> Tuple[Optional[str], str]:
    """(the id IMDS answers by `deadline` (the client's clock), "") or (None, why not)."""
    try:
        reply = client.get(INSTANCE_ID_PATH, deadline=deadline)
    except ImdsError as failure:
        return None, f"IMDS: {failure}"
    text = reply.body.decode("ascii", "replace").strip()
    if reply.status != 200:
        return None, f"IMDS {INSTANCE_ID_PATH} answered HTTP {reply.status}"
    if not text.startswith("i-") or len(text) >= _MOST_CHARS:
        return None, f"IMDS {INSTANCE_ID_PATH} answered {len(text)} characters that are no id"
    return text, ""


class InstanceIdentity:
    """The id once known; until then each `learn` asks IMDS (one caller at a time: others
    wait for its answer rather than ask too). `why` says why it is not known."""

    def __init__(self, client: Callable[[], ImdsClient], known: Optional[str] = None) -> None:
        self._client = client  # the daemon's current client (a reload may replace it)
        self._lock = threading.Lock()
        self.known = known
        self.why = "" if known else "not asked yet"

    def learn(self, seconds: float) -> Optional[str]:
        """The id, asking IMDS for at most `seconds` when it is not known yet."""
        if self.known is not None:
            return self.known
        with self._lock:
            if self.known is None:
                client = self._client()
                self.known, self.why = read_instance_id(client, client.now() + seconds)
            return self.known
