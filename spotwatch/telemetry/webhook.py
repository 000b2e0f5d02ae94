"""`webhook.url`: POST a JSON event on a notice, on each step's end and on completion.

Events go out in order from one background thread, so a slow or failing receiver never
holds up the response. Each is tried `1 + webhook.retries` times with exponential backoff
(jittered) while there is time: retries stop at the event's give-up moment (the notice's
deadline, or a little after the event for a notice already past it). 5xx, 408, 429 and
connection failures are retried; any other answer is final. `requests` is imported on first
use (it honours HTTPS_PROXY/NO_PROXY, which instances behind a proxy need); userinfo in
the URL is sent as basic auth, unless an Authorization header is configured.

Secrets: the URL's userinfo, path and query, and every header value are kept out of the
log. The URL is logged as scheme://host[:port] only, and failure text is scrubbed of every
secret fragment before it is logged.
"""

from __future__ import annotations

import atexit
import logging
import queue
import random
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import unquote, urlsplit

from spotwatch.config.schema import WebhookSettings
from spotwatch.logevents import emit

log = logging.getLogger("spotwatch.webhook")

BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
MIN_GIVE_UP = 10.0  # an event always gets at least this long, even past the deadline
EXIT_FLUSH = 10.0  # at exit, undelivered events get at most this long
REDACTED = "***"


def safe_url(url: str) -> str:
    """scheme://host[:port] and nothing that may be a secret (userinfo, path, query)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<webhook url>"
    rest = "/…" if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{rest}"


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
    found += [value for value in settings.headers.values() if value]
    return sorted({s for s in found if s and s != "/"}, key=len, reverse=True)


def redact(text: str, secrets: List[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


@dataclass
class _Item:
    event: Dict[str, Any]
    give_up: float  # wall time after which no retry starts


_STOP = object()
_SENDERS: weakref.WeakSet[WebhookSender] = weakref.WeakSet()


def flush_all(timeout: float) -> bool:
    """Wait (bounded) until every sender of this process has delivered or given up."""
    end = time.monotonic() + timeout
    return all(s.flush(max(0.0, end - time.monotonic())) for s in list(_SENDERS))


class WebhookSender:
    """Delivers events in order from a background thread; `settings()` is asked per event,
    so a reload that changes the webhook takes effect for the next one."""

    def __init__(
        self,
        settings: Callable[[], WebhookSettings],
        *,
        backoff_base: float = BACKOFF_BASE,
        post: Optional[Callable[..., Any]] = None,
    ) -> None:
        self._settings = settings
        self._backoff_base = backoff_base
        self._post = post
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._sequence = 0
        self._session: Any = None
        self.delivered = 0
        self.dropped = 0
        _SENDERS.add(self)

    # ----------------------------------------------------------------- producer side

    def send(self, event: Dict[str, Any], give_up: float) -> None:
        """Queue an event (never blocks). Events are numbered in the order queued."""
        if not self._settings().url:
            return
        with self._lock:
            self._sequence += 1
            event = {**event, "sequence": self._sequence}
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
                self._thread.start()
                atexit.register(self.flush, EXIT_FLUSH)
        self._queue.put(_Item(event, max(give_up, time.time() + MIN_GIVE_UP)))

    def flush(self, timeout: float) -> bool:
        """Wait until every queued event was delivered or given up; False on timeout."""
        end = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= end:
                return False
            time.sleep(0.02)
        return True

    # ----------------------------------------------------------------- sender thread

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._deliver(item)
            except Exception:  # never let one event kill the sender
                log.exception("webhook sender failed on one event")
            finally:
                self._queue.task_done()

    def _deliver(self, item: _Item) -> None:
        settings = self._settings()
        if not settings.url:
            return
        secrets = secrets_of(settings)
        where = safe_url(settings.url)
        kind = item.event.get("event")
        attempt = 0
        while True:
            failure, retry = self._attempt(settings, item.event)
            if failure is None:
                self.delivered += 1
                if attempt:
                    emit(
                        log,
                        logging.INFO,
                        "webhook-delivered",
                        f"webhook {kind} event delivered to {where} after {attempt} retries",
                    )
                return
            failure = redact(failure, secrets)
            pause = min(BACKOFF_CAP, self._backoff_base * 2**attempt) * random.uniform(0.5, 1.0)
            if not retry or attempt >= settings.retries or time.time() + pause > item.give_up:
                self.dropped += 1
                emit(
                    log,
                    logging.ERROR,
                    "webhook-failed",
                    f"webhook {kind} event to {where} not delivered: {failure}"
                    f" ({attempt + 1} attempts)",
                    webhook_event=kind,
                )
                return
            emit(
                log,
                logging.WARNING,
                "webhook-retry",
                f"webhook {kind} event to {where}: {failure}; retrying in {pause:.1f} s",
                webhook_event=kind,
            )
            time.sleep(pause)
            attempt += 1

    def _attempt(
        self, settings: WebhookSettings, event: Dict[str, Any]
    ) -> tuple[Optional[str], bool]:
        """(None, _) on success, else (why, whether to retry)."""
        assert settings.url is not None
        headers = {"Content-Type": "application/json", **settings.headers}
        try:
            if self._post is not None:
                status = int(self._post(settings.url, event, headers, settings.timeout))
            else:
                status = self._requests_post(settings.url, event, headers, settings.timeout)
        except Exception as failure:  # connection refused, timeout, TLS, proxy, ...
            return f"{type(failure).__name__}: {failure}"[:300], True
        if 200 <= status < 300:
            return None, False
        return f"HTTP {status}", status >= 500 or status in (408, 429)

    def _requests_post(
        self, url: str, event: Dict[str, Any], headers: Dict[str, str], timeout: float
    ) -> int:
        if self._session is None:
            import requests  # only when a webhook is configured: ~40 ms of imports

            self._session = requests.Session()
        if "@" in urlsplit(url).netloc and any(k.lower() == "authorization" for k in headers):
            # requests would let the URL's userinfo replace the configured header: it wins.
            parts = urlsplit(url)
            url = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        response = self._session.post(url, json=event, headers=headers, timeout=timeout)
        response.close()
        return int(response.status_code)
