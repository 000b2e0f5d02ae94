"""What each subcommand does, once its arguments are parsed (see cli.py).

Each command's module is imported when that command runs, not before: `spotwatch status`
or the sleep hook must not pay for importing the daemon, boto3 or the simulator.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Callable, Dict, Optional

from spotwatch.exits import EX_FAILURE
from spotwatch.host import logs

if TYPE_CHECKING:
    from spotwatch.parts.hibernate import Probes

Command = Callable[[argparse.Namespace], int]


def config_path(args: argparse.Namespace) -> Optional[str]:
    """-c, else $SPOTWATCH_CONFIG, else None (the default file, missing = all defaults)."""
    return args.config or os.environ.get("SPOTWATCH_CONFIG") or None


def cmd_run(args: argparse.Namespace) -> int:
    return run_daemon(config_path(args), dry_run=args.dry_run, once=args.once)


def run_daemon(
    path: Optional[str], *, dry_run: bool, once: bool, probes: Optional[Probes] = None
) -> int:
    """`spotwatch run`. `probes`: where the hibernate trigger looks at the host (default /
    and systemctl); only a caller in Python can change it, never the environment."""
    from spotwatch.commands.check_shutdown import require_shutdown
    from spotwatch.commands.settings import load_service_config
    from spotwatch.config.errors import ConfigError
    from spotwatch.daemon.shell import Daemon
    from spotwatch.daemon.wiring import daemon_parts

    # Loading logs before the config says how: those lines are held and written in its format.
    logs.hold_until_configured()
    try:
        config = require_shutdown(load_service_config(path))
    except ConfigError:
        logs.configure()  # no format to go by: what was held is written as text
        raise
    logs.configure(config.log.level, config.log.format)

    def reload() -> object:  # a config that asks for a lock it cannot have is refused
        return require_shutdown(load_service_config(path))

    try:
        daemon = Daemon(
            config,
            reload_config=reload,  # type: ignore[arg-type]
            dry_run=dry_run,
            parts=daemon_parts(config, probes=probes),
        )
        return daemon.run(once=once, process_ends=True)
    except ConfigError:
        raise
    except OSError as failure:
        logs.emit(
            logging.getLogger("spotwatch"), logging.CRITICAL, "fatal", f"cannot run: {failure}"
        )
        return EX_FAILURE


def cmd_check(args: argparse.Namespace) -> int:
    from spotwatch.commands.check import run_check

    return run_check(config_path(args), as_json=args.json)


def cmd_status(args: argparse.Namespace) -> int:
    from spotwatch.commands.status import run_status

    return run_status(config_path(args), as_json=args.json)


def cmd_reload(args: argparse.Namespace) -> int:
    from spotwatch.commands.reload import run_reload

    return run_reload(config_path(args), args.pid, args.timeout)


def cmd_sleep_hook(args: argparse.Namespace) -> int:
    from spotwatch.commands.sleephook import run_sleep_hook

    return run_sleep_hook(config_path(args), args.phase, args.action)


def cmd_rehearse(args: argparse.Namespace) -> int:
    from spotwatch.commands.rehearse import run_rehearse

    return run_rehearse(
        config_path(args),
        action=args.action,
        lead=args.lead,
        live_ecs=args.live_ecs,
        cloud=args.cloud,
    )


def cmd_simulate_imds(args: argparse.Namespace) -> int:
    from spotwatch.clouds.cloud import SimulateRequest
    from spotwatch.commands.simulate import serve
    from spotwatch.exits import EX_CONFIG
    from spotwatch.simulator.scenario import ScenarioError

    request = SimulateRequest(
        port=args.port,
        action=args.action,
        lead=args.lead,
        delay=args.delay,
        answer_delay=args.answer_delay,
        scheduled_event=args.scheduled_event,
        imdsv2_only=args.imdsv2_only,
        asg_state=args.asg_state,
        scenario=args.scenario,
    )
    try:
        serve(request, args.cloud)
    except ScenarioError as failure:
        print(f"--scenario: {failure}", file=sys.stderr)
        return EX_CONFIG
    except ValueError as failure:
        print(f"simulate-imds: {failure}", file=sys.stderr)
        return EX_CONFIG
    return 0


COMMANDS: Dict[str, Command] = {
    "run": cmd_run,
    "check": cmd_check,
    "status": cmd_status,
    "reload": cmd_reload,
    "sleep-hook": cmd_sleep_hook,
    "rehearse": cmd_rehearse,
    "simulate-imds": cmd_simulate_imds,
}
