"""Google's metadata server client (http://metadata.google.internal/computeMetadata/v1/).

Every request carries `Metadata-Flavor: Google`, and an answer that does not carry it back
is not believed: the metadata server always sends it, so an answer without it came from
something else on the way (a proxy, a stand-in). A 503 is transient (the server answers it
for under a second during maintenance) and retried like any 5xx.

`wait_for_change` is the hanging GET: the server holds the request until the value's ETag
differs from `last_etag` or `timeout_sec` has passed, then answers the value as it is (with
its ETag; a 503 is returned as it is, and the caller asks again). Without `last_etag` a
change made between two requests would be missed, so it is always given. One hanging
request at a time per connection: each watch has a client of its own (clouds/gcp/watch.py).
"""

from __future__ import annotations

from urllib.parse import quote

from spotwatch.detection.http import Response
from spotwatch.detection.metadata import (
    MetadataClient,
    MetadataError,
    Reply,
    Transient,
    is_transient_status,
)

PREFIX = "/computeMetadata/v1/"
FLAVOR = "Metadata-Flavor"
GOOGLE = "Google"


class GcpClient(MetadataClient):
    def full_path(self, path: str) -> str:
        return PREFIX + path.lstrip("/")

    def request_headers(self) -> dict[str, str]:
        return {FLAVOR: GOOGLE}

    def check_answer(self, response: Response) -> None:
        if response.headers.get(FLAVOR.lower()) != GOOGLE:
            raise Transient(f"answer without {FLAVOR}: {GOOGLE} (not the metadata server)")

    def wait_for_change(self, path: str, etag: str, seconds: int) -> Reply:
        """One hanging GET of `path`: answered when its ETag is no longer `etag`, or after
        `seconds` with the value unchanged. Raises `MetadataError` on any failure (the
        caller falls back to plain reads)."""
        query = f"?wait_for_change=true&last_etag={quote(etag, safe='')}&timeout_sec={seconds}"
        full = self.full_path(path) + query
        budget = seconds + self.timeout  # the server's wait, then an ordinary answer's time
        try:
            response = self._request(
                "GET", full, self.request_headers(), self.now() + budget, budget=budget
            )
            if not is_transient_status(response.status):  # a 503 is answered as it is
                self.check_answer(response)
            return Reply(response.status, response.body, response.headers)
        except Transient as failure:
            where = self.full_path(path)
            raise MetadataError(f"{where} (waiting for a change): {failure}") from None
