"""The metric names a PromQL expression reads, and the matchers each of its selectors has.

Enough of PromQL for our dashboard and rules: strings, label matchers (`{...}`), ranges and
subqueries (`[...]`), grouping label lists (`by (...)`, `on (...)`, ...), functions (a name
before `(`), keywords and numbers are not metric names; every other name is one. Grafana's
variables (`$instance`, `$__rate_interval`) only ever stand inside matchers and ranges."""

from __future__ import annotations

import re
from typing import List, Set, Tuple

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
            "or", "unless", "offset", "inf", "nan", "start", "end", "atan2"}  # fmt: skip
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
NAME = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)")
STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')


def _names_with_places(expr: str) -> List[Tuple[str, int]]:
    """(name, where it ends in the expression with strings blanked out)."""
    blanked = STRING.sub(lambda m: '"' + " " * (len(m.group()) - 2) + '"', expr)
    for pattern in (r"\{[^}]*\}", r"\[[^\]]*\]", GROUPING.pattern):
        blanked = re.sub(pattern, lambda m: " " * len(m.group()), blanked)
    found = []
    for match in NAME.finditer(blanked):
        name = match.group(1)
        rest = blanked[match.end() :].lstrip()
        if name.lower() in KEYWORDS or rest.startswith("("):
            continue
        found.append((name, match.end()))
    return found


def metric_names(expr: str) -> Set[str]:
    return {name for name, _ in _names_with_places(expr)}


def selectors(expr: str) -> List[Tuple[str, str]]:
    """(metric name, its matchers between braces, "" when it has none)."""
    found = []
    for name, end in _names_with_places(expr):
        rest = expr[end:].lstrip()
        matchers = rest[1 : rest.index("}")] if rest.startswith("{") else ""
        found.append((name, matchers))
    return found
