"""Helpers for the other clouds' tests: a config pointing the daemon at a simulator, hooks
that record their environment, and what the daemon wrote in its state folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import yaml
from testkit import lines


def config_for(workdir: Path, cloud: str, endpoint: str, **overrides: Any) -> Path:
    """A config on `cloud` whose metadata service is at `endpoint`, polling fast."""
    config: Dict[str, Any] = {
        "cloud": cloud,
        "poll_interval": "200ms",
        "deadline_margin": "1s",
        "state_dir": str(workdir / "state"),
        "imds": {"timeout": "500ms"},
        cloud: {"endpoint": endpoint},
        "hooks": [],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def env_hook(
    name: str, out: Path, actions: List[str], *, sleep: float = 0.0, **extra: Any
) -> Dict[str, Any]:
    """A hook that appends its SPOTWATCH_* environment to `out` as one JSON line (then sleeps)."""
    script = (
        "python3 -c 'import json, os; print(json.dumps({k: v for k, v in os.environ.items()"
        f' if k.startswith("SPOTWATCH_")}}))\' >> {out}'
    )
    if sleep:
        script += f"; sleep {sleep}"
    return {"name": name, "command": script, "actions": actions, "timeout": "60s", **extra}


def runs(out: Path) -> List[Dict[str, str]]:
    """What each run of an `env_hook` saw, in order."""
    return [json.loads(line) for line in lines(out)]


def last_poll(workdir: Path) -> Dict[str, Any]:
    """poll.json: the last poll's time and result ({} before the first)."""
    path = workdir / "state" / "poll.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    assert isinstance(data, dict)
    return data


def state_of(workdir: Path) -> Dict[str, Any]:
    path = workdir / "state" / "state.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    assert isinstance(data, dict)
    return data
