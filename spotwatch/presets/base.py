"""What a ready-made hook is (CONTRACT §9), and what it may ask of the response it runs in.

A hook may name a `preset` instead of a `command`. Each preset is one module of this package
holding all of it: the `with:` arguments it takes (checked when the config is loaded, so a
mistake names its key path and exits 78), what it would do (the exact command or call, for
dry run and `rehearse`), what `check` should find on the host, and what it does.

Presets sit beside `config` (which validates their arguments), so they reach the rest of the
daemon only through the `Call` they are given when they run: programs run as a hook would
(the hook's environment, user, output to the log, the whole process group stopped at the
hook's limit), the time left before that limit, the §6 event JSON, and `Services` (the node's
name, the AWS region, the container runtime). Everything else about a preset hook is a hook's:
its `actions`, `timeout`, `order`, deadline, log lines, step record, events and metrics
(spotwatch.response.presetstep runs it as a step).

T, "the time the hook is given (its timeout capped by the time left), in whole seconds", is
`Call.seconds`: never less than 1, so no tool is told 0 (which kubectl reads as "forever").
"""

from __future__ import annotations

import os
import re
import shlex
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Literal, Mapping, Optional, Protocol, Sequence

from spotwatch.config.checks import Check, Problems
from spotwatch.config.errors import describe
from spotwatch.config.template import fill
from spotwatch.config.values import matching

# The placeholders a preset's arguments may use (CONTRACT §9); any other ${name} is an error.
PLACEHOLDERS = ("instance_id", "action", "notice_time")
# Actions that mean "the instance stays after all": CLI presets run their counterpart.
COUNTERPART_ACTIONS = frozenset({"cancel", "start"})

Status = Literal["ok", "failed", "timeout", "interrupted"]
OK: Status = "ok"
FAILED: Status = "failed"
TIMEOUT: Status = "timeout"
INTERRUPTED: Status = "interrupted"  # the daemon's shutdown ended it (run again on restart)


@dataclass(frozen=True)
class Result:
    """How a preset ended: a step status and one line saying what it did."""

    status: Status
    detail: str


@dataclass(frozen=True)
class Ran:
    """A program's end, as the hook runner saw it (`detail`: "exit 0 after 0.52 s", ...)."""

    status: Status
    returncode: Optional[int]
    detail: str


RequirementKind = Literal["program", "unit", "pidfile", "docker", "bucket", "url"]


@dataclass(frozen=True)
class Requirement:
    """Something `check` should find on the host for a preset to work."""

    kind: RequirementKind
    target: str  # a program name or path, a unit, a file, a Docker host, a bucket, a URL


@dataclass(frozen=True)
class Container:
    id: str
    name: str


@dataclass(frozen=True)
class Stopped:
    """One container's stop: `ok` when it has exited; `detail` says how (or why not)."""

    container: Container
    ok: bool
    detail: str


class ContainerRuntime(Protocol):
    """The Docker Engine API at one host, as far as docker-stop needs it."""

    def running(self, label: Optional[str], names: Sequence[str]) -> List[Container]:
        """Running containers with that label (`key=value`) or one of those names (neither:
        every running container); raises RuntimeUnavailable when the runtime cannot answer."""

    def stop_all(self, containers: Sequence[Container], t: int) -> List[Stopped]:
        """Stop every one concurrently (SIGKILL after `t` seconds), each result once it has
        exited or its call failed; one `Stopped` per container, in order."""

    def version(self) -> str:
        """What answers ("Docker 20.10.24 (API 1.41)")."""

    def close(self) -> None: ...


class RuntimeUnavailable(Exception):
    """The container runtime cannot be reached (no SDK, no socket, no answer); says why."""


class Services(Protocol):
    """What of the outside world a preset may need besides programs (wired by the daemon)."""

    def node_name(self) -> str:
        """The node's name for a cluster: IMDS `meta-data/local-hostname` on AWS, else the
        host name."""

    def region(self) -> Optional[str]:
        """The AWS region (the daemon's usual rule), or None when none can be found."""

    def docker(self, host: str) -> ContainerRuntime:
        """The Docker Engine API at `host`; raises RuntimeUnavailable when it cannot be used."""


class BareServices:
    """`Services` where the daemon wired none: the host name, the region from the
    environment, no container runtime."""

    def node_name(self) -> str:
        return socket.gethostname()

    def region(self) -> Optional[str]:
        return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None

    def docker(self, host: str) -> ContainerRuntime:
        raise RuntimeUnavailable("no container runtime client in this process")


class Call(Protocol):
    """One run of a preset hook: who it is, what it is told, and how it reaches the world."""

    hook: str  # the hook's name
    action: str  # the notice's action (the hook runs for it)
    seconds: int  # T: the hook's timeout capped by the time left, whole seconds, at least 1
    values: Mapping[str, str]  # the placeholders' values
    services: Services

    def program(self, argv: Sequence[str]) -> Ran:
        """Run argv as a hook would (argv[0] found on the daemon's PATH unless absolute), to
        its end or the hook's limit, whichever is first."""

    def time_left(self) -> float:
        """Seconds until the hook's limit (its timeout, the deadline; 0 once shutting down)."""

    def stopping(self) -> bool:
        """The daemon's shutdown grace is over: end now."""

    def event(self) -> Dict[str, Any]:
        """The §6 event JSON for this notice (what the webhook's `notice` event carries)."""


