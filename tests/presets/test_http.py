"""The `http` preset against a local server: the §6 event JSON for this notice arrives; a
2xx that comes late but within T is `ok`; a 500 is tried again while T lasts and ends
`failed`; a server that never answers makes the step `timeout` at T. Secrets in the URL and
headers never reach the log or the step's detail."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest
from preset_support import INSTANCE_ID, context, per_hook_context, preset_hook, run_step
from standins import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def test_the_event_json_for_this_notice_arrives_and_a_2xx_ends_the_hook(
    receiver: Receiver,
) -> None:
    """The body is the webhook's `notice` event (without `sequence`); headers and the
    placeholders in the URL are filled in."""
    hook = preset_hook(
        "http",
        {"url": receiver.url + "/drain/${instance_id}", "headers": {"X-Action": "${action}"}},
    )
    ctx = context(60, action="stop")
    receiver.status = 204
    outcome = run_step(hook, ctx)
    assert outcome.status == "ok", outcome.detail
    assert outcome.detail.startswith(f"HTTP 204 from {receiver.url}/… after")
    (body,) = receiver.bodies
    assert body["event"] == "notice" and body["action"] == "stop"
    assert body["instance_id"] == INSTANCE_ID
    assert body["notice_time"] == ctx.notice.time_text
    assert body["source"] == "instance-action"
    assert {"deadline", "time", "step", "result", "detail"} <= set(body)
    assert "sequence" not in body
    assert receiver.headers[0]["X-Action"] == "stop"
    assert receiver.headers[0]["Content-Type"] == "application/json"


def test_a_late_2xx_within_t_is_ok(receiver: Receiver) -> None:
    receiver.delay = 1.5
    outcome = run_step(preset_hook("http", {"url": receiver.url}, timeout=5), context(60))
    assert outcome.status == "ok", outcome.detail
    assert len(receiver.bodies) == 1


def test_a_500_is_tried_again_while_t_lasts_then_fails(receiver: Receiver) -> None:
    """Tries at 0, 0.5, 1.5, 3.5 s: four within a T of 5 s, then `failed`."""
    receiver.status = 500
    started = time.monotonic()
    outcome = run_step(preset_hook("http", {"url": receiver.url}, timeout=5), context(60))
    assert outcome.status == "failed", outcome.detail
    assert "HTTP 500" in outcome.detail and "(4 tries)" in outcome.detail
    assert len(receiver.bodies) == 4
    assert time.monotonic() - started < 6


def test_a_4xx_is_final(receiver: Receiver) -> None:
    receiver.status = 403
    outcome = run_step(preset_hook("http", {"url": receiver.url}, timeout=5), context(60))
    assert outcome.status == "failed" and "HTTP 403" in outcome.detail
    assert len(receiver.bodies) == 1


def test_a_server_that_never_answers_times_out_at_t(receiver: Receiver) -> None:
    receiver.delay = None
    started = time.monotonic()
    outcome = run_step(preset_hook("http", {"url": receiver.url}, timeout=2), context(60))
    took = time.monotonic() - started
    assert outcome.status == "timeout", outcome.detail
    assert 1.9 <= took < 3.5, took


def test_a_cancel_sends_the_cancel_event(receiver: Receiver) -> None:
    hook = preset_hook("http", {"url": receiver.url, "method": "PUT"}, actions=["cancel"])
    assert run_step(hook, per_hook_context("cancel")).status == "ok"
    assert receiver.bodies[0]["event"] == "cancel"


def test_secrets_stay_out_of_the_log_and_the_detail(
    receiver: Receiver, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A token in the path, the query, the userinfo and a header value: none of it is
    logged, whole or in part, whatever the answer."""
    url = receiver.url.replace("//", "//alice:pw-s3cr3t@") + "/hook/tok-9f8e7d?key=k3y-abcdef"
    hook = preset_hook("http", {"url": url, "headers": {"Authorization": "Bearer hdr-5ecret"}})
    with caplog.at_level(logging.DEBUG, logger="spotwatch"):
        receiver.status = 500
        failed = run_step(replace(hook, timeout=1.0), context(60))
        dry = run_step(hook, context(60, dry_run=True))
    text = caplog.text + failed.detail + dry.detail
    for secret in ("pw-s3cr3t", "alice", "tok-9f8e7d", "k3y-abcdef", "hdr-5ecret", "5ecret"):
        assert secret not in text
    assert "would POST the notice event JSON" in dry.detail
    assert "(headers: Authorization)" in dry.detail


def test_nothing_listening_fails_after_trying_while_t_lasts() -> None:
    outcome = run_step(preset_hook("http", {"url": "http://127.0.0.1:9/x"}, timeout=1), context(60))
    assert outcome.status == "failed", outcome.detail
    assert "ConnectionError" in outcome.detail


def test_a_bad_url_or_header_is_reported_without_showing_it(tmp_path: Path) -> None:
    """As for the webhook (CONTRACT §6): the key path and what was expected, never the
    value, whole or in part."""
    from spotwatch.config.errors import ConfigError
    from spotwatch.config.load import load_config

    config = tmp_path / "config.yaml"
    config.write_text(
        "hooks:\n  - name: h\n    preset: http\n    with:\n"
        "      url: 'ftp://alice:pw-s3cr3t@x/tok-9f8e7d'\n      headers: {X-Key: [hdr-5ecret]}\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_config(str(config), env={}, check_permissions=False)
    text = str(raised.value)
    assert "hooks[0].with.url: expected an http:// or https:// URL" in text
    assert "hooks[0].with.headers.X-Key: expected a string" in text
    for secret in ("pw-s3cr3t", "alice", "tok-9f8e7d", "hdr-5ecret"):
        assert secret not in text
