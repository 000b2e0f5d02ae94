"""`spotwatch` command line (the README's "Commands"). Each subcommand lives in a module of its own;
this file only parses arguments, loads the config and maps failures to exit statuses.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from spotwatch import __version__
from spotwatch.commands.entry import COMMANDS
from spotwatch.commands.rehearsed import ACTIONS as REHEARSED
from spotwatch.config.errors import ConfigError
from spotwatch.config.schema import CLOUD_NAMES, DEFAULT_CONFIG_PATH
from spotwatch.exits import EX_CONFIG, EX_OK


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= value <= 21600:
        raise argparse.ArgumentTypeError(f"expected 0 to 21600 seconds, got {text!r}")
    return value


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        help=f"config file (default: $SPOTWATCH_CONFIG, else {DEFAULT_CONFIG_PATH})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spotwatch",
        description="EC2 Spot interruption daemon: detect the notice, respond before the deadline.",
    )
    parser.add_argument("--version", action="version", version=f"spotwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="the daemon: poll, detect, respond")
    run.add_argument(
        "--dry-run", action="store_true", help="hooks run; no ECS/EC2 change, no hibernation"
    )
    run.add_argument("--once", action="store_true", help="one poll (and its response), then exit")

    check = sub.add_parser("check", help="validate the config and run preflight checks")
    check.add_argument("--json", action="store_true", help="machine-readable output")

    status = sub.add_parser("status", help="what the daemon last recorded")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    reload = sub.add_parser(
        "reload", help="the unit's ExecReload: SIGHUP the daemon, wait for its answer"
    )
    reload.add_argument("--pid", type=int, required=True, help="the daemon's PID ($MAINPID)")
    reload.add_argument(
        "--timeout",
        type=_seconds,
        default=45.0,
        metavar="SECONDS",
        help="give up waiting for the answer after this long (default 45)",
    )

    hook = sub.add_parser("sleep-hook", help="called by systemd-sleep: pre|post ACTION; exits 0")
    hook.add_argument("phase", metavar="pre|post", help="before sleep or after resume")
    hook.add_argument("action", metavar="ACTION", help="hibernate (others are ignored)")
    rehearse = sub.add_parser(
        "rehearse", help="run the configured response against a simulated notice"
    )
    rehearse.add_argument(
        "--action",
        choices=list(REHEARSED),
        default="terminate",
        help="the signal to raise (default terminate)",
    )
    rehearse.add_argument(
        "--lead",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="seconds of warning before the notice time or a scheduled event's NotBefore"
        " (default 120; hibernate 0)",
    )
    rehearse.add_argument(
        "--live-ecs",
        action="store_true",
        help="really drain and stop ECS tasks (default: dry-run)",
    )
    rehearse.add_argument(
        "--cloud",
        choices=list(CLOUD_NAMES),
        default=None,
        help="the cloud whose signals to rehearse (default: the config's cloud; auto: this"
        " machine's)",
    )

    sim = sub.add_parser(
        "simulate-imds", help="a standalone IMDS (or --cloud gcp|azure metadata) simulator"
    )
    sim.add_argument(
        "--cloud",
        choices=list(CLOUD_NAMES),
        default=None,
        help="whose metadata service to play (default aws)",
    )
    sim.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    sim.add_argument(
        "--action",
        choices=["terminate", "stop", "hibernate", "rebalance"],
        help="raise this notice (rebalance: a rebalance recommendation)",
    )
    sim.add_argument(
        "--lead", type=float, default=None, help="seconds of warning (default 120; hibernate 0)"
    )
    sim.add_argument(
        "--delay", type=float, default=0.0, help="raise the notice this many seconds after start"
    )
    sim.add_argument(
        "--answer-delay", type=float, default=0.0, help="hold every answer this many seconds"
    )
    sim.add_argument(
        "--scheduled-event",
        metavar="CODE",
        help="list an event, NotBefore --lead seconds ahead: aws instance-stop,"
        " instance-retirement, instance-reboot, system-reboot, system-maintenance; azure"
        " Preempt, Terminate, Redeploy, Reboot, Freeze; gcp TERMINATE_ON_HOST_MAINTENANCE,"
        " MIGRATE_ON_HOST_MAINTENANCE (the maintenance-event value)",
    )
    sim.add_argument("--scenario", help="play this timeline file (JSON; see the README)")
    sim.add_argument("--imdsv2-only", action="store_true", help="refuse requests without a token")
    sim.add_argument(
        "--asg-state",
        metavar="STATE",
        default=None,
        help="answer autoscaling/target-lifecycle-state with STATE (InService, Terminated, ...;"
        " default: 404, in no Auto Scaling group)",
    )

    for parser_ in sub.choices.values():
        _add_config_option(parser_)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    handler = COMMANDS[args.command]
    try:
        return handler(args)
    except ConfigError as problems:
        for line in problems.problems:
            print(line, file=sys.stderr)
        return EX_CONFIG
    except KeyboardInterrupt:
        return EX_OK
