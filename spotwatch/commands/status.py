"""`spotwatch status`: what the daemon last recorded in its state directory.

JSON: {"last_poll": {"time", "result"}, "notice": {...} or null, "notices": [...],
"steps": [...]}. `notice` is the active notice with the earliest deadline (else the last one
handled), with its steps; `notices` lists every notice that stands now, earliest deadline
first, each with its `state`: `responding`, `done`, or `waiting` (a scheduled event whose
response starts later, at `starts`; never `notice`). Read through state/reader.py.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from datetime import datetime
from typing import Any, Dict, List, Optional

from spotwatch.config.errors import ConfigError
from spotwatch.config.load import load_config
from spotwatch.config.schema import Config
from spotwatch.exits import EX_NO_STATE, EX_OK
from spotwatch.state.files import POLL_FILE, STATE_FILE
from spotwatch.state.reader import (
    ResponseView,
    WaitingView,
    read_poll,
    read_state,
    responses,
    standing_responses,
    waiting_events,
)

DEFAULT_STATE_DIR = Config().state_dir  # where the packages put it (/var/lib/spotwatch)


RESPONDING, DONE, WAITING = "responding", "done", "waiting"  # `notices[].state`


def _notice_doc(view: ResponseView) -> Dict[str, Any]:
    return _doc(view.raw_notice, view.first_seen, view.deadline, view.done)


def _doc(
    given: Dict[str, Any], first_seen: Optional[str], deadline: Optional[str], done: bool
) -> Dict[str, Any]:
    doc = {
        "action": given.get("action"),
        "time": given.get("time"),
        "source": given.get("source"),
        "first_seen": first_seen,
        "deadline": deadline,
        "done": done,
        "state": DONE if done else RESPONDING,
    }
    for extra in ("event_id", "event_code"):
        if extra in given:
            doc[extra] = given[extra]
    return doc


def _waiting_doc(view: WaitingView) -> Dict[str, Any]:
    doc = _doc(view.raw_notice, None, view.deadline, False)
    doc.update(state=WAITING, starts=view.starts)
    return doc


def collect(state_dir: str) -> Optional[Dict[str, Any]]:
    """The status document, or None when the daemon has recorded nothing yet."""
    state = read_state(state_dir)
    poll = read_poll(state_dir)
    if state is None and poll is None:
        return None
    views = responses(state)
    active = sorted((v for v in views if not v.done), key=lambda v: _epoch(v.deadline) or 0.0)
    chosen = active[0] if active else (views[-1] if views else None)
    standing = standing_responses(state)
    notices = [_notice_doc(v) for v in views if not v.done or v.key in standing]
    notices += [_waiting_doc(w) for w in waiting_events(state)]
    notices.sort(key=lambda doc: _epoch(doc["deadline"]) or 0.0)
    steps = [
        {k: s.get(k) for k in ("name", "kind", "status", "started", "ended", "detail")}
        for s in (chosen.steps if chosen is not None else [])
    ]
    last_poll = None
    if poll is not None:
        last_poll = {
            "time": poll.get("time"),
            "result": poll.get("result"),
            "last_success": poll.get("last_success"),
            "age_seconds": _seconds_since(poll.get("time")),
        }
    return {
        "last_poll": last_poll,
        "notice": _notice_doc(chosen) if chosen is not None else None,
        "notices": notices,
        "steps": steps,
    }


def _as_list(value: Any) -> List[Any]:
    return value if isinstance(value, list) else []


def _epoch(stamp: Any) -> Optional[float]:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _seconds_since(stamp: Any) -> Optional[float]:
    moment = _epoch(stamp)
    return None if moment is None else round(max(0.0, time.time() - moment), 3)


def _age(stamp: Optional[str]) -> str:
    if not stamp:
        return "never"
    age = _seconds_since(stamp)
    if age is None:
        return stamp
    return f"{age:.0f} s ago ({stamp})"


def _deadline(stamp: Optional[str]) -> str:
    moment = _epoch(stamp)
    if moment is None:
        return str(stamp)
    left = moment - time.time()
    when = f"in {left:.0f} s" if left >= 0 else f"{-left:.0f} s ago"
    return f"{stamp} ({when})"


def _clock(stamp: Any) -> str:
    """HH:MM:SS.ss of an ISO time, for the step table."""
    if not isinstance(stamp, str) or "T" not in stamp:
        return "-"
    return stamp.split("T", 1)[1].rstrip("Z")


def render(doc: Dict[str, Any]) -> str:
    lines = []
    poll = doc["last_poll"] or {}
    lines.append(f"last poll:     {_age(poll.get('time'))}: {poll.get('result', 'unknown')}")
    lines.append(f"last success:  {_age(poll.get('last_success'))}")
    notice = doc["notice"]
    if notice is None:
        lines.append("notice:        none handled")
    else:
        state = "handled" if notice["done"] else "response running or unfinished"
        lines.append(
            f"notice:        {notice['action']} at {notice['time']} ({notice['source']}), {state}"
        )
        lines.append(f"deadline:      {_deadline(notice['deadline'])}")
    for other in doc.get("notices", []):
        if other.get("state") == WAITING:
            lines.append(
                f"waiting:       {other['action']} at {other['time']} ({other['source']}"
                f"{' ' + other['event_code'] if other.get('event_code') else ''}); "
                f"its response starts {_deadline(other.get('starts'))}"
            )
        elif other != notice:
            lines.append(
                f"also {other['state'] + ':':<9} {other['action']} at {other['time']} "
                f"({other['source']}), deadline {_deadline(other['deadline'])}"
            )
    if doc["steps"]:
        width = max(len(str(step["name"])) for step in doc["steps"])
        lines.append(f"  {'status':<11} {'step':<{width}}  {'started':<11}  {'ended':<11}  detail")
    for step in doc["steps"]:
        lines.append(
            f"  {step['status']!s:<11} {step['name']!s:<{width}}  {_clock(step.get('started')):<11}"
            f"  {_clock(step.get('ended')):<11}  {step.get('detail') or ''}"
        )
    return "\n".join(lines)


def _unreadable(path: str) -> bool:
    """A state folder or file there that this user may not read (0700 root by default)."""
    if os.path.isdir(path):
        return not os.access(path, os.R_OK | os.X_OK)
    return os.path.exists(path) and not os.access(path, os.R_OK)


def _needs_root(state_dir: str) -> bool:
    return _unreadable(state_dir) or any(
        _unreadable(os.path.join(state_dir, name)) for name in (STATE_FILE, POLL_FILE)
    )


def _config_unreadable(problems: List[str]) -> bool:
    """Every problem is a file this user may not read (config.yaml is 0600 root)."""
    denied = os.strerror(errno.EACCES)
    return bool(problems) and all(problem.endswith(denied) for problem in problems)


def run_status(
    path: Optional[str], *, as_json: bool, default_state_dir: str = DEFAULT_STATE_DIR
) -> int:
    try:
        state_dir = load_config(path).state_dir
    except ConfigError as error:
        # Not root: the config says nothing status needs unless it moved state_dir, so
        # look where the daemon keeps its state by default rather than refuse outright.
        if not _config_unreadable(error.problems):
            raise
        state_dir = default_state_dir
        if not _needs_root(state_dir):
            print(
                f"config not readable ({error.problems[0]}); showing {state_dir}",
                file=sys.stderr,
            )
    if _needs_root(state_dir):
        print(
            f"spotwatch status needs root: {state_dir} is readable by root only "
            "(try: sudo spotwatch status)",
            file=sys.stderr,
        )
        return EX_NO_STATE
    doc = collect(state_dir)
    if doc is None:
        print(f"no state yet in {state_dir}", file=sys.stderr)
        return EX_NO_STATE
    print(json.dumps(doc, indent=1) if as_json else render(doc))
    return EX_OK
