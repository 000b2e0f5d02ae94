"""What a preflight check says: ok, warning or error, with a one-line reason.

Its own module so that the checks of each part (AWS, hibernation) and `spotwatch check`,
which runs them all, import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from spotwatch.config.schema import Config

OK, WARNING, ERROR = "ok", "warning", "error"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # ok | warning | error
    detail: str
    seconds: Optional[float] = None


Preflight = Callable[[Config], Iterable[CheckResult]]
