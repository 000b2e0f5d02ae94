"""Webhook: events in order, retried through a failing receiver, secrets kept out of the log."""

from __future__ import annotations

import json

import pytest
import yaml
from operator_support import spotwatch, wait_for

from spotwatch.cli import main as cli_main
from spotwatch.config.schema import Config, WebhookSettings
from spotwatch.telemetry.sinks import EventSinks
from spotwatch.telemetry.webhook import redact, safe_url, secrets_of

SECRETS = ("s3cretpw", "QUERYSECRET", "T0KENPATH", "HEADERSECRET")


def _secret_url(port: int) -> str:
    return f"http://alice:s3cretpw@127.0.0.1:{port}/hook/T0KENPATH?key=QUERYSECRET"


def _config(write_config, hook_script, tmp_path, url: str, retries: int = 3):
    out = tmp_path / "hooks.out"
    return write_config(
        [
            {"name": "a", "command": [hook_script("a", out)]},
            {"name": "b", "command": [hook_script("b", out)], "order": 1},
        ],
        webhook={
            "url": url,
            "headers": {"Authorization": "Bearer HEADERSECRET", "X-Team": "HEADERSECRET"},
            "timeout": "2s",
            "retries": retries,
        },
    )


EXPECTED = [("notice", None), ("step", "hook:a"), ("step", "hook:b"), ("complete", None)]


def test_events_arrive_in_order_with_every_field(
    write_config, hook_script, imds, tmp_path, receiver
):
    sink = receiver()
    config = _config(write_config, hook_script, tmp_path, _secret_url(sink.port))
    when = imds.raise_notice("terminate", 60)
    result = spotwatch("run", "--once", "-c", str(config))
    assert result.returncode == 0, result.stderr
    wait_for(lambda: len(sink.events) == 4)
    assert [(e["event"], e["step"]) for e in sink.events] == EXPECTED
    assert [e["sequence"] for e in sink.events] == [1, 2, 3, 4]
    for event in sink.events:
        assert event["instance_id"] == imds.instance_id
        assert event["action"] == "terminate" and event["notice_time"] == when
        assert event["deadline"].endswith("Z") and event["source"] == "instance-action"
    assert [e["result"] for e in sink.events] == [None, "ok", "ok", "ok"]
    assert sink.headers[0]["Authorization"] == "Bearer HEADERSECRET"
    assert sink.paths[0] == "/hook/T0KENPATH?key=QUERYSECRET"
    for secret in SECRETS:
        assert secret not in result.stderr


def test_a_receiver_failing_twice_gets_every_event_exactly_once(
    write_config, hook_script, imds, tmp_path, receiver
):
    sink = receiver(fail=2)
    config = _config(write_config, hook_script, tmp_path, _secret_url(sink.port))
    imds.raise_notice("terminate", 60)
    result = spotwatch("run", "--once", "-c", str(config))
    assert result.returncode == 0, result.stderr
    wait_for(lambda: len(sink.events) == 4)
    assert [(e["event"], e["step"]) for e in sink.events] == EXPECTED
    assert [e["sequence"] for e in sink.events] == [1, 2, 3, 4]
    assert sink.requests == 6
    assert "HTTP 500; retrying" in result.stderr
    for secret in SECRETS:
        assert secret not in result.stderr


def test_an_unreachable_receiver_is_logged_without_secrets(
    write_config, hook_script, imds, tmp_path, receiver
):
    sink = receiver()
    port = sink.port
    sink.close()  # nothing listens there any more: connection refused, text names the URL
    config = _config(write_config, hook_script, tmp_path, _secret_url(port), retries=0)
    imds.raise_notice("terminate", 60)
    result = spotwatch("run", "--once", "-c", str(config))
    assert result.returncode == 0
    assert "not delivered" in result.stderr and "127.0.0.1" in result.stderr
    for secret in SECRETS:
        assert secret not in result.stderr


