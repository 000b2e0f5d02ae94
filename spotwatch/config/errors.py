"""The one exception a bad configuration raises."""

from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, List, Union

_SHOWN_CHARS = 40


def describe(value: object) -> str:
    """A short, one-line rendering of a bad value for an error message.

    Strings are shown quoted and cut short (they may come from user data, which is never
    echoed whole); containers are named by kind only.
    """
    if isinstance(value, str):
        shown = value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 3] + "..."
        return '"' + shown.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def describe_secret(value: object) -> str:
    """What a bad value that may hold a secret (a webhook URL, a header value) was, by kind
    only: its text is never shown, whole or in part (CONTRACT §6)."""
    if isinstance(value, str):
        return "a text that is not shown (it may hold a secret)"
    return describe(value)  # numbers, booleans, null, and containers by kind


def unknown_key(path: str, key: Any, known: Any) -> str:
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f"{path}: unknown key{hint}"


# A key shown as it is in a key path; any other key (newlines, control or bidi characters,
# very long, not a string) is shown quoted and escaped, so each problem stays one line.
_PLAIN_KEY = re.compile(r"[\w .:/@+-]{1,40}")
# In a part of the config that may hold secrets (the webhook's), a key is shown only when
# it reads like a setting's or a header's name: a URL or a token pasted as a key is not.
_NAME_KEY = re.compile(r"[A-Za-z0-9_-]{1,40}")
SECRET_KEY = "<a key not shown: it may hold a secret>"


def key_path_of(path: str, key: Any, *, secret: bool = False) -> str:
    """`path.key` as a problem names it (`secret`: in a part that may hold secrets)."""
    if secret:
        shown = key if isinstance(key, str) and _NAME_KEY.fullmatch(key) else SECRET_KEY
    else:
        shown = key if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else describe(key)
    return f"{path}.{shown}" if path else shown


class ConfigError(Exception):
    """A configuration that cannot be used, with every problem found, one line each.

    Each problem reads `key.path: message`, optionally after the file it came from
    (`/etc/spotwatch/conf.d/10-x.yaml: hooks[0].name: required`). The CLI prints one line
    per problem and exits 78, so all problems are collected before raising: fixing a config
    one error per run is miserable.
    """

    def __init__(self, problems: Union[str, Iterable[str]]) -> None:
        self.problems: List[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)
