"""The command line as an operator meets it: entry points, exit statuses, error lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from fnmatch import fnmatchcase
from typing import Any, Dict, Optional

from service_support import REPO

from spotwatch import __version__


def _spotwatch(*args: str, env_extra: Optional[Dict[str, str]] = None, timeout: float = 30) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTWATCH_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "spotwatch", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def _config(tmp_path, text: str, name: str = "c.yaml"):
    """A config file only root can write (the permission rule applies: we run as root)."""
    config = tmp_path / name
    config.write_text(text)
    config.chmod(0o600)
    return config


def test_version_from_the_module_and_the_console_script():
    """`python -m spotwatch --version` and `spotwatch --version` print the same thing."""
    result = _spotwatch("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"spotwatch {__version__}"


def test_config_errors_exit_78_naming_the_key_path(tmp_path):
    """run and check: one stderr line per problem, naming its key path; exit 78."""
    config = tmp_path / "bad.yaml"
    config.write_text(
        "poll_interval: soon\nhooks:\n  - name: x\n    command: [true]\n    timeout: 0\n"
    )
    config.chmod(0o600)
    for command in (("run",), ("check",), ("status",)):
        result = _spotwatch(*command, "-c", str(config))
        assert result.returncode == 78, (command, result.stderr)
        assert "poll_interval" in result.stderr
        assert "hooks[0].timeout" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_missing_named_config_is_an_error(tmp_path):
    """-c or $SPOTWATCH_CONFIG naming a file that is not there: exit 78."""
    missing = str(tmp_path / "nope.yaml")
    assert _spotwatch("check", "-c", missing).returncode == 78
    assert _spotwatch("check", env_extra={"SPOTWATCH_CONFIG": missing}).returncode == 78


def test_a_bad_environment_variable_names_itself(tmp_path):
    """SPOTWATCH_POLL_INTERVAL=fast: the error names the variable."""
    config = tmp_path / "ok.yaml"
    config.write_text(f"state_dir: {tmp_path}\n")
    config.chmod(0o600)
    result = _spotwatch("check", "-c", str(config), env_extra={"SPOTWATCH_POLL_INTERVAL": "fast"})
    assert result.returncode == 78
    assert "SPOTWATCH_POLL_INTERVAL" in result.stderr


def test_an_https_imds_endpoint_is_a_config_error_not_a_crash(tmp_path):
    """IMDS has no TLS. An https endpoint, in the file or in AWS_EC2_METADATA_SERVICE_ENDPOINT,
    is refused while loading: exit 78 naming where it came from, no traceback (before, `run`
    crashed at its first poll with exit 1, which systemd turns into a restart loop)."""
    https = "imds: {endpoint: 'https://169.254.169.254'}\n"
    config = _config(tmp_path, f"{https}state_dir: {tmp_path}/s\n")
    result = _spotwatch("run", "--once", "-c", str(config))
    assert result.returncode == 78, result.stderr
    assert "imds.endpoint: expected http:// (IMDS has no TLS)" in result.stderr
    assert "Traceback" not in result.stderr
    config.write_text(f"state_dir: {tmp_path}/s\n")
    https = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": "https://[fd00:ec2::254]"}
    result = _spotwatch("run", "--once", "-c", str(config), env_extra=https)
    assert result.returncode == 78, result.stderr
    assert "AWS_EC2_METADATA_SERVICE_ENDPOINT: expected http://" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_deeply_nested_config_is_exit_78_not_a_traceback(tmp_path):
    """`check` and `run` on 3000 `[`: one line naming the file, exit 78 (before: a
    RecursionError traceback from the YAML loader)."""
    config = _config(tmp_path, "[" * 3000, "deep.yaml")
    for command in (("check",), ("run", "--once")):
        result = _spotwatch(*command, "-c", str(config))
        assert result.returncode == 78, (command, result.stderr)
        assert result.stderr.splitlines() == [
            f"{config}: line 1, column 65: YAML document: nested deeper than 64 levels"
        ]


def test_with_log_format_json_every_line_is_json_the_first_too(tmp_path, imds):
    """Loading the config logs (here: IMDS has no user data) before the config says the
    format; those lines are held and written as JSON too (before: the first line was text)."""
    config = _config(
        tmp_path,
        f"log: {{format: json}}\nstate_dir: {tmp_path}/s\nimds: {{endpoint: '{imds.endpoint}'}}\n"
        "ecs: {enabled: false}\nhibernate: {trigger: none}\n",
    )
    result = _spotwatch("run", "--once", "-c", str(config))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records[0]["message"] == "no user data"
    assert records[0]["logger"] == "spotwatch.config"


def test_status_without_state_exits_1(tmp_path):
    """No state recorded yet is said plainly, exit 1."""
    config = tmp_path / "c.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    config.chmod(0o600)
    result = _spotwatch("status", "-c", str(config))
    assert result.returncode == 1
    assert "no state yet" in result.stderr


def test_check_json_reports_each_preflight(tmp_path, imds):
    """check --json: machine-readable, with the IMDS preflight done over a real token."""
    config = _config(
        tmp_path,
        f"state_dir: {tmp_path / 'state'}\nimds: {{endpoint: '{imds.endpoint}'}}\n"
        "ecs: {enabled: false}\n",
    )
    result = _spotwatch("check", "--json", "-c", str(config))
    document = json.loads(result.stdout)
    names = {c["name"]: c["status"] for c in document["checks"]}
    assert names["config"] == "ok"
    assert names["imds"] == "ok"
    assert result.returncode == (0 if document["ok"] else 1)


def test_group_writable_config_is_refused_as_root(tmp_path):
    """Hooks run as root: a config others can write is a config error (root only)."""
    if os.geteuid() != 0:
        import pytest

        pytest.skip("the permission rule applies when spotwatch runs as root")
    config = tmp_path / "c.yaml"
    config.write_text(f"state_dir: {tmp_path}\n")
    config.chmod(0o664)
    result = _spotwatch("run", "--once", "-c", str(config))
    assert result.returncode == 78
    assert "not writable by group or others" in result.stderr


def test_setuptools_finds_every_package_and_not_the_unit_folder():
    """pyproject has setuptools find spotwatch and its subpackages only (the top-level
    systemd/ folder of unit files must not be taken for a package): its patterns take every
    folder with an __init__.py under spotwatch/, and none of the repository's other folders."""
    text = (REPO / "pyproject.toml").read_text()
    find = re.search(r"\[tool\.setuptools\.packages\.find\][^\[]*?include = \[([^\]]*)\]", text)
    assert find is not None, "pyproject.toml has no [tool.setuptools.packages.find] include"
    patterns = re.findall(r'"([^"]+)"', find.group(1))
    found = {
        ".".join(path.parent.relative_to(REPO).parts)
        for path in (REPO / "spotwatch").rglob("__init__.py")
    }
    # setuptools matches each candidate's dotted name against the patterns (fnmatchcase).
    assert all(any(fnmatchcase(name, p) for p in patterns) for name in found)
    assert not any(fnmatchcase(name, p) for p in patterns for name in ("systemd", "tests", "bench"))
