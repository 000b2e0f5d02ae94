"""What each subcommand does, once its arguments are parsed (see cli.py)."""

from __future__ import annotations

import argparse
import logging
from typing import Callable, Dict

from spotwatch.service import logs
from spotwatch.service.cli import EX_FAILURE, config_path

Command = Callable[[argparse.Namespace], int]


def cmd_run(args: argparse.Namespace) -> int:
    from spotwatch.config.errors import ConfigError
    from spotwatch.service.daemon import Daemon
    from spotwatch.service.settings import load_service_config
    from spotwatch.service.wiring import daemon_hooks

    path = config_path(args)
    logs.configure()  # until the config says otherwise, so config problems are logged
    config = load_service_config(path)
    logs.configure(config.log.level, config.log.format)

    def reload() -> object:
        return load_service_config(path)

    try:
        daemon = Daemon(
            config,
            reload_config=reload,  # type: ignore[arg-type]
            dry_run=args.dry_run,
            hooks=daemon_hooks(config),
        )
        return daemon.run(once=args.once)
    except ConfigError:
        raise
    except OSError as failure:
        logs.emit(
            logging.getLogger("spotwatch"), logging.CRITICAL, "fatal", f"cannot run: {failure}"
        )
        return EX_FAILURE


def cmd_check(args: argparse.Namespace) -> int:
    from spotwatch.service.check import run_check

    return run_check(config_path(args), as_json=args.json)


def cmd_status(args: argparse.Namespace) -> int:
    from spotwatch.service.status import run_status

    return run_status(config_path(args), as_json=args.json)


def cmd_reload(args: argparse.Namespace) -> int:
    from spotwatch.service.reloadreply import run_reload

    return run_reload(config_path(args), args.pid, args.timeout)


def cmd_sleep_hook(args: argparse.Namespace) -> int:
    from spotwatch.service.sleephook import run_sleep_hook

    return run_sleep_hook(config_path(args), args.phase, args.action)


def cmd_rehearse(args: argparse.Namespace) -> int:
    from spotwatch.service.rehearse import run_rehearse

    return run_rehearse(
        config_path(args), action=args.action, lead=args.lead, live_ecs=args.live_ecs
    )


def cmd_simulate_imds(args: argparse.Namespace) -> int:
    from spotwatch.simulator.imds import serve

    serve(
        port=args.port,
        action=args.action,
        lead=args.lead,
        delay=args.delay,
        imdsv2_only=args.imdsv2_only,
    )
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
