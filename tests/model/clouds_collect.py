"""From what Google's or Azure's simulator recorded to a `CloudTrace`, in the contract's
terms: the answers the daemon's polls got (`Answer`s of clouds_signals.SIGNALS), the hook
runs, the StartRequests POSTs, anything that reached AWS, and tracebacks in the log."""

from __future__ import annotations

import calendar
import json
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from clouds_world import AzureRaw, GcpRaw, RecordingGcp
from model_collect import hook_runs, tracebacks
from model_trace import Answer, AwsCall, Lifetime, Shown

if TYPE_CHECKING:
    from clouds_driver import CloudTrace, CloudWorld


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def gcp_answers(raw: List[GcpRaw]) -> List[Answer]:
    """Each 200 (a plain read or a hanging GET's answer) shows the value as it was."""
    return [
        Answer(t, name, (Shown(body.decode("utf-8", "replace").strip()),))
        for t, name, status, body in raw
        if status == 200
    ]


def azure_answers(raw: List[AzureRaw], lifetimes: List[Lifetime], vm_name: str) -> List[Answer]:
    """The polls' answers: the first request of each daemon run is the one that turns the
    service on (on a thread of its own, docs/azure.md), not a poll. A Started event's time is
    the earlier of its NotBefore and when a poll first saw it started (§10, docs/azure.md)."""
    starts = [life.started for life in lifetimes]
    firsts = {next((i for i, r in enumerate(raw) if r[0] >= s), -1) for s in starts}
    not_before: Dict[str, float] = {}
    seen_started: Dict[str, float] = {}
    boot_of = {life.started: life.boot for life in lifetimes}
    boot = -1
    found: List[Answer] = []
    for index, (t, status, body) in enumerate(raw):
        current = max((boot_of[s] for s in starts if s <= t), default=0)
        if current != boot:  # a new boot: what the earlier one knew is gone
            boot, not_before, seen_started = current, {}, {}
        if index in firsts or status != 200:
            continue
        shown = _events(body, vm_name, t, not_before, seen_started)
        if shown is not None:
            found.append(Answer(t, "azure", shown))
    return found


def _events(
    body: bytes,
    vm_name: str,
    moment: float,
    not_before: Dict[str, float],
    seen_started: Dict[str, float],
) -> Optional[Tuple[Shown, ...]]:
    try:
        events = json.loads(body)["Events"]
    except (KeyError, TypeError, ValueError):
        return None
    shown = []
    for event in events:
        if vm_name not in event.get("Resources", []):
            continue
        name = event["EventId"]
        if event["NotBefore"]:
            parsed = time.strptime(event["NotBefore"], "%a, %d %b %Y %H:%M:%S GMT")
            not_before[name] = float(calendar.timegm(parsed))
        epoch = not_before.get(name)
        if event["EventStatus"] == "Started":
            began = seen_started.setdefault(name, float(int(moment)))
            epoch = began if epoch is None else min(epoch, began)
        if epoch is None:
            continue
        shown.append(Shown(event["EventType"], iso(epoch), epoch, name, "active"))
    return tuple(shown)


def collect(world: CloudWorld) -> CloudTrace:
    trace = world.trace
    trace.ended = time.time()
    trace.hooks = hook_runs(world.folder / "hooks.jsonl")
    meta = world.meta
    if isinstance(meta, RecordingGcp):
        trace.answers = gcp_answers(list(meta.answers))
        trace.metadata_writes = [f"{method} {path}" for _, method, path in meta.writes]
    else:
        trace.answers = azure_answers(list(meta.answers), trace.lifetimes, trace.vm_name)
        for t, body in meta.approvals:
            try:
                ids = [str(e["EventId"]) for e in json.loads(body)["StartRequests"]]
            except (KeyError, TypeError, ValueError):
                ids = [f"unreadable: {body[:80]!r}"]
            trace.approvals += [(t, i) for i in ids]
        trace.started_when = dict(meta.started_when)
    trace.calls = [
        AwsCall(t, "forbidden", f"{method} {path}", {})
        for t, method, path in world.forbidden.requests
    ]
    trace.log_problems += tracebacks(world.daemon.log)
    return trace
