"""`spotwatch check` for preset hooks: each preset's prerequisite, looked for the way the
daemon would look: the program (on the daemon's PATH, or `bin`), the unit, the PID file, the
bucket with HeadBucket (moto over HTTP), the URL's host; a prerequisite named through a
placeholder is known only at a notice. (The Docker Engine: test_docker_stop.py.)"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Dict, List, Tuple

import yaml
from preset_support import Trainer, recorder
from standins import Receiver

from spotwatch.commands.check import check_hooks
from spotwatch.config.load import load_config


def results(tmp_path: Path, hooks: List[Dict[str, Any]]) -> List[Tuple[str, str, str]]:
    path = tmp_path / "config.yaml"
    imds = {"endpoint": "http://127.0.0.1:9", "timeout": "200ms", "user_data": False}
    path.write_text(yaml.safe_dump({"hooks": hooks, "imds": imds}))
    config = load_config(str(path), env={}, check_permissions=False)
    return [(r.name, r.status, r.detail) for r in check_hooks(config)]


def test_programs_are_looked_for_as_the_daemon_would(tmp_path: Path) -> None:
    kubectl = recorder(tmp_path, "kubectl")
    found = results(tmp_path, [
        {"name": "k", "preset": "kubectl-drain", "with": {"bin": str(kubectl)}},
        {"name": "n", "preset": "nomad-drain", "with": {"bin": "spotwatch-no-such-nomad"}},
    ])  # fmt: skip
    assert found == [
        ("hook:k", "ok", "preset kubectl-drain (terminate, stop, shutdown; 60 s)"),
        ("hook:k", "ok", f"{kubectl}: {kubectl}"),
        ("hook:n", "ok", "preset nomad-drain (terminate, stop, shutdown; 60 s)"),
        ("hook:n", "error", "spotwatch-no-such-nomad: not found on the daemon's PATH"),
    ]


def test_a_unit_unknown_to_systemd_fails(tmp_path: Path) -> None:
    """Whether systemd runs here or not, an unknown unit is an error saying why."""
    found = results(tmp_path, [
        {"name": "s", "preset": "systemd-stop", "with": {"units": ["spotwatch-no-such.service"]}}
    ])  # fmt: skip
    unit = [r for r in found if "spotwatch-no-such.service" in r[2]]
    assert len(unit) == 1 and unit[0][1] == "error", found


def test_a_pid_file_is_read_now_and_its_absence_is_a_warning(tmp_path: Path) -> None:
    trainer = Trainer(tmp_path)
    try:
        found = results(tmp_path, [
            {"name": "t", "preset": "signal", "with": {"pidfile": str(trainer.pidfile)}},
            {"name": "u", "preset": "signal", "with": {"pidfile": str(tmp_path / "no.pid")}},
        ])  # fmt: skip
    finally:
        trainer.process.kill()
        trainer.process.wait()
    assert found[1] == (
        "hook:t", "ok", f"pidfile {trainer.pidfile}: PID {trainer.process.pid} ({trainer.pidfile})"
    )
    assert found[3][:2] == ("hook:u", "warning") and "No such file" in found[3][2]


def test_the_bucket_is_asked_with_head_bucket(tmp_path: Path, s3: Any) -> None:
    s3.create_bucket(Bucket="there", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    found = results(tmp_path, [
        {"name": "a", "preset": "s3-sync", "with": {"path": "/x", "to": "s3://there/p/"}},
        {"name": "b", "preset": "s3-sync", "with": {"path": "/x", "to": "s3://not-there/p/"}},
    ])  # fmt: skip
    assert found[1] == ("hook:a", "ok", "bucket there: HeadBucket allowed")
    assert found[3] == ("hook:b", "error", "bucket not-there: no such bucket")


def test_the_urls_host_resolves_and_answers(tmp_path: Path) -> None:
    receiver = Receiver()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    try:
        found = results(tmp_path, [
            {"name": "up", "preset": "http", "with": {"url": receiver.url + "/x?token=s3cr3t"}},
            {"name": "down", "preset": "http", "with": {"url": f"http://127.0.0.1:{closed}/"}},
            {"name": "gone", "preset": "http", "with": {"url": "http://no-such-host.invalid/"}},
            {"name": "later", "preset": "http", "with": {"url": "http://${instance_id}.x/"}},
        ])  # fmt: skip
    finally:
        receiver.close()
    by_hook = {name: (status, detail) for name, status, detail in found[1::2]}
    assert by_hook["hook:up"][0] == "ok" and "s3cr3t" not in by_hook["hook:up"][1]
    assert by_hook["hook:up"][1].startswith(f"{receiver.url}/…: answers")
    assert by_hook["hook:down"][0] == "warning"
    assert by_hook["hook:gone"][0] == "error" and "does not resolve" in by_hook["hook:gone"][1]
    assert by_hook["hook:later"] == ("ok", "url http://${instance_id}.x: known only at a notice")
