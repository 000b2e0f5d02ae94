"""The grammar of `webhook.template`: `${name}` placeholders over an event's fields.

Kept deliberately tiny so that a template can never run code or reach into an object:
a placeholder is `$`, `{`, a field name, `}` and nothing else. Anything that is not
exactly that — `$name` without braces, `{0.__class__}`, `${action:>10}`, `${a.b}` — is
literal text. A `${name}` whose name is not an event field is a configuration error (a
typo should not silently print `${intsance_id}` into every message); it is caught when
the config is loaded, so at render time every placeholder is known.

Rendering (`spotwatch.telemetry.messages`) substitutes each placeholder once, from left to
right, with the field's value as plain text: a value that itself looks like `${action}` is
not expanded again.
"""

from __future__ import annotations

import re
from typing import Any, List

TEMPLATE_FIELDS = (
    "event",
    "action",
    "source",
    "instance_id",
    "notice_time",
    "deadline",
    "step",
    "result",
    "detail",
)
"""The event fields a template may name."""

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

MAX_TEMPLATE_CHARS = 4000  # Slack cuts a message's text at 4,000 characters anyway


def unknown_placeholders(template: str) -> List[str]:
    """The placeholder names in `template` that are not event fields, in order of first use."""
    unknown: List[str] = []
    for match in PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name not in TEMPLATE_FIELDS and name not in unknown:
            unknown.append(name)
    return unknown


def message_template(value: Any) -> str:
    """Check a `webhook.template` value; raise ValueError saying what is wrong."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string with ${name} placeholders, or null")
    if len(value) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"at most {MAX_TEMPLATE_CHARS} characters, got {len(value)}")
    unknown = unknown_placeholders(value)
    if unknown:
        shown = ", ".join("${" + name[:40] + "}" for name in unknown)
        known = ", ".join("${" + name + "}" for name in TEMPLATE_FIELDS)
        noun = "placeholder" if len(unknown) == 1 else "placeholders"
        raise ValueError(f"unknown {noun} {shown}; known: {known}")
    return value
