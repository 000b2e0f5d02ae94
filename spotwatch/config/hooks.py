"""The `hooks:` list: each hook runs a `command`, or names a ready-made `preset` with its
`with:` arguments (CONTRACT §9, spotwatch.presets).

Every mistake names its key path: both or neither of command and preset (`hooks[0].preset`,
`hooks[0].command`), an unknown preset, a `with:` key the preset does not take, misses or
cannot use (`hooks[0].with.signal`), a `${name}` other than the three a preset may use, and
`user:` or `env:` on a preset that runs no program (they would silently do nothing).
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Dict, List, Mapping

from spotwatch.config.checks import (
    INVALID,
    Problems,
    hook_env,
    is_mapping,
    leaf,
    section,
    unique_list,
)
from spotwatch.config.errors import describe, key_path_of
from spotwatch.config.schema import HOOK_ACTIONS, HookSpec
from spotwatch.config.template import placeholder_problem
from spotwatch.config.values import command, integer, one_of, positive_duration, run_as_user
from spotwatch.presets.base import PLACEHOLDERS, Preset
from spotwatch.presets.registry import PRESETS

hook_actions = unique_list(one_of(*HOOK_ACTIONS), ", ".join(HOOK_ACTIONS), non_empty=True)


_HOOK_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def hook_name(value: Any) -> str:
    if not isinstance(value, str) or not _HOOK_NAME.fullmatch(value):
        raise ValueError(f"expected letters, digits, _ . - only, got {describe(value)}")
    return value


def preset_name(value: Any) -> str:
    if isinstance(value, str) and value in PRESETS:
        return value
    close = difflib.get_close_matches(str(value), list(PRESETS), n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    raise ValueError(f"unknown preset {describe(value)}{hint}; known: {', '.join(PRESETS)}")


_HOOK_FIELDS = {
    "name": leaf(hook_name),
    "command": leaf(command),
    "preset": leaf(preset_name),
    "actions": hook_actions,
    "timeout": leaf(positive_duration),
    "order": leaf(integer),
    "user": leaf(run_as_user),
    "env": hook_env,
}
_ARGUMENTS = "with"  # the YAML key of a preset's arguments (`HookSpec.arguments`)


def hooks(value: Any, path: str, problems: Problems) -> Any:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(f"{path}: expected a list of hooks, got {describe(value)}")
        return INVALID
    specs: List[HookSpec] = []
    first_seen: Dict[str, str] = {}
    before = len(problems)
    for index, raw in enumerate(value):
        hook_path = f"{path}[{index}]"
        if not is_mapping(raw, hook_path, problems):
            continue
        fields = {key: item for key, item in raw.items() if key != _ARGUMENTS}
        checked = section(_HOOK_FIELDS)(fields, hook_path, problems)
        if "name" not in raw:
            problems.append(f"{hook_path}.name: required")
        _command_or_preset(raw, checked, hook_path, problems)
        name = checked.get("name")
        if name is not None:
            if name in first_seen:
                problems.append(
                    f"{hook_path}.name: duplicate name {describe(name)} (also {first_seen[name]})"
                )
            first_seen.setdefault(name, hook_path)
        if len(problems) == before:
            specs.append(HookSpec(**checked))
    return tuple(specs) if len(problems) == before else INVALID


def _command_or_preset(
    raw: Mapping[str, Any], checked: Dict[str, Any], path: str, problems: Problems
) -> None:
    """Exactly one of command and preset; a preset's arguments go to `checked["arguments"]`."""
    if "command" in raw and "preset" in raw:
        problems.append(f"{path}.preset: give command or preset, not both")
        return
    if "preset" not in raw:
        if "command" not in raw:
            problems.append(f"{path}.command: required (or preset: NAME)")
        if _ARGUMENTS in raw:
            problems.append(f"{path}.{_ARGUMENTS}: arguments for a preset; this hook has none")
        return
    preset = PRESETS.get(checked.get("preset", ""))
    if preset is None:  # an unknown preset, already reported
        return
    arguments = preset_arguments(preset, raw.get(_ARGUMENTS), f"{path}.{_ARGUMENTS}", problems)
    if arguments is not INVALID:
        checked["arguments"] = arguments
    if not preset.runs_programs:
        for key in ("user", "env"):
            if raw.get(key):
                problems.append(
                    f"{path}.{key}: the {preset.name} preset runs no program for it to apply to"
                )


def preset_arguments(preset: Preset, value: Any, path: str, problems: Problems) -> Any:
    """A preset's `with:` mapping, checked key by key and as a whole, defaults filled in."""
    if value is None:
        value = {}
    if not is_mapping(value, path, problems):
        return INVALID
    before = len(problems)
    for key, raw in value.items():
        _placeholders(raw, key_path_of(path, key), problems)
    given = section(preset.arguments)(value, path, problems)
    for key in preset.required:
        if key not in value:
            problems.append(f"{key_path_of(path, key)}: required")
    if len(problems) == before:
        preset.check_arguments(given, path, problems)
    if len(problems) > before:
        return INVALID
    return {**preset.defaults, **given}


def _placeholders(value: Any, path: str, problems: Problems) -> None:
    """Every string at any depth may use only the placeholders of CONTRACT §9."""
    if isinstance(value, str):
        problem = placeholder_problem(value, PLACEHOLDERS)
        if problem:
            problems.append(f"{path}: {problem}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _placeholders(item, f"{path}[{index}]", problems)
    elif isinstance(value, dict):
        for key, item in value.items():
            _placeholders(item, key_path_of(path, key), problems)
