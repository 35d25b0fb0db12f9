"""``durably demo`` and ``durably init``: a first crash and resume, a starter project.

(``durably new-provider`` is :mod:`durably._scaffold`'s, parser included.)
"""

from __future__ import annotations

import argparse
import os
import sys

from durably._cli._common import cli_config

__all__ = ["demo_command", "init_command"]


async def demo_command(args: argparse.Namespace) -> int:
    """``durably demo``: crash the bundled program mid-run, resume it, compare."""
    from durably._demo import run_demo
    from durably.config import DurabilityConfig

    config = cli_config(args)
    if args.store is None and config.store == DurabilityConfig().store:
        config = None  # nothing configured: a temporary store of the demo's own
    return await run_demo(keep=args.keep, config=config, config_file=args.config)


async def init_command(args: argparse.Namespace) -> int:
    """``durably init``: write durably.toml and the starter program into DIR."""
    from durably._starter import PROGRAM, write_starter

    for path in write_starter(args.directory):
        print(f"wrote {path}")
    print(f"run it with: {_cd(args.directory)}durably run {PROGRAM}", file=sys.stderr)
    return 0


def _cd(directory: str) -> str:
    """``cd DIR && `` unless DIR is the current directory."""
    here = os.path.realpath(directory) == os.path.realpath(os.curdir)
    return "" if here else f"cd {directory} && "
