"""`webhook.url`: POST each event (as JSON, a Slack message or plain text: `messages`).

Delivery (order, retries, the give-up moment) is the lane's (`delivery`); this module makes
one attempt. 5xx, 408, 429 and connection failures are worth a retry; any other answer is
final. `requests` is imported on first use (it honours HTTPS_PROXY/NO_PROXY, which instances
behind a proxy need); userinfo in the URL is sent as basic auth, unless an Authorization
header is configured.

Secrets: the URL's userinfo, path and query, and every header value are kept out of the
log. The URL is logged as scheme://host[:port] only, and failure text is scrubbed of every
secret fragment before it is cut short and logged.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import unquote, urlsplit

from spotwatch.config.schema import WebhookSettings
from spotwatch.config.values import safe_url
from spotwatch.telemetry.delivery import Attempt, Sink, flush_all, redact
from spotwatch.telemetry.messages import webhook_body

__all__ = ["WebhookSink", "flush_all", "redact", "safe_url", "secrets_of"]

# post(url, body, headers, timeout) -> HTTP status; the default sends it with requests.
Post = Callable[[str, bytes, Dict[str, str], float], int]


_WORDS = re.compile(r"[\s,;]+")


def secrets_of(settings: WebhookSettings) -> List[str]:
    """Every fragment of the settings that must not reach the log, longest first."""
    found: List[str] = []
    if settings.url:
        parts = urlsplit(settings.url)
        found += [settings.url, parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""]
        found += [parts.username or "", parts.password or "", parts.query, parts.path]
        found += [unquote(s) for s in (parts.username, parts.password, parts.query) if s]
        if parts.path not in ("", "/"):
            found += [p for p in parts.path.split("/") if len(p) >= 4]
        found += [p for p in re.split(r"[&=]", parts.query) if len(p) >= 4]
    for value in settings.headers.values():
        # "Bearer T0KEN": an error may quote the token alone.
        found += [value, *(word for word in _WORDS.split(value) if len(word) >= 4)]
    return sorted({s for s in found if s and s != "/"}, key=len, reverse=True)


class WebhookSink(Sink):
    """`settings()` is asked per event, so a reload that changes the webhook takes effect
    for the next one."""

    name = "webhook"

    def __init__(
        self, settings: Callable[[], WebhookSettings], *, post: Optional[Post] = None
    ) -> None:
        self._settings = settings
        self._post = post
        self._session: Any = None

    def configured(self) -> bool:
        return bool(self._settings().url)

    def where(self) -> str:
        return safe_url(self._settings().url or "")

    def secrets(self) -> List[str]:
        return secrets_of(self._settings())

    def retries(self) -> int:
        return self._settings().retries

    def attempt(self, event: Dict[str, Any]) -> Attempt:
        settings = self._settings()
        assert settings.url is not None
        body, content_type = webhook_body(settings, event)
        headers = {"Content-Type": content_type, **settings.headers}
        try:
            post = self._post or self._requests_post
            status = int(post(settings.url, body, headers, settings.timeout))
        except Exception as failure:  # connection refused, timeout, TLS, proxy, ...
            return f"{type(failure).__name__}: {failure}", True
        if 200 <= status < 300:
            return None
        return f"HTTP {status}", status >= 500 or status in (408, 429)

    def _requests_post(self, url: str, body: bytes, headers: Dict[str, str], timeout: float) -> int:
        if self._session is None:
            import requests  # only when a webhook is configured: ~40 ms of imports

            self._session = requests.Session()
        if "@" in urlsplit(url).netloc and any(k.lower() == "authorization" for k in headers):
            # requests would let the URL's userinfo replace the configured header: it wins.
            parts = urlsplit(url)
            url = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        response = self._session.post(url, data=body, headers=headers, timeout=timeout)
        response.close()
        return int(response.status_code)
