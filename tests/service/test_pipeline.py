"""The one notice pipeline, driven poll by poll in process (real IMDS simulator over HTTP,
real hook processes, the real state directory): every notice gets a response and a record of
its own, a restart takes up only a confirmed response, the instance is ended only on a
notice still seen, and `status` shows every active notice."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
import yaml
from service_support import counter_hook, lines, wait_for
from testkit import response_record

from spotwatch.commands.settings import load_service_config
from spotwatch.commands.status import collect
from spotwatch.config.schema import Config
from spotwatch.daemon.shell import Daemon, DaemonParts
from spotwatch.detection.notices import Notice
from spotwatch.response.build import Providers
from spotwatch.response.plan import Step, StepContext, StepOutcome
from spotwatch.response.responder import Response
from spotwatch.response.runner import StepJournal
from spotwatch.simulator.imds import ImdsSimulator
from spotwatch.state.files import read_boot_id
from spotwatch.state.schema import OK, SKIPPED


def _at(seconds: float) -> str:
    moment = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Heard:
    """A response listener: what the responder said, in order."""

    def __init__(self) -> None:
        self.started: List[Tuple[str, str, float]] = []

    def response_started(self, response: Response) -> None:
        self.started.append((response.key, response.notice.action, response.deadline_epoch))

    def journal(self, response: Response) -> Optional[StepJournal]:
        return None


@pytest.fixture
def pipeline(
    tmp_path: Path, imds: ImdsSimulator
) -> Iterator[Callable[..., Tuple[Daemon, Heard]]]:
    made: List[Daemon] = []

    def make(hooks: List[Dict[str, Any]], parts: Optional[DaemonParts] = None, **extra: Any):
        config = {
            "poll_interval": "200ms",
            "deadline_margin": "1s",
            "state_dir": str(tmp_path / "state"),
            "imds": {"endpoint": imds.endpoint, "timeout": "300ms", "user_data": False},
            "ecs": {"enabled": False},
            "hooks": hooks,
            **extra,
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        loaded = load_service_config(str(path), env={}, with_user_data=False)
        heard = Heard()
        parts = parts or DaemonParts()
        parts.listeners.append(heard)
        daemon = Daemon(loaded, parts=parts)
        daemon.prepare()
        made.append(daemon)
        return daemon, heard

    yield make
    for daemon in made:
        daemon.shutdown()


@pytest.fixture
def imds() -> Iterator[ImdsSimulator]:
    with ImdsSimulator() as simulator:
        yield simulator


def poll(daemon: Daemon, times: int = 1) -> None:
    assert daemon.watcher is not None
    for _ in range(times):
        daemon.watcher.poll_once()


def state_of(tmp_path: Path) -> Dict[str, Any]:
    return json.loads((tmp_path / "state" / "state.json").read_text())


def test_a_changed_action_gets_its_own_response_and_record(pipeline, imds, tmp_path):
    """terminate -> stop while the first hook runs: the terminate response starts no further
    step (its running hook finishes; the later hook is recorded skipped), and the stop notice
    gets a response of its own in which the hook subscribed to both actions runs again.
    (Before: both wrote one record, and the finished hook of the old response made the new
    response skip it.)"""
    out = tmp_path / "out"
    daemon, heard = pipeline(
        [
            counter_hook("both", out, sleep=1.0, actions=["terminate", "stop"]),
            counter_hook("later", out, order=1, actions=["terminate"]),
        ]
    )
    imds.set_instance_action("terminate", _at(120))
    poll(daemon)
    wait_for(lambda: lines(out) == ["both terminate instance-action"])
    imds.set_instance_action("stop", _at(120))
    poll(daemon)
    assert daemon.responder.wait(15)
    assert lines(out) == ["both terminate instance-action", "both stop instance-action"]
    assert [(key, action) for key, action, _ in heard.started] == [
        ("spot#1", "terminate"),
        ("spot#2", "stop"),
    ]
    records = state_of(tmp_path)["responses"]
    old = {s["name"]: s["status"] for s in records["spot#1"]["steps"]}
    assert old == {"hook:both": OK, "hook:later": SKIPPED}
    assert "superseded by a stop notice" in records["spot#1"]["why_ended"]
    assert {s["name"]: s["status"] for s in records["spot#2"]["steps"]} == {"hook:both": OK}
    assert records["spot#2"]["done"] is True


def test_a_restart_takes_up_a_response_only_once_a_poll_confirms_its_notice(
    pipeline, imds, tmp_path
):
    """A state file with an unfinished terminate response: nothing runs at start; when the
    notice is gone from IMDS the record is closed without running anything; had it still
    been there, its unfinished steps would run. (Before: prepare() resumed at once.)"""
    out = tmp_path / "out"
    notice = {"action": "terminate", "time": _at(120), "source": "instance-action"}
    _write_unfinished(tmp_path, notice, deadline=time.time() + 110)
    daemon, heard = pipeline([counter_hook("h", out)])
    assert heard.started == []  # not at start
    poll(daemon, 3)  # three polls without the notice: it is gone
    assert daemon.responder.wait(5)
    assert not out.exists() and heard.started == []
    record = response_record(state_of(tmp_path))
    assert record["done"] is True and "gone" in record["why_ended"]


def test_a_restart_resumes_a_confirmed_response_but_never_past_its_deadline(
    pipeline, imds, tmp_path
):
    out = tmp_path / "out"
    late = {"action": "terminate", "time": _at(5), "source": "instance-action"}
    _write_unfinished(tmp_path, late, deadline=time.time() - 1)  # its deadline has passed
    imds.set_instance_action("terminate", late["time"])
    daemon, heard = pipeline([counter_hook("h", out)])
    poll(daemon)
    assert daemon.responder.wait(5)
    assert not out.exists() and heard.started == []
    record = response_record(state_of(tmp_path))
    assert record["done"] and "deadline passed" in record["why_ended"]
    assert {s["status"] for s in record["steps"]} == {SKIPPED}


def test_a_confirmed_response_resumes_after_a_restart(pipeline, imds, tmp_path):
    out = tmp_path / "out"
    notice = {"action": "terminate", "time": _at(120), "source": "instance-action"}
    _write_unfinished(tmp_path, notice, deadline=time.time() + 110)
    imds.set_instance_action("terminate", notice["time"])
    daemon, heard = pipeline([counter_hook("h", out)])
    poll(daemon)
    assert daemon.responder.wait(10)
    assert lines(out) == ["h terminate instance-action"]
    assert [key for key, _, _ in heard.started] == ["spot#1"]


def _write_unfinished(tmp_path: Path, notice: Dict[str, str], deadline: float) -> None:
    stamp = datetime.fromtimestamp(deadline, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    (tmp_path / "state").mkdir(exist_ok=True)
    step = {"name": "hook:h", "kind": "hook", "status": "pending"}
    step.update(started=None, ended=None, detail="")
    (tmp_path / "state" / "state.json").write_text(
        json.dumps(
            {
                "version": 1,
                "boot_id": read_boot_id(),
                "instance_id": None,
                "trackers": {"spot": {"known": notice, "absent_polls": 0, "generation": 1}},
                "responses": {
                    "spot#1": {
                        "tracker": "spot",
                        "notice": notice,
                        "first_seen": None,
                        "deadline": stamp,
                        "done": False,
                        "steps": [step],
                    }
                },
            }
        )
    )


class EndInstance(Step):
    """Stands in for the instance step: asks what the real one asks, records the answer."""

    kind = "instance"

    def __init__(self, answers: List[bool]) -> None:
        super().__init__("instance:terminate")
        self.answers = answers

    def run(self, ctx: StepContext) -> StepOutcome:
        self.answers.append(ctx.confirmed())
        return StepOutcome(OK if ctx.confirmed() else SKIPPED)


def test_the_instance_is_ended_only_while_a_recent_poll_saw_the_notice(pipeline, imds, tmp_path):
    """The finale asks whether the notice still shows: yes right after a poll saw it; no
    when the last poll to see it is more than two intervals old."""
    answers: List[bool] = []

    def providers(config: Config, dry_run: bool) -> Providers:
        return Providers(instance=lambda notice, cfg: [EndInstance(answers)])

    out = tmp_path / "out"
    daemon, _ = pipeline([counter_hook("h", out, sleep=1.5)], DaemonParts(providers=providers))
    imds.set_instance_action("terminate", _at(120))
    poll(daemon)  # the hook runs 1.5 s > 2 x 0.2 s + 0.5 s slack, with no poll meanwhile
    assert daemon.responder.wait(10)
    assert answers == [False]
    record = response_record(state_of(tmp_path))
    assert {s["name"]: s["status"] for s in record["steps"]}["instance:terminate"] == SKIPPED


def test_status_shows_the_earliest_deadline_and_every_active_notice(tmp_path):
    """Two active responses (a rebalance and a terminate): `notice` is the one with the
    earliest deadline, `notices` lists both."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()

    def record(action: str, source: str, deadline: float) -> Dict[str, Any]:
        stamp = datetime.fromtimestamp(deadline, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        notice = {"action": action, "time": _at(120), "source": source}
        return {"tracker": "x", "notice": notice, "first_seen": None, "deadline": stamp,
                "done": False, "steps": []}  # fmt: skip

    document = {
        "version": 1,
        "boot_id": read_boot_id(),
        "instance_id": "i-1",
        "trackers": {},
        "responses": {
            "rebalance#1": record("rebalance", "rebalance-recommendation", time.time() + 300),
            "spot#1": record("terminate", "instance-action", time.time() + 100),
        },
    }
    (state_dir / "state.json").write_text(json.dumps(document))
    doc = collect(str(state_dir))
    assert doc is not None
    assert doc["notice"]["action"] == "terminate"
    assert [n["action"] for n in doc["notices"]] == ["terminate", "rebalance"]


def test_every_response_reads_its_deadline_from_the_one_rule(pipeline, imds, tmp_path):
    """A second terminate notice (after the first was gone for 3 polls) is heard with its own
    deadline, not the first one's (before: telemetry read a stale response)."""
    out = tmp_path / "out"
    daemon, heard = pipeline([counter_hook("h", out)])
    first, second = _at(100), _at(200)
    imds.set_instance_action("terminate", first)
    poll(daemon)
    assert daemon.responder.wait(5)
    imds.clear_instance_action()
    poll(daemon, 3)
    imds.set_instance_action("terminate", second)
    poll(daemon)
    assert daemon.responder.wait(5)
    deadlines = [deadline for _, _, deadline in heard.started]
    expected = [Notice.from_json(
        {"action": "terminate", "time": t, "source": "instance-action"}
    ).epoch - 1.0 for t in (first, second)]  # fmt: skip
    assert deadlines == pytest.approx(expected)


def test_the_instance_is_ended_when_polls_go_on_seeing_the_notice(pipeline, imds, tmp_path):
    answers: List[bool] = []

    def providers(config: Config, dry_run: bool) -> Providers:
        return Providers(instance=lambda notice, cfg: [EndInstance(answers)])

    out = tmp_path / "out"
    daemon, _ = pipeline([counter_hook("h", out, sleep=1.5)], DaemonParts(providers=providers))
    imds.set_instance_action("terminate", _at(120))
    assert daemon.watcher is not None
    loop = threading.Thread(target=daemon.watcher.run, daemon=True)
    loop.start()
    try:
        wait_for(lambda: answers != [], timeout=15)
    finally:
        daemon.watcher.stop()
        loop.join(5)
    assert answers == [True]


def test_a_rebalance_recommendation_makes_the_spot_notice_polled_faster(pipeline, imds, tmp_path):
    """poll_interval 1 s, rebalance.poll_interval 200 ms: while a recommendation stands the
    loop polls every 200 ms; once the notice itself has come, or the recommendation is gone,
    every 1 s again."""
    daemon, _ = pipeline([], poll_interval="1s", rebalance={"poll_interval": "200ms"})
    assert daemon.watcher is not None
    poll(daemon)
    assert daemon.watcher.interval == 1.0
    imds.set_rebalance(_at(0))
    poll(daemon)
    assert daemon.watcher.interval == 0.2
    imds.set_instance_action("terminate", _at(120))
    poll(daemon)
    assert daemon.watcher.interval == 1.0  # the notice came: faster polling buys nothing more
    imds.clear_instance_action()
    poll(daemon, 3)
    assert daemon.watcher.interval == 0.2
    imds.set_rebalance(None)
    poll(daemon, 3)
    assert daemon.watcher.interval == 1.0


def test_a_joined_spot_notice_that_moves_moves_the_deadline_of_the_one_response(
    pipeline, imds, tmp_path
):
    """The group terminates the instance (budget 10 min), then a Spot terminate notice
    joins that response: its earlier deadline governs; when the Spot time moves (earlier),
    the one response's deadline follows."""
    out = tmp_path / "out"
    daemon, _ = pipeline(
        [counter_hook("h", out, sleep=4)], autoscaling={"enabled": True, "budget": "10m"}
    )
    imds.set_asg_state("Terminated")
    poll(daemon)
    wait_for(lambda: lines(out) == ["h terminate target-lifecycle-state"])
    spot, sooner = _at(100), _at(60)
    imds.set_instance_action("terminate", spot)
    poll(daemon)
    (first,) = [r for r in daemon.responder.running() if r.key == "autoscaling#1"]
    expected = Notice.from_json(
        {"action": "terminate", "time": spot, "source": "instance-action"}
    ).epoch - 1.0
    assert first.deadline_epoch == pytest.approx(expected)
    imds.set_instance_action("terminate", sooner)
    poll(daemon)
    expected = Notice.from_json(
        {"action": "terminate", "time": sooner, "source": "instance-action"}
    ).epoch - 1.0
    assert first.deadline_epoch == pytest.approx(expected)
    assert daemon.responder.wait(20)
    assert lines(out) == ["h terminate target-lifecycle-state"]  # the hook ran once
