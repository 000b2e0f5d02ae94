"""Ready-made hooks (docs/presets.md).

s3-sync: the preset's upload of a folder to moto's S3 (its own process, over HTTP), against
the plain loop an operator would write (`client.upload_file` per file, one after another;
boto3 still splits a large file into parts sent 10 at a time), in the same run, to prefixes
of their own: one large file, and many small ones; and the preset's second run over the same
folder, when nothing changed (one ListObjectsV2 page per 1,000 objects and a HeadObject per
file of unchanged size).

docker-stop: the real daemon (`python -m spotwatch run`) with a docker-stop preset, a real
dockerd (tests/dockerworld.py: containers that trap SIGTERM and exit at once), N running
containers; from the moment the notice is raised in the simulator to the moment the last
container exited (Docker's own State.FinishedAt), with the daemon polling every 500 ms.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

from bench.common import ROOT, DaemonProcess, MotoProcess, Results, SimProcess, median, wait_until
from bench.detection import _time_text

MIB = 1024 * 1024
BUCKET = "bench-presets"


def _files(folder: Path, count: int, size: int) -> int:
    folder.mkdir(parents=True)
    chunk = os.urandom(min(size, 8 * MIB))
    for index in range(count):
        with open(folder / f"f{index:05d}.bin", "wb") as out:
            left = size
            while left > 0:
                out.write(chunk[:left])
                left -= len(chunk)
    return count * size


def _preset_sync(folder: Path, prefix: str) -> Tuple[float, str]:
    """(seconds, the step's detail) of one s3-sync step, through the step as the daemon runs it."""
    from spotwatch.config.validate import check_layer
    from spotwatch.detection.notices import now_notice
    from spotwatch.presets.base import BareServices
    from spotwatch.response.deadline import NoticeClock
    from spotwatch.response.plan import StepContext
    from spotwatch.response.presetstep import PresetStep

    raw = {"name": "sync", "preset": "s3-sync", "timeout": "1h",
           "with": {"path": str(folder), "to": f"s3://{BUCKET}/{prefix}/"}}  # fmt: skip
    checked, problems = check_layer({"hooks": [raw]})
    assert not problems, problems
    clock = NoticeClock.budget(now_notice("rebalance", "rebalance-recommendation"), 3600.0)
    ctx = StepContext(clock=clock, instance_id="i-0bench", dry_run=False)
    began = time.monotonic()
    outcome = PresetStep(checked["hooks"][0], BareServices()).run(ctx)
    took = time.monotonic() - began
    if outcome.status != "ok":
        raise RuntimeError(f"s3-sync: {outcome.status}: {outcome.detail}")
    return took, outcome.detail


def _loop(client: Any, folder: Path, prefix: str) -> float:
    began = time.monotonic()
    for path in sorted(folder.iterdir()):
        client.upload_file(str(path), BUCKET, f"{prefix}/{path.name}")
    return time.monotonic() - began


def s3_rows(results: Results, moto: MotoProcess, sets: List[Tuple[int, int]], reps: int) -> None:
    """`sets`: (files, bytes each); each set is sent by the preset and by the loop `reps`
    times (alternating, fresh prefixes), then once more by the preset with nothing changed."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto.endpoint)
    work = Path(tempfile.mkdtemp(prefix="spotwatch-bench-s3-"))
    try:
        client.create_bucket(Bucket=BUCKET)
        for count, size in sets:
            folder = work / f"{count}x{size}"
            total = _files(folder, count, size)
            ours: List[float] = []
            theirs: List[float] = []
            again: List[float] = []
            for rep in range(reps):
                ours.append(_preset_sync(folder, f"ours{rep}")[0])
                took, detail = _preset_sync(folder, f"ours{rep}")
                assert detail.startswith("sent 0 files"), detail
                again.append(took)
                _empty(client, f"ours{rep}/")  # moto keeps objects in memory
                theirs.append(_loop(client, folder, f"loop{rep}"))
                _empty(client, f"loop{rep}/")
            what = f"{count:,} x {_size(size)}"
            mb = total / 1e6
            results.add("presets", f"s3-sync, {what}: throughput", "MB/s",
                        [mb / t for t in ours], note=_rate(count, ours))
            results.add("presets", f"sequential upload_file loop, {what}: throughput", "MB/s",
                        [mb / t for t in theirs], note=_rate(count, theirs))
            results.add("presets", f"s3-sync ÷ loop, {what}: speed", "x",
                        [t / o for o, t in zip(ours, theirs)])
            results.add("presets", f"s3-sync again, {what}, nothing changed", "s", again)
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _rate(count: int, times: List[float]) -> str:
    return f"{count / median(times):.0f} files/s" if count > 1 else ""


def _empty(client: Any, prefix: str) -> None:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    for page in pages:
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


def _size(size: int) -> str:
    if size >= 1024 * MIB:
        return f"{size // (1024 * MIB)} GiB"
    return f"{size // MIB} MiB" if size >= MIB else f"{size // 1024} KiB"


def docker_rows(results: Results, sim: SimProcess, containers: int, reps: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from dockerworld import DockerUnavailable, DockerWorld

    try:
        world = DockerWorld.start()
    except DockerUnavailable as why:
        results.errors.append(f"presets: docker-stop not measured: {why}")
        return
    try:
        times = [_docker_trial(world, sim, containers) for _ in range(reps)]
    finally:
        world.close()
    results.add("presets", f"docker-stop of {containers} containers: notice → all stopped "
                "(poll every 500 ms)", "s", [t for t, _ in times],
                note=f"the step alone: {median([s for _, s in times]):.2f} s")  # fmt: skip


def _docker_trial(world: Any, sim: SimProcess, containers: int) -> Tuple[float, float]:
    """(seconds from the notice to the last exit, seconds the step took)."""
    world.remove_all()
    ids = world.run_many([f"bench-{n:02d}" for n in range(containers)], labels={"bench": "1"})
    hook = {"name": "stop", "preset": "docker-stop", "timeout": "60s",
            "with": {"label": "bench=1", "docker_host": world.host}}  # fmt: skip
    daemon = DaemonProcess(sim.endpoint, {"hooks": [hook], "rebalance": {"enabled": False}},
                           poll_interval="500ms")  # fmt: skip
    base = sim.count()
    daemon.start()
    try:
        wait_until(lambda: sim.count() > base, 30, "the daemon's first poll")
        raised = time.time()
        sim.call("raise", action="terminate", time=_time_text(120))
        stopped: Callable[[], bool] = lambda: not any(  # noqa: E731
            world.state(cid)["Running"] for cid in ids
        )
        wait_until(stopped, 60, "every container to exit", pause=0.05)
        ended = max(_epoch(world.state(cid)["FinishedAt"]) for cid in ids)
        step = _step_seconds(daemon)
    finally:
        daemon.stop()
        daemon.cleanup()
        sim.call("clear")
    return ended - raised, step


def _epoch(text: str) -> float:
    """Docker's RFC 3339 time with nanoseconds, as Unix seconds."""
    whole, _, rest = text.rstrip("Z").partition(".")
    moment = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return moment.timestamp() + float("0." + (rest or "0"))


def _step_seconds(daemon: DaemonProcess) -> float:
    import json

    def record() -> Dict[str, Any]:
        state = json.loads(daemon.path("state/state.json").read_text())
        for response in state.get("responses", {}).values():
            for step in response.get("steps", []):
                if step["name"] == "hook:stop" and step.get("ended"):
                    return dict(step)
        return {}

    wait_until(lambda: bool(record()), 10, "the step's record")
    step = record()
    return _iso_epoch(step["ended"]) - _iso_epoch(step["started"])


def _iso_epoch(text: str) -> float:
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.replace(tzinfo=timezone.utc).timestamp()
