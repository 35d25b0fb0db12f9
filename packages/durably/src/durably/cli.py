"""The ``durably`` command: run, resume, ls, show, gc, demo.

Exit status (also in ``durably --help`` and the README's "Exit status"):

* 0 -- success: the execution completed (also resuming one that already completed), or
  a command other than ``run``/``resume`` did what was asked.
* 1 -- the execution failed (its program raised, even ``SystemExit(0)`` or
  ``BaseException``; it is recorded as ``failed`` and can be resumed), or a
  ``worker --once`` ended with failed or damaged executions, or ``gc`` skipped some
  executions (damaged, or a store error) or was told not to delete, or an internal error
  -- also a command cancelled from within (an ``asyncio.CancelledError`` raised by the
  program, a library or a store call; a ``run``/``resume`` so stopped can be resumed).
* 2 -- usage and configuration errors: a bad argument or option, an invalid execution id,
  an unknown execution, a bad ``durably.toml`` or store URL, a store that cannot be
  used, a damaged execution, a program that changed, or an execution another live
  process holds (``resume`` without ``--wait``).
* 3 -- the lease was lost: another process took the execution over while this one ran
  (it was paused or cut off past its lease); it wrote nothing after that.
* 130 -- interrupted (Ctrl-C).

Every error is one line on stderr (``--debug`` or ``DURABLY_DEBUG=1`` adds the traceback).

The commands themselves live in :mod:`durably._cli` (one module per group of commands,
the argument parser in ``_cli._parser``); this module maps each command to its handler
(:func:`build_parser`: looked up here when the parser is built, so a test can replace
one, e.g. ``monkeypatch.setattr(durably.cli, "_ls", ...)``) and turns how a command ended
into the exit status (:func:`main`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence

from durably._cli._common import UsageError as _UsageError
from durably._cli._common import printable as _printable
from durably._cli._inspecting import ls_command as _ls
from durably._cli._inspecting import show_command as _show
from durably._cli._maintenance import gc_command as _gc
from durably._cli._maintenance import migrate_command as _migrate
from durably._cli._maintenance import worker_command as _worker
from durably._cli._parser import DEBUG_HELP as DEBUG_HELP
from durably._cli._parser import EXIT_STATUS_HELP as EXIT_STATUS_HELP
from durably._cli._parser import LLM_HELP as LLM_HELP
from durably._cli._parser import build_parser as _build_parser
from durably._cli._parser import version_text as version_text
from durably._cli._running import last_tool_error, recorded
from durably._cli._running import resume_command as _resume
from durably._cli._running import run_command as _run
from durably._cli._running import submit_command as _submit
from durably._cli._setup import demo_command as _demo
from durably._cli._setup import init_command as _init
from durably._cli._timetravel import diff_command as _diff
from durably._cli._timetravel import fork_command as _fork
from durably._cli._timetravel import history_command as _history
from durably.errors import (
    ConfigError,
    CorruptObjectError,
    DurablyError,
    FencedError,
    InvalidExecutionIdError,
    LeaseHeldError,
    NotFoundError,
    ProgramChangedError,
    StoreError,
    UnsupportedFormatError,
)

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``durably`` command's argument parser (its ``--help`` lists the exit statuses),
    with each command's handler as this module names it when called."""
    return _build_parser(
        {
            "run": _run,
            "resume": _resume,
            "submit": _submit,
            "worker": _worker,
            "migrate": _migrate,
            "ls": _ls,
            "show": _show,
            "history": _history,
            "fork": _fork,
            "diff": _diff,
            "gc": _gc,
            "demo": _demo,
            "init": _init,
        }
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``durably`` command (exit statuses: see the module docstring)."""
    from durably._redact import redact, redact_logs

    parser = build_parser()
    args = parser.parse_args(argv)
    redact_logs()  # no secret in any log line or message the command prints
    debug = args.debug or os.environ.get("DURABLY_DEBUG", "") not in ("", "0")
    if args.debug:
        os.environ["DURABLY_DEBUG"] = "1"  # the processes it starts too (demo, worker)

    def say(prefix: str, exc: BaseException | str) -> None:
        text = exc if isinstance(exc, str) else str(exc) or type(exc).__name__
        line = " ".join(redact(text).split()) or "(no message)"
        print(f"durably: {prefix}{_printable(line)}", file=sys.stderr)
        if debug and isinstance(exc, BaseException):
            import traceback

            traceback.print_exception(exc, file=sys.stderr)

    try:
        code: int = asyncio.run(args.handler(args))
        sys.stdout.flush()  # here, where a reader that went away is handled below
        return code
    except KeyboardInterrupt:
        screen = getattr(args, "screen", None)
        if screen is not None:
            screen.close()
        if sys.stderr.isatty() and (screen is None or not screen.fancy or screen.prompting):
            sys.stderr.write("\n")  # past the ^C the terminal echoed (or the prompt)
        execution_id = getattr(args, "started_execution", None)
        if execution_id:
            print(f"interrupted; resume with: durably resume {execution_id}", file=sys.stderr)
        else:
            print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `durably ls | head`: the reader went away, as asked; say nothing more (stdout
        # is gone; Python's flush at exit would fail again).
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        # Not a success for a run cut short by it (the execution stopped; resume it).
        return 1 if args.command in ("run", "resume", "demo") else 0
    except FencedError as exc:
        say("stopped: ", exc)
        return 3
    except asyncio.CancelledError as exc:
        # Not Ctrl-C: asyncio.run cancels the main task on SIGINT and raises
        # KeyboardInterrupt once it ended (unless another cancel() of it is pending). Nor,
        # as such, a lost lease: its watchdog cancels the command's task, but the lease
        # context absorbs that cancellation and raises FencedError (durably._leasing).
        # What reaches here was raised or asked for by the program, a library or a store
        # call (one that ended cancelled by itself) -- after a take-over, if its
        # FencedError is in the chain: then the lease was lost (3).
        lost = _lost_lease(exc)
        say("stopped: ", _cancelled_from_within(args) if lost is None else str(lost))
        if debug:
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        return 1 if lost is None else 3
    except _UsageError as exc:
        say("error: ", exc)
        return 2
    except (
        NotFoundError,
        ConfigError,
        LeaseHeldError,
        ProgramChangedError,
        InvalidExecutionIdError,
        CorruptObjectError,
        UnsupportedFormatError,
    ) as exc:
        say("error: ", exc)
        return 2
    except StoreError as exc:
        say("store error: ", exc)
        return 2
    except DurablyError as exc:
        execution_id = getattr(args, "started_execution", None)
        cause = last_tool_error(args, execution_id) if execution_id else None
        say("error: ", f"{exc}{f' (after a tool failed: {cause})' if cause else ''}")
        return 1
    except BaseException as exc:  # what LLM code raised (SystemExit too), or a bad input
        execution_id = getattr(args, "started_execution", None)
        if (
            execution_id
            and args.command in ("run", "resume")
            and (not isinstance(exc, (ValueError, TypeError)) or recorded(args, execution_id))
        ):
            say("", f"execution {execution_id} failed: {type(exc).__name__}: {exc}")
            return 1
        if isinstance(exc, (ValueError, TypeError, OverflowError, UnicodeError, OSError)):
            say("error: ", exc)
            return 2
        say("internal error: ", f"{type(exc).__name__}: {exc} (--debug shows the traceback)")
        return 1


def _lost_lease(exc: BaseException) -> FencedError | None:
    """The take-over (:class:`FencedError`) that ``exc`` broke on its way, if any: what
    it was raised from or while handling."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, FencedError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _cancelled_from_within(args: argparse.Namespace) -> str:
    """What a command stopped by a cancellation from within says (exit status 1)."""
    which = getattr(args, "started_execution", None)
    return (
        f"{f'execution {which}' if which else 'the command'} was cancelled from within "
        "(an asyncio.CancelledError from the program, a library or a store call; --debug "
        f"shows where){f'; resume with: durably resume {which}' if which else ''}"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
