"""The grammar of `webhook.template` (and of presets' `with:` arguments): `${name}` placeholders
over a known set of names (an event's fields; for presets, CONTRACT §9's three).

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
from typing import Any, Iterable, List, Mapping

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


def unknown_placeholders(template: str, known: Iterable[str] = TEMPLATE_FIELDS) -> List[str]:
    """The placeholder names in `template` that are not `known`, in order of first use."""
    names = set(known)
    unknown: List[str] = []
    for match in PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name not in names and name not in unknown:
            unknown.append(name)
    return unknown


def placeholder_problem(template: str, known: Iterable[str]) -> str:
    """Why `template` names a placeholder that is not `known` (one line), or ""."""
    allowed = tuple(known)
    unknown = unknown_placeholders(template, allowed)
    if not unknown:
        return ""
    shown = ", ".join("${" + name[:40] + "}" for name in unknown)
    listed = ", ".join("${" + name + "}" for name in allowed)
    noun = "placeholder" if len(unknown) == 1 else "placeholders"
    return f"unknown {noun} {shown}; known: {listed}"


def fill(template: str, values: Mapping[str, str]) -> str:
    """`template` with each `${name}` of `values` replaced once, left to right; a value that
    itself looks like a placeholder is not expanded again, and nothing else is touched."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def message_template(value: Any) -> str:
    """Check a `webhook.template` value; raise ValueError saying what is wrong."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string with ${name} placeholders, or null")
    if len(value) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"at most {MAX_TEMPLATE_CHARS} characters, got {len(value)}")
    problem = placeholder_problem(value, TEMPLATE_FIELDS)
    if problem:
        raise ValueError(problem)
    return value
