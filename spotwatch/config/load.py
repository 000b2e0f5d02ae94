"""Load the effective configuration: defaults < file < conf.d < user data < environment.

See the README's Configuration section. Every layer is checked on its own (so problems
name their file), the checked layers are merged (mappings deep, lists replaced), and the
result becomes a `Config`. A bad file or environment variable is a `ConfigError`; a bad
user-data section is only reported, because the operator may not be able to fix user data
without replacing the instance, and the file config is still a safe way to run.
"""

from __future__ import annotations

import os
import stat
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import yaml

from spotwatch.config import validate, values, yamltext
from spotwatch.config.errors import ConfigError, describe
from spotwatch.config.schema import DEFAULT_CONFIG_PATH, Config
from spotwatch.config.userdata import extract_spotwatch_section

CONFIG_ENV = "SPOTWATCH_CONFIG"


@dataclass(frozen=True)
class LoadReport:
    """The loaded config, plus what happened to user data, for the caller to log."""

    config: Config
    # Problems of a user-data section that was dropped (empty when it was used or absent).
    user_data_problems: List[str] = field(default_factory=list)
    # One line on what user data held, e.g. "#cloud-config user data has no spotwatch: section".
    user_data_note: str = ""


def load_config(
    path: Optional[str] = None,
    *,
    env: Mapping[str, str] = os.environ,
    user_data: Optional[bytes] = None,
    confd_dir: Optional[str] = None,
    check_permissions: Optional[bool] = None,
) -> Config:
    """The effective `Config`; see `load_config_report` for the rules."""
    return load_config_report(
        path,
        env=env,
        user_data=user_data,
        confd_dir=confd_dir,
        check_permissions=check_permissions,
    ).config


def load_config_report(
    path: Optional[str] = None,
    *,
    env: Mapping[str, str] = os.environ,
    user_data: Optional[bytes] = None,
    confd_dir: Optional[str] = None,
    check_permissions: Optional[bool] = None,
) -> LoadReport:
    """Load and check every layer; raise `ConfigError` listing all problems found.

    The config file is `path`, else `$SPOTWATCH_CONFIG`, else /etc/spotwatch/config.yaml.
    A missing default file means "all defaults"; a missing file that was named is an error.

    conf.d is `confd_dir` when given, else the `conf.d` directory next to the config file
    (for the default file that is /etc/spotwatch/conf.d). Keeping conf.d beside its file means
    `-c /srv/test/config.yaml` never silently picks up the production drop-ins. Its
    `*.yaml` files (dotfiles skipped) apply in name order; a missing conf.d is fine.

    User data (the raw bytes of latest/user-data, fetched by the caller) is read only when
    the merged `imds.user_data` is true. Environment variables apply last.

    With `check_permissions` (default: when running as root), the config file and each
    conf.d file must be owned by root and not writable by group or others: hooks run as root.
    So must conf.d, every folder above them up to / (as sshd's StrictModes checks a key
    file's folders), and `state_dir` when it exists. See `_folder_chain_problems` for the one
    exception (sticky folders such as /tmp above the config).
    """
    if check_permissions is None:
        check_permissions = os.geteuid() == 0
    config_path, named = _config_path(path, env)
    files = _layer_files(config_path, named, confd_dir)

    problems: List[str] = []
    if check_permissions:
        confd = _confd_path(config_path, confd_dir)
        if os.path.isdir(confd):
            # Whoever can write to the folder decides which root-owned files make up the
            # config: they can remove or rename a layer, or symlink any root-owned YAML in.
            problems.extend(p for p in [_permission_problem(confd, "folder")] if p)
        problems.extend(problem for problem in map(_permission_problem, files) if problem)
        problems.extend(_folder_chain_problems([config_path, confd, *files]))
    layers: List[Dict[str, Any]] = []
    for file_path in files:
        layer, layer_problems = _read_layer(file_path)
        layers.append(layer)
        problems.extend(layer_problems)
    env_layer, env_sources, env_problems = _env_layer(env)
    problems.extend(env_problems)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))  # a folder shared by layers: once

    merged: Dict[str, Any] = {}
    for layer in layers:
        merged = merge(merged, layer)
    sources = ["defaults", *files]

    user_data_problems: List[str] = []
    if user_data is None:
        note = "no user data given"
    elif not merged.get("imds", {}).get("user_data", True):
        note = "user data not read (imds.user_data is false)"
    else:
        section, note = extract_spotwatch_section(user_data)
        if section is not None:
            layer, user_data_problems = validate.check_layer(section)
            if user_data_problems:
                user_data_problems = [f"user-data: {p}" for p in user_data_problems]
                sources.append(f"user-data (ignored: {len(user_data_problems)} problems)")
            else:
                merged = merge(merged, layer)
                sources.append("user-data")

    merged = merge(merged, env_layer)
    sources.extend(env_sources)
    config = validate.build_config(merged, tuple(sources))
    if check_permissions:
        problems = _state_dir_problems(config.state_dir)
        if problems:
            raise ConfigError([f"state_dir: {problem}" for problem in problems])
    return LoadReport(config, user_data_problems, note)


