"""Signals reach the poll loop even while it sleeps through a long interval, and whichever
thread the kernel hands them to (hooks, ECS and webhook threads are candidates): the
handlers only set flags and write to the loop's wake pipe, which is also the interpreter's
wakeup fd. A 30 s interval here means a handler that waited for the sleep to end would
make these tests take 30 s."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Callable

from service_support import wait_for

from spotwatch.config.load import load_config
from spotwatch.config.schema import Config
from spotwatch.daemon.shell import Daemon

SLOW = "30s"


def _run_signalled(daemon: Daemon, *signums: int) -> float:
    """Run the daemon on this (the main) thread; after its first poll a helper thread raises
    each signal on itself. Returns how long `run()` took."""
    running = threading.Event()
    running.set()

    def send() -> None:
        wait_for(lambda: daemon.watcher is not None and daemon.watcher.polls >= 1, 10)
        for signum in signums:
            time.sleep(0.2)
            if running.is_set():  # a failed run must not leave signals flying at pytest
                signal.pthread_kill(threading.get_ident(), signum)

    threading.Thread(target=send, daemon=True).start()
    started = time.monotonic()
    try:
        assert daemon.run() == 0
    finally:
        running.clear()
    return time.monotonic() - started


def _load(path: Path) -> Config:
    return load_config(str(path))


def test_sigterm_on_another_thread_ends_a_long_sleep_at_once(
    write_config: Callable[..., Path],
) -> None:
    daemon = Daemon(_load(write_config(poll_interval=SLOW)))
    assert _run_signalled(daemon, signal.SIGTERM) < 10  # not the 30 s interval
    assert daemon.watcher is not None and daemon.watcher.polls == 1


def test_sighup_reloads_and_polls_at_once_then_sigterm_stops(
    write_config: Callable[..., Path],
) -> None:
    path = write_config(poll_interval=SLOW)
    daemon = Daemon(_load(path), reload_config=lambda: _load(path))
    path.write_text(path.read_text().replace(SLOW, "20s"))
    assert _run_signalled(daemon, signal.SIGHUP, signal.SIGTERM) < 10
    assert daemon.config.poll_interval == 20.0
    assert daemon.watcher is not None and daemon.watcher.polls == 2  # the reload's poll


def test_handlers_and_wakeup_fd_are_put_back(write_config: Callable[..., Path]) -> None:
    before = signal.getsignal(signal.SIGHUP), signal.getsignal(signal.SIGTERM)
    daemon = Daemon(_load(write_config(poll_interval=SLOW)))
    _run_signalled(daemon, signal.SIGINT)
    assert (signal.getsignal(signal.SIGHUP), signal.getsignal(signal.SIGTERM)) == before
    assert signal.set_wakeup_fd(-1) == -1  # nobody's pipe is left as the wakeup fd
