"""How long from a hibernate notice seen by the poll to the trigger command running?

A real daemon in this process (its poll made by hand, so the poll interval is out of the
picture), the IMDS simulator over HTTP, hooks and the trigger as real processes. The moment
"seen" is when the poll hands the notice to the daemon (`on_notice`); "started" is the wall
time the trigger command itself writes down (`date +%s.%N`), so process start-up counts.

    PYTHONPATH=. python bench/hibernate.py [--runs 20] [--hooks 1]

Prints median / min / max in milliseconds, with and without fast hooks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import List

import yaml

from spotwatch.detection.tracker import Observation
from spotwatch.service.daemon import Daemon
from spotwatch.service.settings import load_service_config
from spotwatch.service.wiring import daemon_hooks
from spotwatch.simulator.imds import ImdsSimulator


def one_run(imds: ImdsSimulator, folder: Path, hooks: int) -> float:
    marker = folder / "triggered"
    config = {
        "poll_interval": "5s",
        "state_dir": str(folder / "state"),
        "imds": {"endpoint": imds.endpoint, "timeout": "500ms", "user_data": False},
        "ecs": {"enabled": False},
        "rebalance": {"enabled": False},
        "hooks": [
            {"name": f"fast{i}", "command": ["/bin/true"], "actions": ["hibernate"]}
            for i in range(hooks)
        ],
        "hibernate": {"trigger": "command", "command": f"date +%s.%N > {marker}"},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    loaded = load_service_config(str(path), env={}, with_user_data=False)
    daemon = Daemon(loaded, hooks=daemon_hooks(loaded))
    daemon.prepare()
    seen: List[float] = []
    original = daemon.on_notice

    def on_notice(monitor: str, observation: Observation) -> None:
        seen.append(time.time())
        original(monitor, observation)

    daemon.on_notice = on_notice  # type: ignore[method-assign]
    assert daemon.watcher is not None
    daemon.watcher.poll_once()  # baseline poll: token, no notice
    imds.set_instance_action("hibernate")
    daemon.watcher.poll_once()
    daemon.wait_for_responses(30)
    daemon.shutdown()
    imds.clear_instance_action()
    started = float(marker.read_text().strip())
    return (started - seen[0]) * 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    os.environ["SPOTWATCH_SYSTEMCTL"] = os.environ.get("SPOTWATCH_SYSTEMCTL", "/bin/false")
    with ImdsSimulator() as imds, tempfile.TemporaryDirectory() as tmp:
        for hooks in (0, 1, 3):
            times = []
            for run in range(args.runs):
                folder = Path(tmp) / f"h{hooks}-{run}"
                folder.mkdir()
                times.append(one_run(imds, folder, hooks))
            print(
                f"notice seen -> trigger started, {hooks} fast hook(s), {args.runs} runs: "
                f"median {statistics.median(times):.1f} ms, "
                f"min {min(times):.1f} ms, max {max(times):.1f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
