"""The daemon's configuration for a played sequence, written from its `Settings`
(contract_signals.py) and the world's addresses."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List

from contract_signals import Settings
from model_world import Fleet

HOOK = Path(__file__).with_name("recording_hook.py")


def hooks_config(settings: Settings, folder: Path, receiver: str = "") -> List[Dict[str, Any]]:
    """Every hook of the sequence: the recording hook writing to folder/hooks.jsonl, or a
    preset posting to the world's `receiver`."""
    out = str(folder / "hooks.jsonl")
    hooks: List[Dict[str, Any]] = []
    for h in settings.all_hooks(with_presets=True):
        hook: Dict[str, Any] = {"name": h.name, "actions": list(h.actions), "order": h.order}
        hook["timeout"] = f"{h.timeout}s"
        if h.preset:  # §9: the http preset posts to the world's receiver, one path per hook
            hook.update(preset=h.preset, **{"with": {"url": f"{receiver}/{h.name}"}})
        else:
            hook["command"] = [sys.executable, "-S", str(HOOK), h.name, str(h.seconds), out]
        hooks.append(hook)
    return hooks


def config_for(
    settings: Settings, fleet: Fleet, world: Dict[str, str], folder: Path, *, logind: bool
) -> Dict[str, Any]:
    """The daemon's config for a sequence; `world` gives the URLs of IMDS (`imds`), the ECS
    agent (`agent`), the preset's receiver (`receiver`) and dockerd (`docker`)."""
    imds, agent, receiver = world["imds"], world["agent"], world["receiver"]
    hooks = hooks_config(settings, folder, receiver)
    lb: Dict[str, Any] = {"enabled": "auto", "wait": f"{settings.lb_wait}s"}
    lb["target_groups"] = [fleet.target_group] if settings.lb == "given" else []
    lb["classic"] = [fleet.classic] if settings.lb == "classic-given" else []
    if settings.lb == "off":
        lb = {"enabled": False}
    ecs: Dict[str, Any] = {"enabled": False}
    if settings.ecs:
        ecs = {"enabled": True, "agent_url": agent, "stop": "standalone", "final_stop": True}
        ecs["stop_timeout"] = f"{settings.stop_timeout}s"
        if settings.stop_via == "runtime":  # §4: the tasks' containers run in the world's dockerd
            ecs.update(stop_via="runtime", docker_host=world["docker"])
    poll = f"{int(settings.poll * 1000)}ms"
    return {
        "poll_interval": poll,
        "deadline_margin": f"{settings.margin}s",
        "dry_run": settings.dry_run,
        "state_dir": str(folder / "state"),
        "imds": {"endpoint": imds, "timeout": "300ms", "user_data": False},
        "rebalance": {"enabled": True, "poll_interval": poll},
        "hooks": hooks,
        "ecs": ecs,
        "autoscaling": {
            "enabled": True,
            "budget": f"{settings.asg_budget}s",
            "detach": settings.detach,
        },
        "scheduled_events": {"enabled": True, "poll_interval": poll, "lead": f"{settings.lead}s"},
        "load_balancer": lb,
        "instance": {
            "after_response": settings.after_response,
            "after_rebalance": settings.after_rebalance,
        },
        "hibernate": {"trigger": "none", "budget": f"{settings.hibernate_budget}s"},
        # §8: the delay lock wherever the world has logind (else it is never asked for).
        "shutdown": {"enabled": logind, "budget": f"{settings.shutdown_budget}s"},
        "log": {"level": "info", "format": "text"},
    }
