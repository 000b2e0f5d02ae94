"""Single-value checks: each normalises one raw YAML value or raises ValueError.

The message says what was expected and shows (a short form of) what was given; the caller
adds the key path. `validate` wires these to keys; `load` reuses some for env variables.
"""

from __future__ import annotations

import re
import string
from typing import Any, Callable, Tuple
from urllib.parse import urlsplit

from spotwatch.config.durations import parse_duration
from spotwatch.config.errors import describe, describe_secret

# Normalises one raw value or raises ValueError with the message.
Leaf = Callable[[Any], Any]


def boolean(value: Any) -> bool:
    # YAML already reads yes/no/on/off as booleans; a quoted "yes" is a string on purpose.
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {describe(value)}")
    return value


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {describe(value)}")
    return int(value)


def non_negative_integer(value: Any) -> int:
    number = integer(value)
    if number < 0:
        raise ValueError(f"must be >= 0, got {number}")
    return number


def text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {describe(value)}")
    return value


def optional(convert: Leaf) -> Leaf:
    return lambda value: None if value is None else convert(value)


def one_of(*choices: Any, fold_case: bool = False) -> Leaf:
    def convert(value: Any) -> Any:
        candidate = value.lower() if fold_case and isinstance(value, str) else value
        # `bool` is an int subclass: keep True from matching 1 (and so on) by type-checking too.
        for choice in choices:
            if type(candidate) is type(choice) and candidate == choice:
                return choice
        shown = " | ".join(describe(c).strip('"') for c in choices)
        raise ValueError(f"expected one of {shown}, got {describe(value)}")

    return convert


def duration_at_least(minimum: float, *, inclusive: bool = True) -> Leaf:
    def convert(value: Any) -> float:
        seconds = parse_duration(value)
        if seconds < minimum or (not inclusive and seconds == minimum):
            relation = ">=" if inclusive else ">"
            raise ValueError(f"must be {relation} {minimum:g}s, got {describe(value)}")
        return seconds

    return convert


positive_duration = duration_at_least(0.0, inclusive=False)
non_negative_duration = duration_at_least(0.0)


def token_ttl(value: Any) -> float:
    seconds = parse_duration(value)
    if not 1.0 <= seconds <= 21600.0:
        raise ValueError(f"must be between 1s and 6h (as IMDS allows), got {describe(value)}")
    return seconds


def absolute_path(value: Any) -> str:
    path = text(value)
    if not path.startswith("/"):
        raise ValueError(f"expected an absolute path, got {describe(value)}")
    return path


def _split_http_url(value: Any) -> Tuple[str, Any]:
    if not isinstance(value, str):
        raise ValueError(f"expected an http:// or https:// URL, got {describe(value)}")
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 -- evaluated for its ValueError on a bad port
    except ValueError as error:
        raise ValueError(f"not a valid URL ({error}): {describe(value)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {describe(value)}")
    return value.strip(), parts


def docker_host(value: Any) -> str:
    """Where the Docker Engine API answers: `unix:///path/to/docker.sock` or `tcp://host:port`
    (as DOCKER_HOST names it; TLS and ssh:// are not supported)."""
    found = text(value).strip()
    wrong = f"expected unix:///path/to/docker.sock or tcp://host:port, got {describe(value)}"
    if found.startswith("unix://"):
        if not found[len("unix://") :].startswith("/"):
            raise ValueError(wrong)
        return found
    try:
        parts = urlsplit(found)
        port = parts.port
    except ValueError:
        raise ValueError(wrong) from None
    if parts.scheme != "tcp" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise ValueError(wrong)
    return found


def http_url(value: Any) -> str:
    return _split_http_url(value)[0]


def safe_url(url: str) -> str:
    """scheme://host[:port] and nothing that may be a secret (userinfo, path, query): the
    one form in which a configured URL (webhook, http preset) reaches the log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<url>"
    rest = "/…" if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def secret_http_url(value: Any) -> str:
    """An http(s) URL whose userinfo, path and query may be secrets (a webhook's): a problem
    says what was expected, never what was given (urllib's own messages quote parts of it)."""
    try:
        return http_url(value)
    except ValueError:
        raise ValueError(
            f"expected an http:// or https:// URL with a host (and a port 1..65535 if any), "
            f"got {describe_secret(value)}"
        ) from None


def http_endpoint(value: Any) -> str:
    """http://host[:port], nothing after it: IMDS paths are appended to it. IMDS speaks plain
    HTTP on a link-local address (no TLS), and so does our client: https is refused here
    rather than failing at the first poll."""
    url, parts = _split_http_url(value)
    if parts.scheme != "http":
        raise ValueError(f"expected http:// (IMDS has no TLS), got {describe(value)}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"expected http://host[:port] with no path, got {describe(value)}")
    return url.rstrip("/")


def metadata_host(value: Any) -> str:
    """host[:port] (GCE_METADATA_HOST), as the http:// endpoint it names."""
    if not isinstance(value, str) or "/" in value or "@" in value:
        raise ValueError(
            f"expected host[:port] like metadata.google.internal, got {describe(value)}"
        )
    return http_endpoint(f"http://{value}")


def listen_address(value: Any) -> str:
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f'expected "host:port" like "127.0.0.1:9464", got {describe(value)}')
    host, _, port = value.rpartition(":")
    if not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f'expected "host:port" with a port 1..65535 like "127.0.0.1:9464", '
            f"got {describe(value)}"
        )
    return value


def stop_reason(value: Any) -> str:
    reason = text(value)
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(reason) if name is not None]
    except ValueError as error:
        raise ValueError(f"not a valid template ({error}); write a literal brace as {{{{") from None
    for name in names:
        if name not in ("action", "time"):
            raise ValueError(
                f"unknown field {{{name}}}: only {{action}} and {{time}} are filled in"
            )
    return reason