STATE_WHY = "its files decide what ran"


def _state_dir_problems(state_dir: str) -> List[str]:
    """`state_dir`'s files decide which steps of a response count as done and which notice
    was handled: whoever may write them, or replace the folder, can suppress a checkpoint.
    So, as for the config: the folder root's and not writable by group or others, and no
    symlink (root writes in it); every folder above it up to / likewise (as named and
    resolved; a sticky one above may be writable by all). A folder not made yet is made by
    the daemon in the nearest one that exists, which then may not be writable by others
    at all: in a sticky /tmp anyone could make it first."""
    path = os.path.abspath(state_dir)
    if os.path.islink(path):
        return [f"{path}: must not be a symlink (root writes its files; {STATE_WHY})"]
    if os.path.exists(path):
        found = [_permission_problem(path, "folder", STATE_WHY)]
    else:
        while not os.path.exists(path) and os.path.dirname(path) != path:
            path = os.path.dirname(path)
        found = [_permission_problem(path, "folder", f"{state_dir} would be made in it")]
    found += _folder_chain_problems([path], STATE_WHY)
    return [problem for problem in dict.fromkeys(found) if problem]


REDACTED = "***"


def config_to_dict(config: Config) -> Dict[str, Any]:
    """The effective config as plain YAML-able data, for `spotwatch check` to show.

    Durations are seconds, tuples are lists, header values (the webhook's, an http preset's)
    are redacted (they are usually tokens). `sources` is left out, so the result is itself a
    valid config file.
    """
    data: Dict[str, Any] = _plain(asdict(config))
    del data["sources"]
    data["webhook"]["headers"] = {name: REDACTED for name in data["webhook"]["headers"]}
    data["hooks"] = [_hook_as_written(hook) for hook in data["hooks"]]
    return data


