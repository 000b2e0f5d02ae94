"""Why a local HTTP call failed, in a few words (the ECS agent, the Docker Engine API)."""

from __future__ import annotations

import re

# `[Errno 111] Connection refused`, or the same said as `FileNotFoundError(2, 'No such ...')`
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")
_OSERROR = re.compile(r"\w+Error\((-?\d+), '([^']+)'\)")


def short_cause(failure: BaseException) -> str:
    """requests' messages run to several lines of pool internals; keep the cause."""
    text = str(failure)
    found = _ERRNO.search(text)
    if found:
        return found.group(0)
    said = _OSERROR.search(text)
    if said:
        return f"[Errno {said.group(1)}] {said.group(2)}"
    if "timed out" in text.lower():
        return "timed out"
    return type(failure).__name__
