"""Structured log events, shared by every layer.

Each event is an ordinary `logging` record carrying a `spotwatch` dict in `extra`: its
event name and fields. The service's handlers turn that into journal fields
(SPOTWATCH_EVENT, SPOTWATCH_ACTION, SPOTWATCH_HOOK, ...) or JSON keys; plain text shows the
message alone. This module imports nothing of ours so any layer may use it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional


def emit(logger: logging.Logger, level: int, event: str, message: str, **fields: Any) -> None:
    """Log `message` as event `event` with structured `fields` (None values are dropped)."""
    if not logger.isEnabledFor(level):
        return
    data = {"event": event, **{k: v for k, v in fields.items() if v is not None}}
    logger.log(level, message, extra={"spotwatch": data}, stacklevel=2)


class RepeatFilter:
    """Logs a failure once, then counts identical repeats until something else happens.

    A daemon that polls every 5 s must not write 17,000 identical lines a day when IMDS is
    down; an operator still needs to know it stayed down, so the count is reported when the
    condition ends (or changes).
    """

    def __init__(self, logger: logging.Logger, event: str) -> None:
        self._logger = logger
        self._event = event
        self._lock = threading.Lock()
        self._last: Optional[str] = None
        self._suppressed = 0

    def failure(
        self,
        message: str,
        level: int = logging.WARNING,
        *,
        key: Optional[str] = None,
        **fields: Any,
    ) -> bool:
        """Report a failure; returns True when it was logged (not a repeat). A repeat is the
        same `key` (default: the same message): details that vary from one occurrence of the
        same outage to the next must not make each a new line."""
        identity = message if key is None else key
        with self._lock:
            if identity == self._last:
                self._suppressed += 1
                return False
            self._flush_locked()
            self._last = identity
        emit(self._logger, level, self._event, message, **fields)
        return True

    def recovered(self, message: Optional[str] = None, **fields: Any) -> None:
        """The condition ended: say how many repeats were held back, and optionally why."""
        with self._lock:
            had_failure = self._last is not None
            self._flush_locked()
            self._last = None
        if had_failure and message:
            emit(self._logger, logging.INFO, self._event + "-recovered", message, **fields)

    def _flush_locked(self) -> None:
        if self._suppressed:
            emit(
                self._logger,
                logging.WARNING,
                self._event,
                f"previous message repeated {self._suppressed} more times: {self._last}",
                repeated=self._suppressed,
            )
        self._suppressed = 0
