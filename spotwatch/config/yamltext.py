"""YAML documents read with a bound on nesting, so no document can exhaust the stack.

PyYAML builds a document recursively: a few thousand `[` (or a hook list nested 1,500 deep)
end in a `RecursionError` from deep inside the loader, which is no `YAMLError` and so escaped
as a traceback. Its event parser is not recursive, so the nesting is measured on the events
first and a document deeper than `MAX_DEPTH` is refused with an ordinary `YAMLError` that
names the line; only then is it built. No config needs a tenth of that depth.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_DEPTH = 64


class TooDeep(yaml.MarkedYAMLError):
    """The document nests mappings and lists deeper than `MAX_DEPTH`."""


def safe_load(text: str) -> Any:
    """`yaml.safe_load(text)`, refusing documents nested deeper than `MAX_DEPTH`."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise TooDeep(
                    problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=event.start_mark
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    try:
        return yaml.safe_load(text)
    except RecursionError:  # not expected within MAX_DEPTH; still no traceback
        raise TooDeep(problem="nested too deep to read") from None
