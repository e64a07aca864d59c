"""Shared by the job modules: run one `rdistill` command with this process's arguments."""

from __future__ import annotations

import sys

from rdistill.cli import main


def run_command(command: str) -> None:
    sys.exit(main([command, *sys.argv[1:]]))