def test_redaction_helpers():
    settings = WebhookSettings(
        url="https://u:p%40ss@hooks.example.com/services/T0KENPATH?sig=QUERYSECRET",
        headers={"Authorization": "Bearer HEADERSECRET"},
    )
    assert safe_url(settings.url or "") == "https://hooks.example.com/…"
    text = redact(f"failed {settings.url} with Bearer HEADERSECRET and p@ss", secrets_of(settings))
    assert "T0KENPATH" not in text and "QUERYSECRET" not in text
    assert "HEADERSECRET" not in text and "p@ss" not in text and "p%40ss" not in text


def test_sender_never_blocks_and_keeps_order_through_failures():
    calls = []
    answers = iter([500, 503, 200, 200, 200])

    def post(url, body, headers, timeout):
        calls.append(json.loads(body)["n"])
        return next(answers)

    config = Config(webhook=WebhookSettings(url="http://x.invalid/", retries=3))
    sender = EventSinks(lambda: config, backoff_base=0.01, post=post)
    for n in range(3):
        sender.send({"n": n}, give_up=10**10)
    assert sender.flush(5)
    assert calls == [0, 0, 0, 1, 2]
    assert sender.delivered["webhook"] == 3 and sender.dropped["webhook"] == 0


# Every way a webhook setting can be wrong while holding a secret: the URL (bad scheme, bad
# port, the whole section given as the URL), the headers (given as one line, a token pasted
# as a header name, a value of the wrong kind).
BAD_WEBHOOKS = {
    "scheme": {"url": "ftp://alice:s3cretpw@hooks.example.com/hook/T0KENPATH?key=QUERYSECRET"},
    "port": {"url": "https://alice:s3cretpw@hooks.example.com:T0KENPATH/x?key=QUERYSECRET"},
    "section": "https://alice:s3cretpw@hooks.example.com/hook/T0KENPATH?key=QUERYSECRET",
    "headers": {"url": "https://hooks.example.com/", "headers": "Authorization: HEADERSECRET"},
    "header-name": {"url": "https://hooks.example.com/", "headers": {"Bearer HEADERSECRET": "x"}},
    "header-value": {"url": "https://hooks.example.com/", "headers": {"X-Key": ["HEADERSECRET"]}},
    "url-as-key": {"https://alice:s3cretpw@hooks.example.com/hook/T0KENPATH": None},
}


@pytest.mark.parametrize("mistake", sorted(BAD_WEBHOOKS))
def test_config_errors_never_show_a_webhook_secret(write_config, capsys, mistake: str):
    """A webhook setting that does not validate is reported by its key path (exit 78), and
    neither `check` (text or --json) nor `run` shows its URL's userinfo, path or query or a
    header value, whole or in part. Before, the bad value was quoted (its first 40
    characters, or urllib's message quoting the port)."""
    config = write_config(webhook=BAD_WEBHOOKS[mistake])
    for args in (["check"], ["check", "--json"], ["run", "--once"]):
        assert cli_main([*args, "-c", str(config)]) == 78
        shown = capsys.readouterr()
        assert "webhook" in shown.err
        for secret in ("alice", *SECRETS):
            assert secret not in shown.out + shown.err, (args, shown.err)


def test_user_data_webhook_errors_never_show_a_secret(write_config, imds, tmp_path):
    """The same for a webhook in user data: the section is reported and ignored (the file
    config stays in force) without quoting the URL."""
    user_data = {"spotwatch": {"webhook": BAD_WEBHOOKS["scheme"]}}
    imds.set_user_data(("#cloud-config\n" + yaml.safe_dump(user_data)).encode())
    config = write_config(imds={"endpoint": imds.endpoint, "timeout": "300ms"})
    result = spotwatch("check", "-c", str(config))
    assert "user-data: webhook.url" in result.stderr
    for secret in ("alice", *SECRETS):
        assert secret not in result.stdout + result.stderr, result.stderr