class Preset(ABC):
    """One ready-made hook. Subclasses set the class attributes and write `would` and `run`;
    neither raises for a foreseeable failure (a `Result` says it)."""

    name: ClassVar[str]  # as written after `preset:`
    summary: ClassVar[str]  # what it does, one line
    arguments: ClassVar[Mapping[str, Check]]  # `with:` keys and their checks
    required: ClassVar[Sequence[str]] = ()  # `with:` keys that must be given
    defaults: ClassVar[Mapping[str, Any]] = {}  # for keys left out
    runs_programs: ClassVar[bool] = False  # True: `user:` and `env:` apply to its programs

    def check_arguments(  # noqa: B027 - most presets have no rule between keys
        self, given: Mapping[str, Any], path: str, problems: Problems
    ) -> None:
        """Rules between keys (each key was checked on its own already); `path` is the
        `with:` key path."""

    @abstractmethod
    def would(self, args: Mapping[str, Any], call: Call) -> str:
        """The exact command or call it would make, for dry run and `rehearse` ("would …")."""

    @abstractmethod
    def run(self, args: Mapping[str, Any], call: Call) -> Result: ...

    def requirements(self, args: Mapping[str, Any]) -> List[Requirement]:
        """What `check` should find on the host (before placeholders are filled in)."""
        return []


class ProgramPreset(Preset):
    """A preset that runs commands, one after the other, as a hook would; for `cancel` and
    `start` (the instance stays) its counterpart commands."""

    runs_programs = True
    program: ClassVar[str]  # the default program, found on the daemon's PATH (`bin` overrides)

    @abstractmethod
    def commands(self, args: Mapping[str, Any], call: Call) -> List[List[str]]: ...

    def binary(self, args: Mapping[str, Any]) -> str:
        return str(args.get("bin") or self.program)

    def would(self, args: Mapping[str, Any], call: Call) -> str:
        return "run " + ", then ".join(shlex.join(argv) for argv in self.commands(args, call))

    def run(self, args: Mapping[str, Any], call: Call) -> Result:
        done: List[str] = []
        for argv in self.commands(args, call):
            ran = call.program(argv)
            if ran.status != OK:
                return Result(ran.status, f"{shlex.join(argv)}: {ran.detail}")
            done.append(f"{shlex.join(argv)}: {ran.detail}")
        return Result(OK, "; ".join(done))

    def requirements(self, args: Mapping[str, Any]) -> List[Requirement]:
        return [Requirement("program", self.binary(args))]


def counterpart(call: Call) -> bool:
    """True when the instance stays (`cancel`, `start`): undo what the drain did."""
    return call.action in COUNTERPART_ACTIONS


def fill_arguments(value: Any, values: Mapping[str, str]) -> Any:
    """Arguments with every `${name}` in their strings (at any depth) filled in."""
    if isinstance(value, str):
        return fill(value, values)
    if isinstance(value, (list, tuple)):
        return type(value)(fill_arguments(item, values) for item in value)
    if isinstance(value, dict):
        return {key: fill_arguments(item, values) for key, item in value.items()}
    return value


@dataclass(frozen=True)
class Found:
    """A program looked up on a PATH: its path, or why it is not there."""

    path: Optional[str] = None
    problem: str = ""


def find_program(name: str, search: Optional[str] = None) -> Found:
    """`name` as the daemon finds it: an absolute path as it is, else the first executable
    file of that name on `search` (default: the daemon's own PATH)."""
    folders = (search if search is not None else os.environ.get("PATH", "")).split(os.pathsep)
    candidates = [name] if name.startswith("/") else [os.path.join(f, name) for f in folders if f]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return Found(candidate)
    if name.startswith("/"):
        why = "not found" if not os.path.exists(name) else "not an executable file"
        return Found(None, f"{name}: {why}")
    return Found(None, f"{name}: not found on the daemon's PATH")


# --- argument checks shared by several presets (each raises ValueError, as config.values) ---

# `bin`: an absolute path, or a name found on the daemon's PATH.
program_name = matching(
    re.compile(r"[^\s/-][^/]*|/\S+"),
    "a program name (found on the daemon's PATH) or an absolute path",
)
# A systemd unit name (`trainer.service`, `batch@1.service`; no type means .service).
unit_name = matching(
    re.compile(r"[A-Za-z0-9:_.\\@][A-Za-z0-9:_.\\@-]{0,254}"),
    "a systemd unit name like trainer.service",
)


def node_or_auto(value: Any) -> str:
    """A node name, or `auto`."""
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"expected a node name or auto, got {describe(value)}")
    return value
