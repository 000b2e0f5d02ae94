"""Log output for the service: text or JSON lines on stderr, or the journal under systemd.

Records carry structured fields from `spotwatch.logevents.emit`; JSON lines include them,
journal entries carry them as SPOTWATCH_<NAME> fields (see journal.py), text lines show the
message alone (the message already says what happened).

`log.format`:
- `auto`: the journal when systemd started us (JOURNAL_STREAM or INVOCATION_ID is set) and
  journald answers on its socket; otherwise text on stderr.
- `journal`: the journal; if journald cannot be reached, text on stderr after one warning.
- `json`, `text`: on stderr.

Until the config is loaded the format is not known, yet loading it logs (user data fetched,
or not). `hold_until_configured` keeps those records and the next `configure` writes them
in the chosen format, so every line of a JSON log is JSON, the first one too.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, List, Optional, Tuple

from spotwatch.logevents import emit as emit  # re-exported for the service's own modules

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
ROOT = "spotwatch"


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: Optional[str] = None) -> str:
        return _utc(record.created)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "spotwatch", None)
        if isinstance(fields, dict):
            data.update({k: v for k, v in fields.items() if k not in data})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def _utc(created: float) -> str:
    import time

    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        + f".{int(created % 1 * 1000):03d}Z"
    )


def under_systemd() -> bool:
    """True when systemd started us with our output going to the journal."""
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


_warned_unreachable = False

EARLY_RECORDS_KEPT = 1000  # loading the config logs a handful; this only bounds a surprise


class _EarlyRecords(logging.Handler):
    """Keeps the records logged before the format is known, for `configure` to write."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < EARLY_RECORDS_KEPT:
            self.records.append(record)


def hold_until_configured() -> None:
    """Keep every record from now until the next `configure`, which writes them out."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(logging.DEBUG)  # the level is not known either: `configure` filters
    logger.propagate = False
    _replace_handlers(logger, _EarlyRecords())


def _replace_handlers(logger: logging.Logger, handler: logging.Handler) -> List[logging.LogRecord]:
    """Install `handler` alone; the records a replaced `_EarlyRecords` was keeping."""
    early: List[logging.LogRecord] = []
    for old in list(logger.handlers):
        if isinstance(old, _EarlyRecords):
            early.extend(old.records)
        logger.removeHandler(old)
        old.close()
    logger.addHandler(handler)
    return early


def configure(
    level: str = "info",
    fmt: str = "auto",
    stream: Any = None,
    *,
    journal_socket: Optional[str] = None,
) -> None:
    """(Re)configure the `spotwatch` logger tree; safe to call again on reload."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(LEVELS.get(level, logging.INFO))
    logger.propagate = False
    handler, warning = choose_handler(fmt, stream, journal_socket=journal_socket)
    for record in _replace_handlers(logger, handler):
        if record.levelno >= logger.level:
            handler.handle(record)
    if warning:
        emit(logger, logging.WARNING, "journal-unreachable", warning)


def choose_handler(
    fmt: str, stream: Any = None, *, journal_socket: Optional[str] = None
) -> Tuple[logging.Handler, Optional[str]]:
    """The handler for `fmt`, and a warning to log once it is installed (or None)."""
    global _warned_unreachable
    if fmt == "journal" or (fmt == "auto" and under_systemd()):
        from spotwatch.host.journal import JOURNAL_SOCKET, JournalHandler

        journal = JournalHandler.create(journal_socket)
        if journal is not None:
            return journal, None
        if fmt == "journal" and not _warned_unreachable:
            _warned_unreachable = True  # once per process, not on every reload
            where = journal_socket or JOURNAL_SOCKET
            return make_handler("text", stream), (
                f"log.format is journal but journald does not answer at {where}; "
                "logging text to stderr"
            )
    return make_handler(fmt, stream), None


def make_handler(fmt: str, stream: Any = None) -> logging.Handler:
    """A stderr (or `stream`) handler: JSON lines for `json`, text for anything else."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    return handler
