"""What a webhook receives: the JSON event, or a one-line message for chat (`webhook.format`).

- `json`: the event itself, as JSON.
- `slack`: `{"text": message}` (what Slack's incoming webhooks, and Mattermost, Rocket.Chat
  and most chat tools that copied them, take).
- `text`: the message as `text/plain; charset=utf-8`.

The message is `webhook.template` filled in, or a built-in one-line summary. Filling in is
plain text substitution (grammar in `spotwatch.config.template`): each `${name}` is replaced
once by the field's value, everything else is copied as it is, and nothing is evaluated, so
neither the template nor a value (a hook's output ends up in `detail`) can reach code. In
Slack messages the values (not the template, which the operator wrote on purpose) have `&`,
`<` and `>` escaped, so a value cannot ping `<!channel>` or forge a link.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional, Tuple

from spotwatch.config.schema import WebhookSettings
from spotwatch.config.template import PLACEHOLDER, TEMPLATE_FIELDS

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
MAX_VALUE_CHARS = 1000  # one field of a chat message; `detail` can be a hook's last lines


def field_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(template: str, event: Mapping[str, Any], *, for_slack: bool = False) -> str:
    """`template` with each known `${name}` replaced by the event's field, in one pass."""

    def value(match: Any) -> str:
        text = field_text(event.get(match.group(1)))
        return slack_escape(text) if for_slack else text

    return PLACEHOLDER.sub(value, template)


def summary(event: Mapping[str, Any]) -> str:
    """The built-in message: one line saying which instance, what happened, and by when."""
    field = {name: field_text(event.get(name)) for name in TEMPLATE_FIELDS}
    kind, action = field["event"] or "event", field["action"]
    parts = [f"spotwatch {field['instance_id'] or 'this instance'}:"]
    if kind == "notice":
        parts.append(f"{action} notice" + _source(event))
        parts.append(f"for {field['notice_time']}" if field["notice_time"] else "")
    elif kind == "step":
        parts.append(f"{action} step {field['step']}: {field['result']}")
    elif kind == "complete":
        parts.append(f"{action} response complete: {field['result']}")
    else:
        parts.append(f"{kind} {action}".strip() + _source(event))
    if field["deadline"] and kind in ("notice", "step"):
        parts.append(f"(deadline {field['deadline']})")
    if field["detail"]:
        parts.append(f"- {field['detail']}")
    return " ".join(part for part in parts if part)


def _source(event: Mapping[str, Any]) -> str:
    source = field_text(event.get("source"))
    return f" ({source})" if source else ""


def message(settings: WebhookSettings, event: Mapping[str, Any], *, for_slack: bool) -> str:
    if settings.template is None:
        text = summary(event)
        return slack_escape(text) if for_slack else text
    return render(settings.template, event, for_slack=for_slack)


def webhook_body(settings: WebhookSettings, event: Mapping[str, Any]) -> Tuple[bytes, str]:
    """(the body, its Content-Type) for `webhook.format`."""
    body: Optional[Any]
    if settings.format == "slack":
        body = {"text": message(settings, event, for_slack=True)}
    elif settings.format == "text":
        return message(settings, event, for_slack=False).encode("utf-8"), TEXT
    else:
        body = dict(event)
    return json.dumps(body, default=str).encode("utf-8"), JSON
