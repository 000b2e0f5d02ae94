"""The trigger's look at systemd's job queue (`systemctl list-jobs`): a queued sleep job
means a hibernation is on its way and the trigger stands back. The question is asked while
the hooks run (look_ahead), so no systemctl run sits between the hooks and the trigger; an
answer older than LOOKAHEAD_FRESH is asked again. systemctl is a real stand-in script that
logs each run; the ledger is the real one in a temporary folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List

import pytest

from spotwatch.config.schema import HibernateSettings
from spotwatch.detection.notices import now_notice
from spotwatch.parts import hibernate
from spotwatch.parts.hibernate import HibernateTrigger, Probes
from spotwatch.response.deadline import NoticeClock
from spotwatch.response.plan import StepContext
from spotwatch.state.ledger import HibernateLedger
from spotwatch.state.schema import OK, SKIPPED


class Systemctl:
    """A systemctl stand-in: logs each run's time; its answers come from `jobs` in turn
    (the last one repeats)."""

    def __init__(self, folder: Path, jobs: List[str]) -> None:
        self.log = folder / "systemctl.log"
        self.path = folder / "systemctl"
        answers = folder / "answers"
        answers.mkdir()
        for n, job in enumerate(jobs):
            (answers / str(n)).write_text(job)
        self.path.write_text(
            "#!/bin/bash\n"
            f"n=$(wc -l < {self.log} 2>/dev/null || echo 0)\n"
            f"echo $EPOCHREALTIME >> {self.log}\n"
            f'f={answers}/$n; [ -f "$f" ] || f={answers}/{len(jobs) - 1}\n'
            'cat "$f"\n'
        )
        self.path.chmod(0o755)

    def runs(self) -> List[float]:
        return [float(x) for x in self.log.read_text().split()] if self.log.exists() else []


def _trigger(tmp_path: Path, systemctl: Systemctl) -> HibernateTrigger:
    marker = tmp_path / "triggered"
    settings = HibernateSettings(trigger="command", command=("/bin/touch", str(marker)))
    ledger = HibernateLedger(str(tmp_path / "state"), boot_id="boot-1")
    return HibernateTrigger(settings, ledger, Probes(systemctl=(str(systemctl.path),)))


def _context() -> StepContext:
    notice = now_notice("hibernate", "instance-action")
    return StepContext(clock=NoticeClock.budget(notice, 10.0), instance_id="i-1", dry_run=False)


def test_a_queued_sleep_job_stops_the_trigger(tmp_path: Path) -> None:
    systemctl = Systemctl(tmp_path, ["42 hibernate.target start waiting\n"])
    outcome = _trigger(tmp_path, systemctl).run(_context())
    assert outcome.status == SKIPPED
    assert "systemd job 42 hibernate.target start" in outcome.detail
    assert not (tmp_path / "triggered").exists()


def test_the_question_is_asked_while_the_hooks_run(tmp_path: Path) -> None:
    systemctl = Systemctl(tmp_path, [""])
    trigger = _trigger(tmp_path, systemctl)
    trigger.look_ahead()
    time.sleep(0.3)  # the hooks
    hooks_over = time.time()
    outcome = trigger.run(_context())
    assert outcome.status == OK, outcome.detail
    assert (tmp_path / "triggered").exists()
    runs = systemctl.runs()
    assert len(runs) == 1 and runs[0] < hooks_over  # asked once, before the hooks were over


def test_an_answer_grown_stale_is_asked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(hibernate, "LOOKAHEAD_FRESH", 0.2)
    systemctl = Systemctl(tmp_path, ["", "7 hibernate.target start waiting\n"])
    trigger = _trigger(tmp_path, systemctl)
    trigger.look_ahead()
    time.sleep(0.5)  # long hooks: a job may have been queued since
    outcome = trigger.run(_context())
    assert len(systemctl.runs()) == 2
    assert outcome.status == SKIPPED and "systemd job 7" in outcome.detail


def test_no_question_when_the_trigger_is_off(tmp_path: Path) -> None:
    systemctl = Systemctl(tmp_path, [""])
    settings = HibernateSettings(trigger="none")
    ledger = HibernateLedger(str(tmp_path / "state"), boot_id="boot-1")
    trigger = HibernateTrigger(settings, ledger, Probes(systemctl=(str(systemctl.path),)))
    trigger.look_ahead()
    assert trigger.run(_context()).status == SKIPPED
    time.sleep(0.2)
    assert systemctl.runs() == []


@pytest.mark.parametrize(("configured", "agent", "triggers"), [
    (None, True, False),  # unknown, agent installed: EC2's agent handles it; never a second
    (None, False, True),  # unknown, no agent: nobody else would, so we do
    (True, True, False),
    (False, True, True),
])  # fmt: skip
def test_auto_decides_on_the_safe_side_while_configured_is_unknown(
    tmp_path: Path, configured, agent, triggers
) -> None:
    """`trigger: auto` while `hibernation/configured` could not be read (IMDS down at start):
    with EC2's agent installed it stands back (before: it triggered, a second hibernation on
    top of EC2's)."""
    root = tmp_path / "root"
    if agent:
        (root / "usr/bin").mkdir(parents=True)
        (root / "usr/bin/hibinit-agent").write_text("#!/bin/sh\n")
    marker = tmp_path / "triggered"
    settings = HibernateSettings(trigger="auto", command=("/bin/touch", str(marker)))
    ledger = HibernateLedger(str(tmp_path / "state"), boot_id="boot-1")
    if configured is not None:
        ledger.set_configured(configured)
    no_systemd = Systemctl(tmp_path, [""])
    trigger = HibernateTrigger(
        settings, ledger, Probes(root=str(root), systemctl=(str(no_systemd.path),))
    )
    outcome = trigger.run(_context())
    assert marker.exists() is triggers, outcome
    assert outcome.status == (OK if triggers else SKIPPED)
