"""`ecs.stop_via` and `ecs.docker_host` (CONTRACT §4, "ECS stops through the container
runtime"): typed and defaulted like every key, DOCKER_HOST overrides the file, and every
mistake names its key path (or the variable) and exits 78."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from spotwatch.config.errors import ConfigError
from spotwatch.config.load import load_config
from spotwatch.config.schema import EcsSettings
from spotwatch.exits import EX_CONFIG


def _load(tmp_path: Path, text: str, env: Dict[str, str]) -> EcsSettings:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(str(path), env=env, check_permissions=False).ecs


def _problems(tmp_path: Path, text: str, env: Dict[str, str]) -> List[str]:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text, env)
    return caught.value.problems


def test_defaults_are_auto_and_the_usual_socket(tmp_path: Path) -> None:
    ecs = _load(tmp_path, "", {})
    assert (ecs.stop_via, ecs.docker_host) == ("auto", "unix:///var/run/docker.sock")


@pytest.mark.parametrize("host", ["unix:///run/docker.sock", "tcp://127.0.0.1:2375"])
def test_a_socket_or_a_tcp_address_is_taken(tmp_path: Path, host: str) -> None:
    ecs = _load(tmp_path, f"ecs: {{stop_via: runtime, docker_host: '{host}'}}", {})
    assert (ecs.stop_via, ecs.docker_host) == ("runtime", host)


def test_docker_host_from_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    text = "ecs: {docker_host: 'unix:///var/run/docker.sock'}"
    ecs = _load(tmp_path, text, {"DOCKER_HOST": "unix:///run/user/0/docker.sock"})
    assert ecs.docker_host == "unix:///run/user/0/docker.sock"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("ecs: {stop_via: docker}", "ecs.stop_via: expected one of auto | api | runtime, got"),
        ("ecs: {docker_host: /var/run/docker.sock}", "ecs.docker_host: expected unix:///"),
        ("ecs: {docker_host: 'unix://docker.sock'}", "ecs.docker_host: expected unix:///"),
        ("ecs: {docker_host: 'tcp://127.0.0.1'}", "or tcp://host:port"),
        ("ecs: {docker_host: 'ssh://me@host'}", "or tcp://host:port"),
        ("ecs: {docker_host: 2375}", "ecs.docker_host: "),
    ],
)
def test_each_mistake_names_its_key_path(tmp_path: Path, text: str, said: str) -> None:
    (problem,) = _problems(tmp_path, text, {})
    assert said in problem, problem


def test_a_bad_docker_host_variable_is_named(tmp_path: Path) -> None:
    (problem,) = _problems(tmp_path, "", {"DOCKER_HOST": "npipe:////./pipe/docker_engine"})
    assert problem.startswith("DOCKER_HOST: expected unix:///"), problem


def test_from_the_command_line_a_bad_stop_via_is_exit_78(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("ecs:\n  stop_via: local\n")
    path.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOTWATCH_", "DOCKER_"))}
    result = subprocess.run(
        [sys.executable, "-m", "spotwatch", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == EX_CONFIG, result.stderr
    assert f"{path}: ecs.stop_via: expected one of auto | api | runtime, got" in result.stderr
    assert "Traceback" not in result.stderr
