"""From what the world recorded to a `Trace`: hook lines, the IMDS answers the daemon's
polls got (in the contract's terms), the AWS calls, the final state of ECS and the target
group, and any traceback in the daemon's log."""

from __future__ import annotations

import calendar
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

from model_trace import Answer, HookRun, Shown, Trace
from model_world import WATCHED_PATHS, Raw

FALLBACK = "termination-time"

if TYPE_CHECKING:
    from model_driver import World


def hook_runs(path: Path) -> List[HookRun]:
    if not path.exists():
        return []
    starts: Dict[int, Tuple[str, float, Dict[str, str]]] = {}
    ends: Dict[int, float] = {}
    stopped: Set[int] = set()
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("phase") == "start":
            starts[entry["pid"]] = (entry["hook"], entry["t"], entry.get("env", {}))
        else:
            ends[entry["pid"]] = entry["t"]
            if entry.get("signal"):
                stopped.add(entry["pid"])
    runs = [
        HookRun(name, t, ends.get(pid), env, pid in stopped)
        for pid, (name, t, env) in starts.items()
    ]
    return sorted(runs, key=lambda r: r.started)


def _iso_epoch(text: str) -> Optional[float]:
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


def _event_time(text: str) -> Tuple[str, float]:
    """`21 Jan 2019 09:00:43 GMT` -> (`2019-01-21T09:00:43Z`, epoch), as §7 tells hooks."""
    parsed = time.strptime(text, "%d %b %Y %H:%M:%S GMT")
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", parsed), float(calendar.timegm(parsed))


def shown(signal: str, body: bytes) -> Optional[Tuple[Shown, ...]]:
    """What a 200 answer shows (None: not a usable answer)."""
    text = body.decode("utf-8", "replace")
    try:
        if signal == "autoscaling":
            return (Shown("Terminated"),) if text.strip() == "Terminated" else ()
        value = json.loads(text)
        if signal == "spot":
            epoch = _iso_epoch(value["time"])
            return None if epoch is None else (Shown(value["action"], value["time"], epoch),)
        if signal == "rebalance":
            epoch = _iso_epoch(value["noticeTime"])
            return None if epoch is None else (Shown("rebalance", value["noticeTime"], epoch),)
        found = []
        for event in value:
            iso, epoch = _event_time(event["NotBefore"])
            found.append(Shown(event["Code"], iso, epoch, event["EventId"], event["State"]))
        return tuple(found)
    except (KeyError, TypeError, ValueError):
        return None


def answers(raw: List[Raw]) -> List[Answer]:
    """The usable answers to the daemon's polling client (the token that asks for the Spot
    notice); other clients (load balancer discovery) ask on tokens of their own."""
    polling = {token for _, path, _, _, token in raw if path.endswith("/spot/instance-action")}
    found = []
    for t, path, status, body, token in raw:
        signal = WATCHED_PATHS[path]
        if token not in polling or signal == "instance-id" or status not in (200, 404):
            continue
        if path.endswith("/termination-time"):  # the fallback: terminate notices only
            text = body.decode("utf-8", "replace").strip()
            epoch = _iso_epoch(text) if status == 200 else None  # not a time: no notice
            seen = () if epoch is None else (Shown("terminate", text, epoch, source=FALLBACK),)
            found.append(Answer(t, signal, seen, speaks_for=("terminate",)))
            continue
        seen = () if status == 404 else shown(signal, body)
        if seen is not None:
            found.append(Answer(t, signal, seen))
    return found


def collect(world: World) -> Trace:
    trace = world.trace
    trace.ended = time.time()
    presets = world.host.receiver.runs()
    trace.hooks = sorted(hook_runs(world.folder / "hooks.jsonl") + presets, key=lambda r: r.started)
    if world.logind is not None:
        trace.locks = world.logind.spans()
    trace.answers = answers(list(world.imds.answers))
    trace.calls = list(world.aws.calls)
    if world.runtime is not None:  # §4 stop_via runtime: the daemon's calls to dockerd
        trace.calls = sorted(trace.calls + world.runtime.calls(), key=lambda c: c.t)
    trace.task_stops = sorted(world.aws.stopped_at.values())
    try:
        trace.ecs_final = world.fleet.ecs_status()
        trace.registered_final = world.fleet.registered()
    except Exception as failure:  # the world itself broke: say so, do not hide it
        trace.log_problems.append(f"could not read the final state: {failure!r}")
    trace.log_problems += tracebacks(world.daemon.log)
    return trace


def tracebacks(log: Path) -> List[str]:
    """Each traceback in the daemon's log, with the line before it and 12 after."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [
        "\n".join(lines[max(0, number - 1) : number + 12])
        for number, line in enumerate(lines)
        if line.startswith("Traceback")
    ]