def _hook_as_written(hook: Dict[str, Any]) -> Dict[str, Any]:
    """A hook as its YAML says it: `command`, or `preset` with its arguments under `with`."""
    arguments = hook.pop("arguments")
    if hook["preset"] is None:
        del hook["preset"]
        return hook
    del hook["command"]
    if isinstance(arguments.get("headers"), dict):
        arguments["headers"] = {name: REDACTED for name in arguments["headers"]}
    hook["with"] = arguments
    return hook


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> Dict[str, Any]:
    """`override` on top of `base`: mappings merge per key; anything else (lists too) replaces."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


def _config_path(path: Optional[str], env: Mapping[str, str]) -> Tuple[str, bool]:
    """(the config file path, whether it was named by the operator rather than defaulted)."""
    if path:
        return path, True
    if env.get(CONFIG_ENV):
        return env[CONFIG_ENV], True
    return DEFAULT_CONFIG_PATH, False


def _layer_files(config_path: str, named: bool, confd_dir: Optional[str]) -> List[str]:
    """The files to read, in layer order: the config file (if any), then conf.d."""
    files: List[str] = []
    if os.path.exists(config_path):
        files.append(config_path)
    elif named:
        raise ConfigError(f"{config_path}: config file not found")
    confd = _confd_path(config_path, confd_dir)
    if not os.path.exists(confd):
        return files
    try:
        names = sorted(os.listdir(confd))
    except OSError as error:
        raise ConfigError(f"{confd}: cannot read the conf.d directory: {error.strerror}") from None
    files.extend(
        os.path.join(confd, name)
        for name in names
        if name.endswith(".yaml") and not name.startswith(".")
    )
    return files


def _confd_path(config_path: str, confd_dir: Optional[str]) -> str:
    return confd_dir or os.path.join(os.path.dirname(config_path), "conf.d")


def _permission_problem(
    path: str, what: str = "", why: str = "hooks run as root", *, sticky_ok: bool = False
) -> str:
    try:
        info = os.stat(path)
    except OSError as error:
        return f"{path}: cannot stat: {error.strerror}"
    writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if sticky_ok and info.st_mode & stat.S_ISVTX:
        writable = 0
    if info.st_uid != 0 or writable:
        return (
            f"{path}: {what + ' ' if what else ''}must be owned by root and not writable by "
            f"group or others ({why})"
        )
    return ""


def _folder_chain_problems(paths: List[str], why: str = "hooks run as root") -> List[str]:
    """Every folder above `paths` (as named and with symlinks resolved), up to /, must be
    root's and not writable by group or others: whoever may write a folder can replace what
    is in it, a root-owned 0644 config file included. One exception, for folders above:
    a sticky folder (/tmp) may be writable by all, since there only the owner of an entry may
    rename or remove it. conf.d itself gets no such exception (`load_config_report`): anyone
    could add a layer to a sticky conf.d."""
    folders: List[str] = []
    for path in paths:
        for start in (os.path.abspath(path), os.path.realpath(path)):
            folder = os.path.dirname(start)
            while folder not in folders:
                folders.append(folder)
                parent = os.path.dirname(folder)
                if parent == folder:
                    break
                folder = parent
    checked = (_permission_problem(f, "folder", why, sticky_ok=True) for f in folders)
    return [problem for problem in checked if problem]


def _read_layer(path: str) -> Tuple[Dict[str, Any], List[str]]:
    """One file's checked settings, and its problems prefixed with the file name."""
    try:
        with open(path, encoding="utf-8") as stream:
            document = yamltext.safe_load(stream.read())
    except OSError as error:
        return {}, [f"{path}: cannot read: {error.strerror}"]
    except UnicodeDecodeError:
        return {}, [f"{path}: not UTF-8 text"]
    except yaml.YAMLError as error:
        return {}, [f"{path}: {_yaml_error(error)}"]
    if document is None:  # an empty file, or only comments
        return {}, []
    layer, problems = validate.check_layer(document)
    return layer, [f"{path}: {problem}" for problem in problems]


def _yaml_error(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or "invalid YAML"
    kind = "YAML document" if isinstance(error, yamltext.TooDeep) else "YAML syntax error"
    if mark is None:
        return f"{kind}: {problem}"
    return f"line {mark.line + 1}, column {mark.column + 1}: {kind}: {problem}"


def _env_flag(value: str) -> bool:
    """Environment booleans are text, so here (only here) yes/no and 1/0 are spelled out."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1, 0, true, false, yes or no, got {describe(value)}")


# variable -> (key path in the config, how to read its text)
_ENV_SETTINGS: Dict[str, Tuple[Tuple[str, ...], Callable[[str], Any]]] = {
    "SPOTWATCH_POLL_INTERVAL": (("poll_interval",), values.positive_duration),
    "SPOTWATCH_DRY_RUN": (("dry_run",), _env_flag),
    "SPOTWATCH_LOG_LEVEL": (
        ("log", "level"),
        values.one_of("debug", "info", "warning", "error", fold_case=True),
    ),
    "AWS_EC2_METADATA_SERVICE_ENDPOINT": (("imds", "endpoint"), values.http_endpoint),
    # Google's SDKs name the metadata server by host[:port] alone.
    "GCE_METADATA_HOST": (("gcp", "endpoint"), values.metadata_host),
    "DOCKER_HOST": (("ecs", "docker_host"), values.docker_host),
}


def _env_layer(env: Mapping[str, str]) -> Tuple[Dict[str, Any], List[str], List[str]]:
    """(settings from environment variables, a source entry per variable used, problems)."""
    layer: Dict[str, Any] = {}
    sources: List[str] = []
    problems: List[str] = []
    for variable, (key_path, convert) in _ENV_SETTINGS.items():
        text = env.get(variable, "")
        if not text.strip():  # VAR= in a unit file means "unset", not "invalid"
            continue
        try:
            value = convert(text.strip())
        except ValueError as error:
            problems.append(f"{variable}: {error}")
            continue
        *parents, last = key_path
        target = layer
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = value
        sources.append(f"env {variable}")
    return layer, sources, problems
