"""webhook.format and webhook.template: what a chat tool receives, from a real HTTP receiver;
templates stay text (nothing in them or in the values is evaluated); and no part of a
webhook secret reaches the log, however a failure's text is cut."""

from __future__ import annotations

import logging
import socket
import sys
import threading

from operator_support import spotwatch, wait_for

from spotwatch.config.schema import Config, WebhookSettings
from spotwatch.telemetry.sinks import EventSinks
from spotwatch.telemetry.webhook import redact, secrets_of

EVENT = {
    "event": "step",
    "instance_id": "i-0abc",
    "action": "terminate",
    "notice_time": "2030-01-01T00:02:00Z",
    "deadline": "2030-01-01T00:01:50Z",
    "source": "instance-action",
    "step": "hook:checkpoint",
    "result": "failed",
    "detail": "exit status 3",
}


def _deliver(webhook: WebhookSettings, *events: dict) -> EventSinks:
    config = Config(webhook=webhook)
    sinks = EventSinks(lambda: config, backoff_base=0.01)
    for event in events:
        sinks.send(event, give_up=10**10)
    assert sinks.flush(10)
    return sinks


def test_slack_format_posts_the_template_as_text(receiver):
    """slack: a JSON body {"text": message}, the placeholders filled in."""
    sink = receiver()
    template = ":rotating_light: ${instance_id} ${action}: ${step} ${result} (${detail})"
    _deliver(WebhookSettings(url=sink.url(), format="slack", template=template), EVENT)
    assert sink.content_types == ["application/json"]
    assert sink.events == [
        {"text": ":rotating_light: i-0abc terminate: hook:checkpoint failed (exit status 3)"}
    ]


def test_text_format_posts_plain_text_in_order(receiver):
    """text: text/plain UTF-8, one body per event, in the order sent."""
    sink = receiver()
    template = "${event} ${step} → ${result}"
    notice = {**EVENT, "event": "notice", "step": None, "result": None}
    complete = {**EVENT, "event": "complete", "step": None, "result": "ok"}
    _deliver(
        WebhookSettings(url=sink.url(), format="text", template=template), notice, EVENT, complete
    )
    assert sink.content_types == ["text/plain; charset=utf-8"] * 3
    assert [b.decode("utf-8") for b in sink.bodies] == [
        "notice  → ",
        "step hook:checkpoint → failed",
        "complete  → ok",
    ]


def test_without_a_template_the_message_is_a_one_line_summary(receiver):
    """The built-in summary names the instance, action, step, result and deadline."""
    sink = receiver()
    cancel = {**EVENT, "event": "cancel", "action": "reboot", "step": None, "result": None}
    _deliver(WebhookSettings(url=sink.url(), format="text"), EVENT, cancel)
    step, canceled = (b.decode() for b in sink.bodies)
    assert step == (
        "spotwatch i-0abc: terminate step hook:checkpoint: failed "
        "(deadline 2030-01-01T00:01:50Z) - exit status 3"
    )
    assert canceled.startswith("spotwatch i-0abc: cancel reboot (instance-action)")
    assert "\n" not in step


def test_template_and_value_injection_stay_literal(receiver):
    """Format-string syntax, attribute access and `${…}` inside a value are copied as text;
    in Slack messages a value cannot ping the channel or forge a link."""
    sink = receiver()
    template = "{0.__class__} {action!r:>10} $action ${action} %(detail)s ${detail}"
    hostile = {**EVENT, "detail": "${instance_id} {0.__init__.__globals__} <!channel> & <x|y>"}
    _deliver(WebhookSettings(url=sink.url(), format="slack", template=template), hostile)
    assert sink.events == [
        {
            "text": "{0.__class__} {action!r:>10} $action terminate %(detail)s "
            "${instance_id} {0.__init__.__globals__} &lt;!channel&gt; &amp; &lt;x|y&gt;"
        }
    ]


def test_json_format_is_the_event_unchanged(receiver):
    """json (the default): the event as sent, with its sequence number."""
    sink = receiver()
    _deliver(WebhookSettings(url=sink.url(), template="ignored ${event}"), EVENT)
    assert sink.events == [{**EVENT, "sequence": 1}]


def test_the_daemon_posts_slack_messages_for_a_notice(
    write_config, hook_script, imds, tmp_path, receiver
):
    """End to end: `run --once` on a notice posts notice, step and complete as Slack text."""
    sink = receiver()
    out = tmp_path / "hooks.out"
    config = write_config(
        [{"name": "a", "command": [hook_script("a", out)]}],
        webhook={
            "url": sink.url(),
            "format": "slack",
            "template": "${instance_id} ${event} ${action} ${step} ${result}",
        },
    )
    imds.raise_notice("terminate", 60)
    result = spotwatch("run", "--once", "-c", str(config))
    assert result.returncode == 0, result.stderr
    wait_for(lambda: len(sink.events) == 3)
    assert [e["text"] for e in sink.events] == [
        f"{imds.instance_id} notice terminate  ",
        f"{imds.instance_id} step terminate hook:a ok",
        f"{imds.instance_id} complete terminate  ok",
    ]


# --- secrets ----------------------------------------------------------------------------

SECRET = "Zq9SECRETtokenVALUEthatIsLongEnough42"


def test_no_part_of_a_secret_is_logged_wherever_the_failure_text_is_cut(caplog):
    """A failure's text is redacted before it is shortened: a secret straddling the cut
    used to leave its head in the log (redaction ran after the cut, on a string that no
    longer held the whole secret). Paddings move the secret across the cut."""
    with socket.socket() as probe:  # a port nothing listens on: connection refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    caplog.set_level(logging.WARNING, logger="spotwatch")
    for padding in range(120, 300, 9):
        url = f"http://127.0.0.1:{port}/{'p' * padding}/{SECRET}?sig={SECRET[::-1]}"
        headers = {"Authorization": f"Bearer {SECRET}"}
        _deliver(WebhookSettings(url=url, headers=headers, retries=0), EVENT)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "not delivered" in logged and "127.0.0.1" in logged
    for secret in (SECRET, SECRET[::-1]):
        for start in range(len(secret) - 5):
            assert secret[start : start + 6] not in logged, secret[start : start + 6]


def test_a_bearer_token_quoted_alone_is_redacted():
    """Header values are secrets whole and word by word (an error may quote the token)."""
    headers = {"Authorization": f"Bearer {SECRET}"}
    settings = WebhookSettings(url="https://h.example/x", headers=headers)
    assert SECRET not in redact(f"token {SECRET} refused", secrets_of(settings))


def test_events_sent_at_once_from_several_threads_arrive_in_sequence_order(receiver):
    """Hooks of one stage end together: their step events are sent from several threads at
    once. Each sink receives them in the order of their `sequence` numbers.
    (Before: the number was taken under a lock but the event queued after it, so a thread
    could queue number 6 before another queued number 5.)"""
    sink = receiver()
    config = Config(webhook=WebhookSettings(url=sink.url()))
    sinks = EventSinks(lambda: config, backoff_base=0.01)
    start = threading.Barrier(8)

    def send_many() -> None:
        start.wait()
        for n in range(40):
            sinks.send({**EVENT, "detail": str(n)}, give_up=10**10)

    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns as often as they can
    try:
        threads = [threading.Thread(target=send_many) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switching)
    assert sinks.flush(60)
    received = [event["sequence"] for event in sink.events]
    assert received == sorted(received) and len(received) == 320
