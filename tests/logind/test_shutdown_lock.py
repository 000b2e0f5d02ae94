"""CONTRACT §8 with real parts: the daemon (a child process) takes logind's delay lock from a
logind stand-in on a real dbus-daemon, and answers the stand-in's PrepareForShutdown.

The figures a test prints (announce → first hook, hooks' end → lock released) are wall
times: the hooks write theirs with `date +%s.%N`, the stand-in stamps each release.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from logindsupport import LogindStandIn, PrivateBus, hook_runs, timed_hook
from testkit import response_record, spotwatch, wait_for

from spotwatch.simulator.imds import ImdsSimulator, format_time

BUDGET = 20.0


def state(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "state" / "state.json").read_text())


def spot_notice(imds: ImdsSimulator, action: str = "terminate", lead: float = 60.0) -> None:
    when = datetime.fromtimestamp(time.time() + lead, timezone.utc)
    imds.set_instance_action(action, format_time(when))


def test_the_lock_is_taken_at_start_held_and_let_go_with_the_process(
    write_config, daemons, logind: LogindStandIn
) -> None:
    """At start the daemon takes one shutdown delay lock ("shutdown", "spotwatch", "delay")
    and holds it while it runs; when it stops, the lock goes with it."""
    daemon = daemons(write_config())
    (lock,) = logind.wait_for(lambda li: li.held())
    assert (lock.what, lock.who, lock.mode) == ("shutdown", "spotwatch", "delay")
    assert lock.pid == daemon.process.pid
    time.sleep(1.0)
    assert logind.held() == [lock] and logind.calls.inhibit == 1
    assert daemon.stop() == 0
    logind.wait_for(lambda li: not li.held(), timeout=2)


def test_an_unannounced_shutdown_runs_the_shutdown_hooks_and_is_held_until_they_end(
    tmp_path, write_config, daemons, on_bus, logind: LogindStandIn
) -> None:
    """No notice, then PrepareForShutdown(true): the hooks subscribed to `shutdown` run with
    SPOTWATCH_ACTION=shutdown, SPOTWATCH_SOURCE=shutdown and SPOTWATCH_NOTICE_TIME the
    announcement + shutdown.budget; the lock is released only once they have ended, and at
    once then. Hooks of other actions do not run; status and metrics show the notice."""
    out = tmp_path / "hooks.log"
    metrics = tmp_path / "metrics.prom"
    config = write_config(
        [
            timed_hook(tmp_path, "checkpoint", out, actions=["shutdown"], sleep=1.5),
            timed_hook(tmp_path, "spot-only", out, actions=["terminate"]),
        ],
        shutdown={"budget": f"{BUDGET:g}s"},
        metrics={"textfile": str(metrics)},
    )
    daemons(config)
    (lock,) = logind.wait_for(lambda li: li.held())
    announced = logind.prepare_for_shutdown(True)
    logind.wait_for(lambda li: lock.released is not None, timeout=BUDGET)
    (run,) = hook_runs(out)
    assert (run.name, run.action, run.source) == ("checkpoint", "shutdown", "shutdown")
    noticed = datetime.strptime(run.notice_time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert abs(noticed.timestamp() - (announced + BUDGET)) <= 1.5
    assert run.ended is not None and lock.released_wall is not None
    assert lock.released_wall >= run.ended  # held until the hook ended
    assert lock.released_wall - run.ended < 1.0  # and let go at once then
    print(
        f"announce -> first hook {(run.started - announced) * 1000:.0f} ms; "
        f"hook end -> lock released {(lock.released_wall - run.ended) * 1000:.0f} ms"
    )
    record = response_record(state(tmp_path), "shutdown")
    assert record["done"] and record["notice"]["action"] == "shutdown"
    assert [s["status"] for s in record["steps"]] == ["ok"]
    status = json.loads(spotwatch("status", "-c", str(config), "--json", env=on_bus).stdout)
    assert status["notice"]["action"] == "shutdown" and status["notice"]["source"] == "shutdown"
    wait_for(lambda: 'action="shutdown",source="shutdown"} 1' in metrics.read_text())


def test_after_a_finished_spot_response_the_shutdown_goes_on_at_once_and_nothing_runs_twice(
    tmp_path, write_config, daemons, imds, logind: LogindStandIn
) -> None:
    """A Spot terminate notice was answered on this boot; the shutdown it announced comes:
    the lock is released at once, and no hook runs a second time."""
    out = tmp_path / "hooks.log"
    daemons(
        write_config([timed_hook(tmp_path, "checkpoint", out, actions=["terminate", "shutdown"])])
    )
    (lock,) = logind.wait_for(lambda li: li.held())
    spot_notice(imds)
    wait_for(lambda: response_record(state(tmp_path)).get("done"))
    announced = logind.prepare_for_shutdown(True)
    logind.wait_for(lambda li: lock.released is not None, timeout=3)
    assert lock.released_wall is not None and lock.released_wall - announced < 1.0
    time.sleep(0.5)
    assert [(r.name, r.action) for r in hook_runs(out)] == [("checkpoint", "terminate")]
    assert "shutdown" not in {r.get("tracker") for r in state(tmp_path)["responses"].values()}


def test_during_a_running_spot_response_the_shutdown_waits_for_it(
    tmp_path, write_config, daemons, imds, logind: LogindStandIn
) -> None:
    """A shutdown announced while the response to a Spot notice runs is that same end: the
    lock is released once that response has ended, and its hooks are not run again."""
    out = tmp_path / "hooks.log"
    hook = timed_hook(tmp_path, "checkpoint", out, actions=["terminate", "shutdown"], sleep=2.0)
    daemons(write_config([hook]))
    (lock,) = logind.wait_for(lambda li: li.held())
    spot_notice(imds)
    wait_for(lambda: hook_runs(out))
    logind.prepare_for_shutdown(True)
    time.sleep(0.5)
    assert lock.released is None  # the hook still runs: held
    logind.wait_for(lambda li: lock.released is not None, timeout=BUDGET)
    (run,) = hook_runs(out)
    assert run.action == "terminate" and run.ended is not None
    assert lock.released_wall is not None and 0 <= lock.released_wall - run.ended < 1.0


def test_no_response_holds_a_shutdown_longer_than_the_budget(
    tmp_path, write_config, daemons, imds, logind: LogindStandIn
) -> None:
    """shutdown.budget bounds the wait for a running response: at 2 s the lock goes, though
    the Spot response's hook still runs."""
    out = tmp_path / "hooks.log"
    daemons(
        write_config(
            [timed_hook(tmp_path, "slow", out, actions=["terminate"], sleep=8.0)],
            shutdown={"budget": "2s"},
        )
    )
    (lock,) = logind.wait_for(lambda li: li.held())
    spot_notice(imds)
    wait_for(lambda: hook_runs(out))
    announced = logind.prepare_for_shutdown(True)
    logind.wait_for(lambda li: lock.released is not None, timeout=6)
    assert lock.released_wall is not None
    assert 1.9 <= lock.released_wall - announced < 4.0
    assert hook_runs(out)[0].ended is None  # still running when the shutdown went on


