"""Elastic Load Balancing calls for this instance, and the record of what was deregistered.

A target is (instance, port): one instance can be registered on several ports in one target
group, so DescribeTargetHealth with the instance id alone tells the ports to deregister.
After DeregisterTargets a target is `draining` for the group's deregistration delay, then
`unused` (not registered). Classic Load Balancers drain connections in the background.

The record (`Deregistered`, kept in `load-balancer.json` in the state directory, keyed by
response) is what a cancel or a start needs to put the instance back: `reregister(record,
clients, time_left)` registers the same (target group, port) targets and Classic Load
Balancer instances again.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from spotwatch.detection.notices import Notice
from spotwatch.logevents import emit
from spotwatch.parts.awsapi.bounded import Bounded
from spotwatch.parts.awsapi.clients import AwsClients, api_errors, describe_error
from spotwatch.state.files import write_atomically

log = logging.getLogger("spotwatch.lb")

RECORD_FILE = "load-balancer.json"
GONE_STATES = frozenset({"unused"})  # not registered (any more)
WORKERS = 8  # concurrent ELB calls: fast for many groups, gentle on the account's rate limit
KEEP_RECORDS = 20

Target = Tuple[str, int]  # (target group ARN, port)
T = TypeVar("T")
R = TypeVar("R")


def short_group(arn: str) -> str:
    """`arn:...:targetgroup/web/0123abcd` -> `web`."""
    parts = arn.split("/")
    return parts[-2] if len(parts) >= 3 else arn


def each(items: Sequence[T], call: Callable[[T], R]) -> List[R]:
    """`call` for every item, up to WORKERS at a time, results in order."""
    if len(items) <= 1:
        return [call(item) for item in items]
    with ThreadPoolExecutor(min(WORKERS, len(items)), thread_name_prefix="lb") as pool:
        return list(pool.map(call, items))


def target_states(aws: Bounded, group: str, instance_id: str) -> Dict[int, str]:
    """Port -> state of this instance's targets in one group (DescribeTargetHealth)."""
    answer = aws.call(
        "elbv2", "describe_target_health", TargetGroupArn=group, Targets=[{"Id": instance_id}]
    )
    states: Dict[int, str] = {}
    for found in answer.get("TargetHealthDescriptions") or []:
        target = found.get("Target") or {}
        if target.get("Id") == instance_id and "Port" in target:
            states[int(target["Port"])] = str((found.get("TargetHealth") or {}).get("State", ""))
    return states


def registered_ports(aws: Bounded, group: str, instance_id: str) -> List[int]:
    return sorted(
        p for p, s in target_states(aws, group, instance_id).items() if s not in GONE_STATES
    )


def deregister_targets(aws: Bounded, group: str, instance_id: str, ports: Sequence[int]) -> None:
    targets = [{"Id": instance_id, "Port": port} for port in ports]
    aws.call("elbv2", "deregister_targets", TargetGroupArn=group, Targets=targets)


def deregister_classic(aws: Bounded, name: str, instance_id: str) -> None:
    aws.call(
        "elb",
        "deregister_instances_from_load_balancer",
        LoadBalancerName=name,
        Instances=[{"InstanceId": instance_id}],
    )


# --------------------------------------------------------------------- the record


@dataclass(frozen=True)
class Deregistered:
    """What one response took out of its load balancers."""

    instance_id: str
    targets: Tuple[Target, ...]
    classic: Tuple[str, ...]
    key: str  # the response it belongs to (written as "notice": older versions keyed by notice)
    at: float  # Unix seconds

    def to_json(self) -> Dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "targets": [{"target_group": g, "port": p} for g, p in self.targets],
            "classic": list(self.classic),
            "notice": self.key,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> Deregistered:
        """Raises KeyError, TypeError or ValueError on anything but `to_json()`'s shape."""
        return cls(
            instance_id=str(data["instance_id"]),
            targets=tuple((str(t["target_group"]), int(t["port"])) for t in data["targets"]),
            classic=tuple(str(name) for name in data["classic"]),
            key=str(data["notice"]),
            at=float(data["at"]),
        )

    def describe(self) -> str:
        where = [f"{short_group(g)}:{p}" for g, p in self.targets] + list(self.classic)
        return ", ".join(where) or "nothing"


def notice_key(notice: Notice) -> str:
    """The notice a record belongs to: its event id, else its action and time."""
    return notice.event_id or f"{notice.action}@{notice.time_text}"


def _read(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_record(state_dir: str, record: Deregistered) -> None:
    """Adds the record to the state directory's `load-balancer.json` (atomically; a
    symlink there is replaced, never followed)."""
    path = os.path.join(state_dir, RECORD_FILE)
    records = _read(path)
    records[record.key] = record.to_json()
    newest = sorted(records.items(), key=lambda kv: float(kv[1].get("at", 0)))[-KEEP_RECORDS:]
    write_atomically(path, json.dumps(dict(newest), indent=1).encode())


def find_record(state_dir: str, key: str) -> Optional[Deregistered]:
    """What the response `key` deregistered (older versions keyed records by `notice_key`),
    or None (nothing, or not readable)."""
    found = _read(os.path.join(state_dir, RECORD_FILE)).get(key)
    try:
        return Deregistered.from_json(found) if isinstance(found, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


def reregister(
    record: Deregistered,
    clients: AwsClients,
    time_left: Callable[[], float],
    *,
    dry_run: bool = False,
) -> Tuple[bool, str]:
    """Register again what `record` says was deregistered: RegisterTargets for the same
    (target group, port) targets, RegisterInstancesWithLoadBalancer for each Classic Load
    Balancer. Returns (all done, detail); never raises for an AWS failure."""
    groups: Dict[str, List[int]] = {}
    for group, port in record.targets:
        groups.setdefault(group, []).append(port)
    if dry_run:
        emit(
            log,
            logging.INFO,
            "lb-would-register",
            f"would register {record.instance_id} again with {record.describe()}",
        )
        return True, f"dry run: would register {record.describe()} again"
    errors = api_errors()
    aws = clients.bounded(time_left)

    def one(job: Tuple[str, Any]) -> Optional[str]:
        kind, what = job
        if time_left() <= 0:
            return f"{what}: no time left"
        try:
            if kind == "tg":
                group, ports = what
                targets = [{"Id": record.instance_id, "Port": p} for p in ports]
                aws.call("elbv2", "register_targets", TargetGroupArn=group, Targets=targets)
            else:
                aws.call(
                    "elb",
                    "register_instances_with_load_balancer",
                    LoadBalancerName=what,
                    Instances=[{"InstanceId": record.instance_id}],
                )
        except errors as failure:
            return (
                f"{what if kind == 'classic' else short_group(what[0])}: {describe_error(failure)}"
            )
        return None

    jobs: List[Tuple[str, Any]] = [("tg", g) for g in groups.items()]
    jobs += [("classic", name) for name in record.classic]
    failures = [f for f in each(jobs, one) if f]
    if failures:
        emit(log, logging.ERROR, "lb-register-failed", "; ".join(failures))
        return False, f"registered again {len(jobs) - len(failures)} of {len(jobs)}: {failures[0]}"
    emit(
        log,
        logging.INFO,
        "lb-registered",
        f"{record.instance_id} registered again with {record.describe()}",
    )
    return True, f"registered again with {record.describe()}"
