"""journal.py speaks journald's native protocol: tested against a unix datagram socket
standing in for /run/systemd/journal/socket. Also how logs.py picks the journal."""

from __future__ import annotations

import array
import logging
import os
import socket
import struct
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from spotwatch.host import logs
from spotwatch.host.journal import JournalHandler, decode, encode, field_name, priority
from spotwatch.logevents import emit


class FakeJournald:
    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(2.0)

    def receive(self) -> Tuple[bytes, Dict[str, bytes]]:
        """One entry: from the datagram itself, or from a memfd passed with SCM_RIGHTS."""
        fds = array.array("i")
        data, ancillary, _flags, _addr = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(4))
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if fds:
            assert data == b""
            with os.fdopen(fds[0], "rb") as memfd:
                memfd.seek(0)
                data = memfd.read()
        return data, dict(decode(data))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[FakeJournald]:
    fake = FakeJournald(str(tmp_path / "journal.sock"))
    yield fake
    fake.close()


@pytest.fixture
def logger(journald: FakeJournald) -> Iterator[logging.Logger]:
    handler = JournalHandler.create(journald.path)
    assert handler is not None and not handler.via_library
    log = logging.getLogger("spotwatch.test-journal")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    yield log
    log.removeHandler(handler)
    handler.close()


def test_structured_fields(journald: FakeJournald, logger: logging.Logger) -> None:
    emit(
        logger,
        logging.WARNING,
        "hook-ended",
        "checkpoint exited 3",
        action="terminate",
        hook="checkpoint",
        exit_status=3,
        notice_time="2030-01-01T00:00:00Z",
        skipped=None,
    )
    _raw, fields = journald.receive()
    assert fields["MESSAGE"] == b"checkpoint exited 3"
    assert fields["PRIORITY"] == b"4"
    assert fields["SYSLOG_IDENTIFIER"] == b"spotwatch"
    assert fields["LOGGER"] == b"spotwatch.test-journal"
    assert fields["SPOTWATCH_EVENT"] == b"hook-ended"
    assert fields["SPOTWATCH_ACTION"] == b"terminate"
    assert fields["SPOTWATCH_HOOK"] == b"checkpoint"
    assert fields["SPOTWATCH_EXIT_STATUS"] == b"3"
    assert fields["SPOTWATCH_NOTICE_TIME"] == b"2030-01-01T00:00:00Z"
    assert "SPOTWATCH_SKIPPED" not in fields
    # CODE_* name the caller of emit (stacklevel), not logevents.py
    assert fields["CODE_FILE"].endswith(b"test_sd_journal.py")
    assert fields["CODE_FUNC"] == b"test_structured_fields"
    assert int(fields["CODE_LINE"]) > 0


def test_multi_line_values_use_the_binary_form(
    journald: FakeJournald, logger: logging.Logger
) -> None:
    message = "reload refused, keeping the old config:\nhooks[0].timeout: bad\n"
    emit(logger, logging.ERROR, "reload-failed", message, detail="a\nb")
    raw, fields = journald.receive()
    body = message.encode()
    assert b"MESSAGE\n" + struct.pack("<Q", len(body)) + body + b"\n" in raw
    assert fields["MESSAGE"] == body
    assert fields["SPOTWATCH_DETAIL"] == b"a\nb"
    assert fields["PRIORITY"] == b"3"


def test_exception_text_is_part_of_the_message(
    journald: FakeJournald, logger: logging.Logger
) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("step raised")
    _raw, fields = journald.receive()
    assert fields["MESSAGE"].startswith(b"step raised\nTraceback")
    assert b"RuntimeError: boom" in fields["MESSAGE"]


def test_big_entries_go_by_memfd(journald: FakeJournald) -> None:
    handler = JournalHandler(journald.path, datagram_max=4096)
    record = logging.LogRecord("spotwatch.x", logging.INFO, __file__, 1, "x" * 50_000, None, None)
    handler.emit(record)
    _raw, fields = journald.receive()
    assert fields["MESSAGE"] == b"x" * 50_000
    handler.close()


def test_without_memfd_big_messages_are_truncated(
    journald: FakeJournald, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "memfd_create")
    handler = JournalHandler(journald.path, datagram_max=4096)
    record = logging.LogRecord("spotwatch.x", logging.INFO, __file__, 1, "y" * 50_000, None, None)
    handler.emit(record)
    raw, fields = journald.receive()
    assert len(raw) <= 4096
    assert fields["MESSAGE"].endswith(b"... [truncated]")
    assert fields["SYSLOG_IDENTIFIER"] == b"spotwatch"
    handler.close()


def test_create_returns_none_when_nobody_listens(tmp_path: Path) -> None:
    assert JournalHandler.create(str(tmp_path / "absent.sock")) is None
    stale = tmp_path / "stale.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(stale))
    sock.close()  # the file stays, nobody is bound: ECONNREFUSED
    assert JournalHandler.create(str(stale)) is None


def test_encoding_helpers() -> None:
    assert field_name("notice_time") == "SPOTWATCH_NOTICE_TIME"
    assert field_name("weird-key.x") == "SPOTWATCH_WEIRD_KEY_X"
    assert len(field_name("k" * 100)) == 64
    assert [priority(level) for level in (50, 40, 30, 20, 10, 5)] == [2, 3, 4, 6, 7, 7]
    fields: List[Tuple[str, bytes]] = [("A", b"1"), ("B", b"x\ny"), ("C", b"")]
    assert decode(encode(fields)) == fields


# --------------------------------------------------------------------- logs.configure


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("JOURNAL_STREAM", "INVOCATION_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(logs, "_warned_unreachable", False)
    return monkeypatch


def _handlers() -> List[logging.Handler]:
    return list(logging.getLogger(logs.ROOT).handlers)


def test_auto_is_text_outside_systemd(clean_env: pytest.MonkeyPatch, journald: FakeJournald):
    logs.configure("info", "auto", journal_socket=journald.path)
    assert not isinstance(_handlers()[0], JournalHandler)


def test_auto_is_journal_under_systemd(clean_env: pytest.MonkeyPatch, journald: FakeJournald):
    clean_env.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    logs.configure("info", "auto", journal_socket=journald.path)
    try:
        assert isinstance(_handlers()[0], JournalHandler)
        emit(logging.getLogger("spotwatch.daemon"), logging.INFO, "notice", "hello", hook="h")
        _raw, fields = journald.receive()
        assert fields["SPOTWATCH_EVENT"] == b"notice" and fields["SPOTWATCH_HOOK"] == b"h"
    finally:
        logs.configure("info", "text")


def test_auto_under_systemd_without_journald_is_text(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("JOURNAL_STREAM", "8:1234")
    logs.configure("info", "auto", journal_socket=str(tmp_path / "absent.sock"))
    assert not isinstance(_handlers()[0], JournalHandler)
    assert "journald" not in capsys.readouterr().err  # auto falls back quietly


def test_forced_journal_falls_back_with_one_warning(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import io

    stream = io.StringIO()
    for _ in range(3):  # a reload reconfigures: still one warning
        logs.configure("info", "journal", stream, journal_socket=str(tmp_path / "absent.sock"))
    assert not isinstance(_handlers()[0], JournalHandler)
    assert stream.getvalue().count("journald does not answer") == 1
    logs.configure("info", "text")
