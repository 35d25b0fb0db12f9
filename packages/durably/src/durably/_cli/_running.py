"""``durably run``, ``resume`` and ``submit``: start or continue an execution.

The run and resume commands show the execution on the terminal
(:class:`~durably._console.RunScreen`) and report how it ended (:func:`_report`: the
result, or the failure, on stderr). :func:`durably.cli.main` asks :func:`recorded` and
:func:`last_tool_error` to word a run that raised.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from durably._cli._common import cli_config, dumps, llm_options, llm_spec, printable
from durably.errors import ConfigError, LeaseHeldError

__all__ = ["last_tool_error", "recorded", "resume_command", "run_command", "submit_command"]


def _screen(args: argparse.Namespace, execution_id: str) -> Any:
    from durably._console import RunScreen
    from durably.runner import Terminal

    screen = RunScreen(execution_id)
    args.screen = screen  # main() takes its status line down on Ctrl-C and errors
    terminal = Terminal(
        ask=screen.ask, heard=screen.heard, watch=screen.watch, tool_failed=screen.tool_failed
    )
    return screen, terminal


async def run_command(args: argparse.Namespace) -> int:
    """``durably run``: run a program from its beginning, on the terminal's screen."""
    from durably.runner import Program, new_execution_id, run_program

    spec = llm_spec(args)
    if spec is None:
        raise ConfigError(
            "no LLM given",
            key="--llm",
            fix="Pass --llm scripted:PATH or --llm openai:MODEL, or set [llm] spec in durably.toml",
        )
    config = cli_config(args)
    # A program that does not load starts nothing (a .pb is compiled here, by the LLM).
    program = Program.load(args.program, llm=spec, llm_options=llm_options(args))
    execution_id = args.execution_id or new_execution_id()
    args.started_execution = execution_id
    screen, terminal = _screen(args, execution_id)
    screen.notice(f"execution {execution_id}")
    try:
        result = await run_program(
            program,
            llm=spec,
            llm_options=llm_options(args),
            execution_id=execution_id,
            inputs=args.input or [],
            interactive=not args.input and sys.stdin.isatty(),
            config=config,
            echo=screen.say,
            progress=screen.step,
            terminal=terminal,
        )
    finally:
        screen.close()
    return _report(result)


def _report(result: Any) -> int:
    from durably._console import fancy, make_console

    if result.status == "already-completed":
        print(f"execution {result.execution_id} already completed", file=sys.stderr)
        return 0
    if result.status == "completed":
        if result.result is not None:
            line = f"result: {dumps(result.result)}"
            if fancy(sys.stdout, sys.stderr):
                make_console(sys.stderr).print(printable(line), style="green")
            else:
                print(printable(line), file=sys.stderr)
        return 0
    print(printable(f"execution {result.execution_id} failed: {result.error}"), file=sys.stderr)
    return 1


class _Countdown:
    """``--wait``: who holds the lease and how long until it expires -- a live countdown
    on a terminal, one line per new holder otherwise."""

    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id
        self.tty = sys.stderr.isatty()
        self.last_owner: str | None = None
        self.shown = False

    def __call__(self, exc: LeaseHeldError) -> None:
        left = (
            ""
            if exc.expires_at is None
            else (f"; lease expires in {max(0.0, exc.expires_at - time.time()):.0f} s")
        )
        from durably._liveness import OwnerIdentity

        ident = OwnerIdentity.parse(exc.owner or "")
        holder = ident.label if ident else (exc.owner or "another process")
        alive = " (alive)" if exc.owner_alive else ""
        line = (
            f"waiting for {holder}{alive} to finish or let execution "
            f"{self.execution_id} go{left} (Ctrl-C to stop waiting)"
        )
        if self.tty:
            sys.stderr.write(f"\r\x1b[K{line}")
            sys.stderr.flush()
            self.shown = True
        elif exc.owner != self.last_owner:
            print(line, file=sys.stderr, flush=True)
        self.last_owner = exc.owner

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.shown = False


async def resume_command(args: argparse.Namespace) -> int:
    """``durably resume``: continue an execution (``--wait``: with a countdown)."""
    from durably.runner import resume_execution

    config = cli_config(args)
    countdown = _Countdown(args.execution_id)
    args.started_execution = args.execution_id
    screen, terminal = _screen(args, args.execution_id)

    def say(line: str) -> None:
        countdown.clear()
        screen.say(line)

    def notice(line: str) -> None:
        countdown.clear()
        screen.notice(line)

    try:
        result = await resume_execution(
            args.execution_id,
            llm=llm_spec(args) if args.llm else None,
            llm_options=llm_options(args),
            config=config,
            allow_changed_program=args.allow_changed_program,
            interactive=not args.input and sys.stdin.isatty(),
            echo=say,
            wait=args.wait,
            progress=screen.step,
            inputs=args.input or [],
            waiting=countdown,
            notice=notice,
            terminal=terminal,
        )
    finally:
        countdown.clear()
        screen.close()
    return _report(result)


async def submit_command(args: argparse.Namespace) -> int:
    """``durably submit``: create an execution for a worker; print its id."""
    from durably.runner import submit_program

    spec = llm_spec(args)
    if spec is None:
        raise ConfigError(
            "no LLM given", key="--llm", fix="Pass --llm scripted:PATH or --llm openai:MODEL"
        )
    execution_id = await submit_program(
        args.program,
        llm=spec,
        llm_options=llm_options(args),
        execution_id=args.execution_id,
        inputs=args.input or [],
        config=cli_config(args),
    )
    print(execution_id)
    return 0


def last_tool_error(args: argparse.Namespace, execution_id: str) -> str | None:
    """The last exception a Python tool of the execution raised (journaled), for the
    message of a run that then failed (its LLM was asked again and, say, had nothing)."""
    from durably import open_store
    from durably._events import journal_events
    from durably._inspect import tool_error_text
    from durably.checkpoint import CheckpointManager

    async def last() -> str | None:
        config = cli_config(args)
        async with open_store(config=config) as provider:
            errors, _ = await journal_events(
                CheckpointManager(execution_id, provider, config=config)
            )
        return tool_error_text(errors[-1]) if errors else None

    try:
        return asyncio.run(last())
    except Exception:
        return None


def recorded(args: argparse.Namespace, execution_id: str) -> bool:
    """Whether the execution has a checkpoint (an error before it has one is an input
    error, e.g. a bad ``--llm``, not a failed execution)."""
    from durably import open_store

    async def check() -> bool:
        async with open_store(config=cli_config(args)) as provider:
            return await provider.load_latest_checkpoint(execution_id) is not None

    try:
        return asyncio.run(check())
    except Exception:
        return True
