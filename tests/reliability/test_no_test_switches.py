"""No environment variable changes where spotwatch looks at the host or what it runs.

`/etc/spotwatch/environment` is read by systemd into the service's environment; a variable
there that named a program (as `SPOTWATCH_SYSTEMCTL` did) would be a way to run code as root
that skips the config's permission rule. Tests choose the daemon's `Probes` where they build
it instead (tests/hibernate/probed_spotwatch.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import testkit

from spotwatch.parts.hibernate import Probes
from spotwatch.simulator.imds import ImdsSimulator


@pytest.mark.skipif(Probes().hibinit() is not None, reason="this host has the hibinit agent")
def test_the_former_test_switches_are_ignored(tmp_path: Path) -> None:
    """SPOTWATCH_SYSTEMCTL names a program that would leave a marker; SPOTWATCH_PROBE_ROOT a
    folder with the hibinit agent in it. `check` (hibernation relevant: IMDS says it is
    configured) runs neither and does not see that agent. Before, it ran the program as
    whoever ran check (root, for the service) and reported the planted agent."""
    marker = tmp_path / "ran"
    program = tmp_path / "not-systemctl"
    program.write_text(f"#!/bin/sh\ntouch {marker}\necho enabled\n")
    program.chmod(0o755)
    fake_root = tmp_path / "root"
    (fake_root / "usr/bin").mkdir(parents=True)
    (fake_root / "usr/bin/hibinit-agent").write_text("#!/bin/sh\n")
    with ImdsSimulator() as imds:
        imds.set_hibernation_configured(True)
        config = tmp_path / "c.yaml"
        config.write_text(
            f"state_dir: {tmp_path}/s\nimds: {{endpoint: '{imds.endpoint}'}}\n"
            "ecs: {enabled: false}\n"
        )
        config.chmod(0o600)
        env = testkit.child_env(
            {"SPOTWATCH_SYSTEMCTL": str(program), "SPOTWATCH_PROBE_ROOT": str(fake_root)}
        )
        done = subprocess.run(
            [sys.executable, "-m", "spotwatch", "check", "--json", "-c", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert not marker.exists()
    assert "not installed" in checks["hibernation:agent"]["detail"], done.stdout
