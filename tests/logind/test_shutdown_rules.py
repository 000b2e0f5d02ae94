"""CONTRACT §8's rules that need no bus: which ends a shutdown is, what a canceled response
ended (nothing), and a shutdown counted like a stop for the start hooks of the next boot."""

from __future__ import annotations

import configparser
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict

import pytest
from testkit import REPO

from spotwatch.config.durations import parse_duration
from spotwatch.config.schema import Config
from spotwatch.daemon.boot import start_notice
from spotwatch.detection.notices import Notice
from spotwatch.response.ends import same_end
from spotwatch.response.plan import Plan
from spotwatch.response.responder import Responder
from spotwatch.state.store import StateStore

ENDS = ("terminate", "stop", "reboot")
NOT_ENDS = ("hibernate", "rebalance", "maintenance", "resume", "start", "cancel")


def notice(action: str, source: str = "instance-action") -> Notice:
    moment = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=60)
    return Notice(action, moment, moment.strftime("%Y-%m-%dT%H:%M:%SZ"), source)  # type: ignore[arg-type]


@pytest.mark.parametrize("action", ENDS)
def test_a_shutdown_is_the_end_every_response_to_an_end_was_for(action: str) -> None:
    """A shutdown announced during (or after) a terminate, stop or reboot response is that
    end, and such a signal coming during the shutdown's own response is the shutdown."""
    shutdown = notice("shutdown", "shutdown")
    assert same_end(notice(action), shutdown) and same_end(shutdown, notice(action))
    asg = notice("terminate", "target-lifecycle-state")
    assert same_end(asg, shutdown)


@pytest.mark.parametrize("action", NOT_ENDS)
def test_responses_that_do_not_end_the_instance_are_another_end(action: str) -> None:
    """A hibernation, a rebalance, maintenance, resume, start or cancel response is not what
    a shutdown ends: the shutdown gets a response of its own beside it."""
    shutdown = notice("shutdown", "shutdown")
    assert not same_end(notice(action), shutdown) and not same_end(shutdown, notice(action))


def test_spot_ends_still_pair_only_with_their_own_action() -> None:
    """Unchanged by §8: a terminate and a stop are two ends."""
    assert same_end(notice("terminate"), notice("terminate", "target-lifecycle-state"))
    assert not same_end(notice("terminate"), notice("stop"))


def record(action: str, source: str, *, done: bool = True, why: str = "") -> Dict[str, Any]:
    found = notice(action, source)
    entry: Dict[str, Any] = {
        "tracker": source,
        "notice": found.to_json(),
        "first_seen": "2024-01-01T00:00:00.00Z",
        "deadline": "2024-01-01T00:01:00.00Z",
        "done": done,
        "steps": [],
    }
    if why:
        entry["why_ended"] = why
    return entry


def store_with(tmp_path: Path, responses: Dict[str, Any], *, earlier_boot: bool) -> StateStore:
    store = StateStore(str(tmp_path), boot_id="this-boot")
    store.load()
    if earlier_boot:
        store.set_value("previous", {"boot_id": "earlier-boot", "responses": responses})
    else:
        store.set_value("responses", responses)
    return store


def test_the_first_start_after_a_shutdown_response_runs_the_start_hooks(tmp_path: Path) -> None:
    """A `shutdown` response on an earlier boot counts like a stop: this boot owes `start`."""
    shutdown = record("shutdown", "shutdown")
    store = store_with(tmp_path, {"shutdown#1": shutdown}, earlier_boot=True)
    found = start_notice(store, None)
    assert found is not None and found.action == "start"
    assert found.time_text == shutdown["notice"]["time"]


def test_a_called_off_shutdown_ended_nothing(tmp_path: Path) -> None:
    """Canceled (the shutdown was called off): no start hooks on a later boot for it, and a
    Spot notice on this boot never joins it as the end it ended."""
    called_off = record("shutdown", "shutdown", why="canceled: the shutdown was called off")
    earlier = store_with(tmp_path / "a", {"shutdown#1": called_off}, earlier_boot=True)
    assert start_notice(earlier, None) is None
    store = store_with(tmp_path / "b", {"shutdown#1": called_off}, earlier_boot=False)
    responder = Responder(Config, lambda n, c: Plan(notice=n), store=store)
    assert responder.ended_of_same_end("spot", notice("terminate")) is None
    store.set_value("responses", {"shutdown#1": record("shutdown", "shutdown")})
    assert responder.ended_of_same_end("spot", notice("terminate")) == "shutdown#1"


def test_the_packaged_logind_drop_in_outlasts_the_default_budget() -> None:
    """The packages' logind drop-in lets a delay lock hold a shutdown back longer than the
    default shutdown.budget (so spotwatch, not logind's limit, lets it go on), and it is a
    [Login] setting logind reads from /usr/lib/systemd/logind.conf.d/."""
    drop_in = REPO / "packaging" / "files" / "logind-spotwatch.conf"
    settings = configparser.ConfigParser()
    settings.read_string(drop_in.read_text())
    limit = parse_duration(settings["Login"]["InhibitDelayMaxSec"])
    assert limit > Config().shutdown.budget
    nfpm = (REPO / "packaging" / "nfpm.yaml").read_text()
    assert "dst: /usr/lib/systemd/logind.conf.d/spotwatch.conf" in nfpm