def command(value: Any) -> Any:
    """An argv list (run without a shell) or a string (run by /bin/sh -c)."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("expected a non-empty command")
        return value
    if isinstance(value, list):
        if not value:
            raise ValueError("expected a non-empty argv list")
        for arg in value:
            if not isinstance(arg, str):
                raise ValueError(f"argv items must be strings (quote them), got {describe(arg)}")
        if not value[0].strip():
            raise ValueError("the program (first argv item) must not be empty")
        return tuple(value)
    raise ValueError(
        f"expected an argv list of strings or a shell command string, got {describe(value)}"
    )


def run_as_user(value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f"expected a user name, a uid >= 0, or null, got {describe(value)}")


def scalar_text(value: Any) -> str:
    """YAML turns `PORT: 8080` into an int; environment values are strings in the end."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError(f"expected a string, got {describe(value)}")


# --- AWS names and ARNs -------------------------------------------------------------
# Checked by form only (whether they exist is `check`'s business). The partition is
# `aws`, `aws-cn`, `aws-us-gov`, ...; the region and a 12-digit account are required.

_ARN_HEAD = r"arn:aws[-a-z]*:{service}:[a-z0-9-]+:\d{{12}}:"
_TARGET_GROUP_ARN = re.compile(
    _ARN_HEAD.format(service="elasticloadbalancing") + r"targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]+"
)
_SNS_TOPIC_ARN = re.compile(_ARN_HEAD.format(service="sns") + r"[A-Za-z0-9_-]{1,256}(\.fifo)?")
_EVENT_BUS_NAME = re.compile(r"[A-Za-z0-9._/-]{1,256}")
_EVENT_BUS_ARN = re.compile(
    _ARN_HEAD.format(service="events") + r"event-bus/[A-Za-z0-9._/-]{1,256}"
)
_CLASSIC_LB_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?")
_LIFECYCLE_HOOK_NAME = re.compile(r"[A-Za-z0-9_/-]{1,255}")


def matching(pattern: re.Pattern[str], what: str) -> Leaf:
    """A string that `pattern` matches whole; the message says it expected `what`."""
    def convert(value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(f"expected {what}, got {describe(value)}")
        return value

    return convert


target_group_arn = matching(
    _TARGET_GROUP_ARN,
    "a target group ARN like arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID",
)
classic_load_balancer_name = matching(
    _CLASSIC_LB_NAME, "a Classic Load Balancer name (1-32 letters, digits and inner hyphens)"
)
lifecycle_hook_name = matching(
    _LIFECYCLE_HOOK_NAME, "a lifecycle hook name (1-255 letters, digits, _ - /)"
)
sns_topic_arn = matching(_SNS_TOPIC_ARN, "an SNS topic ARN like arn:aws:sns:REGION:ACCOUNT:NAME")


def event_bus(value: Any) -> str:
    """An EventBridge bus: its name (`default`, `fleet`) or its ARN."""
    if isinstance(value, str):
        if value.startswith("arn:") and _EVENT_BUS_ARN.fullmatch(value):
            return value
        if not value.startswith("arn:") and _EVENT_BUS_NAME.fullmatch(value):
            return value
    raise ValueError(
        "expected an event bus name or an ARN like "
        f"arn:aws:events:REGION:ACCOUNT:event-bus/NAME, got {describe(value)}"
    )


def autoscaling_budget(value: Any) -> float:
    # A lifecycle hook holds an instance at most 48 hours, heartbeats or not.
    seconds: float = positive_duration(value)
    if seconds > 48 * 3600:
        raise ValueError(
            f"must be at most 48h (the longest a lifecycle hook can wait), got {describe(value)}"
        )
    return seconds