def test_called_off_the_lock_is_held_again_and_that_response_ended_nothing(
    tmp_path, write_config, daemons, logind: LogindStandIn
) -> None:
    """PrepareForShutdown(false) while the shutdown response runs: the lock stays held, the
    response starts no further step (the second hook never runs) and is recorded canceled,
    so the next announcement gets a whole response again. Called off after the lock was
    let go, the lock is taken again."""
    out = tmp_path / "hooks.log"
    config = write_config(
        [
            timed_hook(tmp_path, "first", out, actions=["shutdown"], sleep=1.5, order=0),
            timed_hook(tmp_path, "second", out, actions=["shutdown"], order=1),
        ],
        shutdown={"budget": f"{BUDGET:g}s"},
    )
    daemons(config)
    (lock,) = logind.wait_for(lambda li: li.held())
    logind.prepare_for_shutdown(True)
    wait_for(lambda: hook_runs(out))
    logind.prepare_for_shutdown(False)
    wait_for(lambda: response_record(state(tmp_path), "shutdown").get("done"))
    record = response_record(state(tmp_path), "shutdown")
    assert record["why_ended"].startswith("canceled")
    assert [r.name for r in hook_runs(out)] == ["first"]
    assert logind.held() == [lock] and logind.calls.inhibit == 1

    logind.prepare_for_shutdown(True)
    logind.wait_for(lambda li: lock.released is not None, timeout=BUDGET)
    assert [r.name for r in hook_runs(out)] == ["first", "first", "second"]
    logind.prepare_for_shutdown(False)
    (again,) = logind.wait_for(lambda li: li.held())
    assert again is not lock and logind.calls.inhibit == 2


def test_a_lost_bus_is_found_again_and_the_lock_taken_again(
    tmp_path, write_config, daemons, bus, logind: LogindStandIn
) -> None:
    """The system bus goes away and comes back (a new dbus-daemon, a new logind): the daemon
    says so once, connects again and holds a fresh lock, and goes on polling."""
    daemon = daemons(write_config())
    logind.wait_for(lambda li: li.held())
    logind.stop()
    bus.stop()
    again = PrivateBus(tmp_path / "dbus")
    fresh = LogindStandIn(again.address)
    try:
        fresh.wait_for(lambda li: li.held(), timeout=15)
        wait_for(lambda: "connected to logind again" in daemon.log())
        assert daemon.log().count("lost logind") == 1
        assert daemon.process.poll() is None
    finally:
        fresh.stop()
        again.stop()
