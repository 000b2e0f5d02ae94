"""`spotwatch run` as a child process whose hibernate trigger looks at the host through a
test's folder: hibernation agent files under ROOT, systemd through the SYSTEMCTL program.

The product takes no environment variable for either (one could name a command run as
root); the daemon's probes are chosen where it is built, which this does through `run_daemon`.

Usage: python probed_spotwatch.py ROOT SYSTEMCTL [run options: -c CONFIG --dry-run --once]
"""

from __future__ import annotations

import sys

from spotwatch.cli import build_parser
from spotwatch.commands.entry import run_daemon
from spotwatch.parts.hibernate import Probes

if __name__ == "__main__":
    root, systemctl, *argv = sys.argv[1:]
    args = build_parser().parse_args(["run", *argv])
    probes = Probes(root=root, systemctl=(systemctl,))
    sys.exit(run_daemon(args.config, dry_run=args.dry_run, once=args.once, probes=probes))
