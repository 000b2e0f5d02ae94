"""`http`: send the §6 event JSON for this notice to a URL and wait up to T for a 2xx.

    with: {url: "https://app.internal/drain?node=${instance_id}", method: POST, headers: {}}

The body is the `notice` event the webhook gets first (`cancel` for a cancel), without
`sequence` (which numbers the webhook's and the AWS sinks' events). An answer that may change
(5xx, 408, 429) or no answer at all (connection refused or cut) is tried again, with a
backoff of 0.5, 1, 2, 4 s, while T lasts; any other non-2xx answer is final. The step is `ok`
on a 2xx, `failed` on a final answer or when the last try failed outright, and `timeout`
when T ran out waiting for one.

The URL's userinfo, path and query and every header value stay out of the log and the step's
detail (which shows scheme://host[:port] only), as for the webhook.
"""

from __future__ import annotations

import json
import time
from typing import Any, List, Mapping, Optional, Tuple

from spotwatch.config.checks import http_headers, leaf
from spotwatch.config.values import one_of, safe_url, secret_http_url
from spotwatch.presets.base import (
    FAILED,
    INTERRUPTED,
    OK,
    TIMEOUT,
    Call,
    Preset,
    Requirement,
    Result,
)

CONNECT_TIMEOUT = 5.0
BACKOFF = (0.5, 1.0, 2.0, 4.0)  # then 4 s between tries


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 429)


class HttpPreset(Preset):
    name = "http"
    summary = "sends the §6 event JSON for this notice and waits up to T for a 2xx"
    arguments = {
        "url": leaf(secret_http_url),  # its userinfo, path and query may be tokens
        "method": leaf(one_of("POST", "PUT", "PATCH")),
        "headers": http_headers,
    }
    required = ("url",)
    defaults = {"method": "POST", "headers": {}}

    def would(self, args: Mapping[str, Any], call: Call) -> str:
        body = json.dumps(call.event())
        names = ", ".join(sorted(args["headers"])) or "none"
        return (
            f"{args['method']} the {call.event()['event']} event JSON ({len(body)} bytes) to "
            f"{safe_url(args['url'])} (headers: {names}) and wait up to {call.seconds} s for a 2xx"
        )

    def run(self, args: Mapping[str, Any], call: Call) -> Result:
        import requests  # only when an http preset runs

        where = safe_url(args["url"])
        body = json.dumps(call.event(), default=str).encode("utf-8")
        headers = {"Content-Type": "application/json", **args["headers"]}
        started = time.monotonic()
        tries: List[str] = []
        timed_out = False
        with requests.Session() as session:
            while True:
                left = call.time_left()
                if call.stopping():
                    return Result(INTERRUPTED, f"{where}: stopped by the daemon's shutdown")
                if left <= 0:
                    break
                status, why = _attempt(session, args, body, headers, left)
                took = time.monotonic() - started
                if status is not None and 200 <= status < 300:
                    return Result(OK, f"HTTP {status} from {where} after {took:.2f} s{_n(tries)}")
                tries.append(why)
                timed_out = status is None and "Timeout" in why
                if status is not None and not _retryable(status):
                    return Result(FAILED, f"{why} from {where}{_n(tries[:-1])}; not retried")
                pause = BACKOFF[min(len(tries) - 1, len(BACKOFF) - 1)]
                if pause >= call.time_left():
                    break
                time.sleep(pause)
        took = time.monotonic() - started
        status_now = TIMEOUT if timed_out else FAILED
        return Result(
            status_now, f"no 2xx from {where} in {took:.1f} s: {tries[-1] if tries else 'no time'}"
            f" ({len(tries)} tries)"
        )

    def requirements(self, args: Mapping[str, Any]) -> List[Requirement]:
        return [Requirement("url", args["url"])]


PRESET = HttpPreset()


def _n(tries: List[str]) -> str:
    return f" ({len(tries) + 1} tries)" if tries else ""


def _attempt(
    session: Any, args: Mapping[str, Any], body: bytes, headers: Mapping[str, str], left: float
) -> Tuple[Optional[int], str]:
    """(the HTTP status, or None when no answer came; what happened, safe to log)."""
    import requests

    try:
        answer = session.request(
            args["method"],
            args["url"],
            data=body,
            headers=dict(headers),
            timeout=(min(CONNECT_TIMEOUT, left), left),
            allow_redirects=False,
        )
        answer.close()
    except requests.exceptions.RequestException as failure:
        # Only the kind: its text may quote the URL, and the URL may hold a token.
        return None, type(failure).__name__
    return int(answer.status_code), f"HTTP {answer.status_code}"
