"""The claims of docs/security.md that a test can hold: who decides what runs as root, no
shell unless asked, IMDSv2 only unless allowed, secrets kept out of logs and hook
environments, a private state folder."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from relsupport import Captured, append_hook, base_config, write_config

from spotwatch.cli import main as cli_main
from spotwatch.clouds.aws.imds import ImdsClient, ImdsError
from spotwatch.commands.settings import load_service_config
from spotwatch.config.errors import ConfigError
from spotwatch.config.load import config_to_dict, load_config
from spotwatch.config.schema import HookSpec
from spotwatch.daemon.shell import Daemon, DaemonParts
from spotwatch.detection.notices import Notice, parse_utc_time
from spotwatch.response.deadline import NoticeClock
from spotwatch.response.hooks import hook_environment, run_hook
from spotwatch.response.plan import StepContext
from spotwatch.simulator.imds import ImdsSimulator

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root")


def confd_setup(tmp_path: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text("poll_interval: 5s\n")
    config.chmod(0o644)
    confd = tmp_path / "conf.d"
    confd.mkdir()
    (confd / "10-hooks.yaml").write_text("dry_run: true\n")
    (confd / "10-hooks.yaml").chmod(0o644)
    return config


@needs_root
@pytest.mark.parametrize("change", ["world-writable", "group-writable", "not-root"])
def test_a_confd_folder_others_can_write_is_refused(tmp_path: Path, change: str) -> None:
    """conf.d is a folder of layers: whoever may write to it can remove or rename a layer or
    symlink any root-owned YAML in, without writing a file of their own. It must be root's."""
    config = confd_setup(tmp_path)
    confd = tmp_path / "conf.d"
    confd.chmod(0o755)
    assert load_config(str(config), env={}, check_permissions=True).dry_run
    if change == "world-writable":
        confd.chmod(0o777)
    elif change == "group-writable":
        confd.chmod(0o775)
    else:
        os.chown(confd, 1000, 1000)
    with pytest.raises(ConfigError) as raised:
        load_config(str(config), env={}, check_permissions=True)
    assert any(
        p.startswith(f"{confd}: folder must be owned by root") for p in raised.value.problems
    )
    assert cli_main(["run", "--once", "-c", str(config)]) == 78


@needs_root
def test_a_symlink_into_a_root_owned_confd_is_checked_by_its_target(tmp_path: Path) -> None:
    """A link in a root-owned conf.d was put there by root; its target is checked too."""
    config = confd_setup(tmp_path)
    (tmp_path / "conf.d").chmod(0o755)
    target = tmp_path / "user-owned.yaml"
    target.write_text("dry_run: false\n")
    target.chmod(0o644)
    os.chown(target, 1000, 1000)
    (tmp_path / "conf.d" / "20-link.yaml").symlink_to(target)
    with pytest.raises(ConfigError):
        load_config(str(config), env={}, check_permissions=True)


def test_an_argv_hook_gets_no_shell(tmp_path: Path) -> None:
    """An argv list is run as is: shell syntax in it is data, not code."""
    marker = tmp_path / "pwned"
    out = tmp_path / "out"
    spec = HookSpec(
        name="argv",
        command=("/bin/sh", "-c", 'printf "%s|" "$@" > ' + str(out), "sh",
                 f"$(touch {marker})", ";", f"touch {marker}", "`id`"),
    )  # fmt: skip
    result = run_hook(spec, context())
    assert result.status == "ok"
    assert not marker.exists()
    assert out.read_text() == f"$(touch {marker})|;|touch {marker}|`id`|"
    assert HookSpec(name="s", command="echo hi").argv() == ("/bin/sh", "-c", "echo hi")


def context() -> StepContext:
    time = parse_utc_time("2099-01-01T00:00:00Z")
    assert time is not None
    notice = Notice("terminate", time, "2099-01-01T00:00:00Z", "instance-action")
    return StepContext(clock=NoticeClock(notice, 10.0), instance_id="i-1", dry_run=False)


def test_hooks_do_not_inherit_the_daemons_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials in the daemon's environment (AWS keys, webhook tokens) never reach hooks."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leak")
    monkeypatch.setenv("SPOTWATCH_WEBHOOK_TOKEN", "leak")
    env = hook_environment(HookSpec(name="h", command="true"), context(), None)
    assert "leak" not in env.values()
    assert set(env) == {
        "PATH", "SPOTWATCH_ACTION", "SPOTWATCH_NOTICE_TIME", "SPOTWATCH_DEADLINE",
        "SPOTWATCH_SECONDS_LEFT", "SPOTWATCH_INSTANCE_ID", "SPOTWATCH_SOURCE",
        "SPOTWATCH_DRY_RUN", "SPOTWATCH_CLOUD",
    }  # fmt: skip


def test_imdsv2_only_by_default() -> None:
    """When no token can be had, the default client never asks without one (IMDSv1 is the
    SSRF-prone protocol); only `allow_imdsv1` permits it."""
    with ImdsSimulator(imdsv2_only=False) as sim:
        sim.inject_status(403, path="/latest/api/token", count=None)
        client = ImdsClient(sim.endpoint, timeout=0.2)
        try:
            with pytest.raises(ImdsError):
                client.get("meta-data/instance-id")
        finally:
            client.close()
        assert sim.count("GET") == 0
        v1 = ImdsClient(sim.endpoint, timeout=0.2, allow_imdsv1=True)
        try:
            assert v1.get("meta-data/instance-id").status == 200
        finally:
            v1.close()


def test_no_forwarded_header_and_no_proxy_on_the_token_request(tmp_path: Path) -> None:
    """The token PUT goes straight to IMDS (IMDS refuses a PUT carrying X-Forwarded-For)."""
    with ImdsSimulator() as sim:
        client = ImdsClient(sim.endpoint, timeout=0.5)
        try:
            assert client.get("meta-data/instance-id").status == 200
        finally:
            client.close()
        assert sim.count("PUT", status=200) == 1 and sim.count("PUT", status=403) == 0


def test_webhook_headers_are_redacted_when_the_config_is_shown(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "webhook: {url: 'https://hooks.example.com/T0K3N', headers: {Authorization: Bearer s3}}\n"
    )
    shown = config_to_dict(load_config(str(path), env={}, check_permissions=False))
    assert shown["webhook"]["headers"] == {"Authorization": "***"}


def test_the_state_folder_is_private_and_the_token_never_logged(tmp_path: Path) -> None:
    with ImdsSimulator() as sim:
        config = write_config(
            tmp_path / "config.yaml",
            base_config(
                tmp_path / "state", sim.endpoint, [append_hook("h", tmp_path / "o", ["stop"])]
            ),
        )
        with Captured() as log:
            daemon = Daemon(load_service_config(str(config), env={}, with_user_data=False),
                            parts=DaemonParts())  # fmt: skip
            daemon.prepare()
            try:
                assert daemon.watcher is not None
                daemon.watcher.poll_once()
                token = daemon.client._token
            finally:
                daemon.shutdown()
    mode = stat.S_IMODE((tmp_path / "state").stat().st_mode)
    assert mode & 0o077 == 0, oct(mode)
    assert token and token not in log.text()
