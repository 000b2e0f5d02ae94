"""`signal`: send a signal to a unit's main process, or to the PID in a file; with `wait`, the
hook ends when that process has exited.

    with: {unit: trainer.service, signal: USR1, wait: true}
    with: {pidfile: /run/trainer.pid, signal: TERM}

The unit's main PID comes from systemd (`systemctl show -p MainPID --value UNIT`). The
process is opened as a pidfd (Linux 5.3+) before it is signalled, so a PID reused in between
is never signalled, and its exit is waited for on that pidfd (elsewhere: /proc, every 0.1 s).

Root sends the signal, so a PID file is trusted only as far as its owner is: it is opened
without following a symlink, and when it is not root's, the process must be its owner's
(as systemd does with PIDFile=). PID 1 and spotwatch itself are never signalled.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from typing import Any, List, Mapping, Optional, Union

from spotwatch.config.checks import Problems, leaf
from spotwatch.config.errors import describe
from spotwatch.config.values import absolute_path, boolean
from spotwatch.presets.base import (
    FAILED,
    INTERRUPTED,
    OK,
    TIMEOUT,
    Call,
    Preset,
    Requirement,
    Result,
    find_program,
    unit_name,
)

QUERY_TIMEOUT = 5.0  # systemctl show answers in milliseconds; a hung manager gets no more
POLL = 0.1  # where no pidfd can be had: how often /proc is looked at


def signal_name(value: Any) -> str:
    """TERM, SIGTERM, usr1, ...: any signal name, given back as SIGNAME."""
    name = value.upper() if isinstance(value, str) else ""
    name = name if name.startswith("SIG") else "SIG" + name
    if name not in signal.Signals.__members__ or name.startswith("SIG_"):
        raise ValueError(f"expected a signal name like TERM or USR1, got {describe(value)}")
    return name


class Target:
    """The process to signal: its PID and what named it."""

    def __init__(self, pid: int, named_by: str) -> None:
        self.pid = pid
        self.named_by = named_by

    def __str__(self) -> str:
        return f"PID {self.pid} ({self.named_by})"


class SignalPreset(Preset):
    name = "signal"
    summary = (
        "sends the signal to the unit's main process (or the PID in the file); with wait, "
        "the hook ends when that process has exited"
    )
    arguments = {
        "unit": leaf(unit_name),
        "pidfile": leaf(absolute_path),
        "signal": leaf(signal_name),
        "wait": leaf(boolean),
    }
    defaults = {"signal": "SIGTERM", "wait": False}

    def check_arguments(self, given: Mapping[str, Any], path: str, problems: Problems) -> None:
        if "unit" in given and "pidfile" in given:
            problems.append(f"{path}.pidfile: give unit or pidfile, not both")
        elif "unit" not in given and "pidfile" not in given:
            problems.append(f"{path}.unit: required (or pidfile)")

    def would(self, args: Mapping[str, Any], call: Call) -> str:
        found = find_target(args)  # read-only: which process it would be
        now = str(found) if isinstance(found, Target) else found
        waits = " and wait for it to exit" if args["wait"] else ""
        return f"send {args['signal']} to {describe_source(args)} (now: {now}){waits}"

    def run(self, args: Mapping[str, Any], call: Call) -> Result:
        found = find_target(args)
        if not isinstance(found, Target):
            return Result(FAILED, found)
        sig = signal.Signals[args["signal"]]
        handle = _open(found.pid)
        try:
            problem = _send(found.pid, handle, sig)
            if problem:
                return Result(FAILED, f"{sig.name} to {found}: {problem}")
            sent = f"sent {sig.name} to {found}"
            if not args["wait"]:
                return Result(OK, sent)
            started = time.monotonic()
            while not _exited(found.pid, handle, min(0.25, max(0.0, call.time_left()))):
                if call.stopping():
                    return Result(INTERRUPTED, f"{sent}; stopped waiting: the daemon's shutdown")
                if call.time_left() <= 0:
                    waited = time.monotonic() - started
                    return Result(TIMEOUT, f"{sent}; it had not exited after {waited:.1f} s")
            return Result(OK, f"{sent}; it exited after {time.monotonic() - started:.2f} s")
        finally:
            if handle is not None:
                os.close(handle)

    def requirements(self, args: Mapping[str, Any]) -> List[Requirement]:
        if "unit" in args:
            return [Requirement("program", "systemctl"), Requirement("unit", args["unit"])]
        return [Requirement("pidfile", args["pidfile"])]


PRESET = SignalPreset()


def describe_source(args: Mapping[str, Any]) -> str:
    if "unit" in args:
        return f"the main process of {args['unit']}"
    return f"the PID in {args['pidfile']}"


def find_target(args: Mapping[str, Any]) -> Union[Target, str]:
    """The process to signal, or why there is none."""
    if "unit" in args:
        return unit_main_pid(args["unit"])
    return pid_from_file(args["pidfile"])


def unit_main_pid(unit: str) -> Union[Target, str]:
    found = find_program("systemctl")
    if found.path is None:
        return f"cannot ask systemd for {unit}'s main PID: {found.problem}"
    try:
        done = subprocess.run(
            [found.path, "show", "-p", "MainPID", "--value", unit],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=QUERY_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError) as failure:
        return f"systemctl show {unit}: {failure}"
    text = done.stdout.strip()
    if done.returncode != 0 or not text.isdigit():
        why = (done.stderr.strip() or text or f"exit {done.returncode}").splitlines()[-1][:200]
        return f"systemctl show {unit}: {why}"
    if int(text) == 0:
        return f"{unit} has no main process (not running)"
    return checked(int(text), unit)


def pid_from_file(path: str) -> Union[Target, str]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as failure:
        return f"{path}: {failure.strerror or failure}"
    try:
        info = os.fstat(fd)
        text = os.read(fd, 64).decode("ascii", "replace")
    except OSError as failure:
        return f"{path}: {failure.strerror or failure}"
    finally:
        os.close(fd)
    first = text.strip().split("\n", 1)[0].strip() if text.strip() else ""
    if not first.isdigit():
        return f"{path}: no PID in it ({describe(first)})"
    target = checked(int(first), path)
    if isinstance(target, Target) and info.st_uid != 0:
        owner = process_uid(target.pid)
        if owner != info.st_uid:
            return (
                f"{path} is owned by uid {info.st_uid} but names PID {target.pid} of uid "
                f"{owner}: not signalled (a PID file names only its owner's processes)"
            )
    return target


def checked(pid: int, named_by: str) -> Union[Target, str]:
    if pid <= 1 or pid == os.getpid():
        return f"{named_by} names PID {pid}: never signalled"
    if process_state(pid) in (None, "Z", "X"):
        return f"{named_by} names PID {pid}, which is not running"
    return Target(pid, named_by)


def _stat_fields(pid: int) -> Optional[List[str]]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].decode("ascii", "replace").split()


def process_state(pid: int) -> Optional[str]:
    """The process's state letter (R, S, Z, ...), None when there is no such process."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def process_uid(pid: int) -> Optional[int]:
    with contextlib.suppress(OSError, ValueError, IndexError), open(
        f"/proc/{pid}/status", encoding="ascii", errors="replace"
    ) as handle:
        for line in handle:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return None


def _open(pid: int) -> Optional[int]:
    """A pidfd for `pid`, or None where the kernel or Python has none."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


def _send(pid: int, handle: Optional[int], sig: signal.Signals) -> str:
    """Send `sig`; "" when sent, else why not."""
    sender = getattr(signal, "pidfd_send_signal", None)
    try:
        if handle is not None and sender is not None:
            sender(handle, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        return "the process had already exited"
    except OSError as failure:
        return failure.strerror or str(failure)
    return ""


def _exited(pid: int, handle: Optional[int], wait: float) -> bool:
    """Wait up to `wait` seconds; True once the process has exited (a zombie counts)."""
    if handle is not None:
        poller = select.poll()
        poller.register(handle, select.POLLIN)
        return bool(poller.poll(int(wait * 1000)))
    deadline = time.monotonic() + wait
    while True:
        if process_state(pid) in (None, "Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))
