"""The ``durably`` command: run, resume, ls, show, gc, demo.

Exit status (also in ``durably --help`` and the README's "Exit status"):

* 0 -- success: the execution completed (also resuming one that already completed), or
  a command other than ``run``/``resume`` did what was asked.
* 1 -- the execution failed (its program raised, even ``SystemExit(0)`` or
  ``BaseException``; it is recorded as ``failed`` and can be resumed), or a
  ``worker --once`` ended with failed or damaged executions, or ``gc`` skipped some
  executions (damaged, or a store error) or was told not to delete, or an internal error.
* 2 -- usage and configuration errors: a bad argument or option, an invalid execution id,
  an unknown execution, a bad ``durably.toml`` or store URL, a store that cannot be
  used, a damaged execution, a program that changed, or an execution another live
  process holds (``resume`` without ``--wait``).
* 3 -- the lease was lost: another process took the execution over while this one ran
  (it was paused or cut off past its lease); it wrote nothing after that.
* 130 -- interrupted (Ctrl-C).

Every error is one line on stderr (``--debug`` or ``DURABLY_DEBUG=1`` adds the traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from durably.storage import CheckpointProvider

__all__ = ["main"]


def _config(args: argparse.Namespace) -> Any:
    from durably.config import load_config

    overrides = {"store": getattr(args, "store", None)}
    return load_config(config_file=getattr(args, "config", None), overrides=overrides)


def _llm_table(args: argparse.Namespace) -> dict[str, Any]:
    """The ``[llm]`` table of durably.toml (``spec`` and the client's options)."""
    path = Path(getattr(args, "config", None) or "durably.toml")
    if not path.is_file():
        return {}
    import tomllib

    table = tomllib.loads(path.read_text()).get("llm", {})
    return dict(table) if isinstance(table, dict) else {}


def _llm_options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in _llm_table(args).items() if k != "spec"}


def _llm_spec(args: argparse.Namespace) -> str | None:
    if getattr(args, "llm", None):
        return str(args.llm)
    env = os.environ.get("DURABLY_LLM")
    if env:
        return env
    spec = _llm_table(args).get("spec")
    return spec if isinstance(spec, str) else None


def _screen(args: argparse.Namespace, execution_id: str) -> Any:
    from durably._console import RunScreen
    from durably.runner import Terminal

    screen = RunScreen(execution_id)
    args.screen = screen  # main() takes its status line down on Ctrl-C and errors
    terminal = Terminal(
        ask=screen.ask, heard=screen.heard, watch=screen.watch, tool_failed=screen.tool_failed
    )
    return screen, terminal


async def _run(args: argparse.Namespace) -> int:
    from durably.runner import Program, new_execution_id, run_program

    spec = _llm_spec(args)
    if spec is None:
        raise ConfigError(
            "no LLM given",
            key="--llm",
            fix="Pass --llm scripted:PATH or --llm openai:MODEL, or set [llm] spec in durably.toml",
        )
    config = _config(args)
    program = Program.load(args.program)  # a program that does not load starts nothing
    execution_id = args.execution_id or new_execution_id()
    args.started_execution = execution_id
    screen, terminal = _screen(args, execution_id)
    screen.notice(f"execution {execution_id}")
    try:
        result = await run_program(
            program,
            llm=spec,
            llm_options=_llm_options(args),
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
            line = f"result: {json.dumps(result.result, default=repr, ensure_ascii=False)}"
            if fancy(sys.stdout, sys.stderr):
                make_console(sys.stderr).print(_printable(line), style="green")
            else:
                print(_printable(line), file=sys.stderr)
        return 0
    print(_printable(f"execution {result.execution_id} failed: {result.error}"), file=sys.stderr)
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


async def _resume(args: argparse.Namespace) -> int:
    from durably.runner import resume_execution

    config = _config(args)
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
            llm=_llm_spec(args) if args.llm else None,
            llm_options=_llm_options(args),
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


async def _ls(args: argparse.Namespace) -> int:
    from durably import open_store
    from durably._inspect import list_executions

    async with open_store(config=_config(args)) as provider:
        rows = await list_executions(provider)
        for row in rows:
            if row["status"] == "failed":
                row["reason"] = await _failure_reason(provider, row["execution_id"])
            elif row["status"] not in ("completed", "empty"):
                await _check_damage(provider, row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no executions")
        return 0
    from durably._console import fancy

    if fancy(sys.stdout):
        _ls_fancy(rows)
        return 0
    print(
        f"{'EXECUTION':<20} {'STATUS':<17} {'AGENTS':>6} {'CHECKPOINTS':>11} {'BYTES':>10}"
        "  LAST ACTIVITY"
    )
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["updated_at"] or 0))
        reason = f"  {row['reason']}" if row.get("reason") else ""
        print(
            _printable(
                f"{row['execution_id']:<20} {row['status']:<17} {row['agents']:>6} "
                f"{row['checkpoints']:>11} {row['bytes']:>10,}  {when}{reason}"
            )
        )
    return 0


def _ls_fancy(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    from durably._console import STATUS_STYLE, iso, make_console, relative

    table = Table()
    for name, justify in (
        ("EXECUTION", "left"),
        ("STATUS", "left"),
        ("AGENTS", "right"),
        ("CHECKPOINTS", "right"),
        ("BYTES", "right"),
        ("LAST ACTIVITY", "left"),
        ("AGO", "right"),
        ("REASON", "left"),
    ):
        table.add_column(
            name,
            justify=justify,  # type: ignore[arg-type]
            overflow="fold" if name == "REASON" else "ellipsis",
        )
    now = time.time()
    for row in rows:
        table.add_row(
            _printable(row["execution_id"]),
            Text(row["status"], style=STATUS_STYLE.get(row["status"], "")),
            str(row["agents"]),
            str(row["checkpoints"]),
            f"{row['bytes']:,}",
            iso(row["updated_at"]),
            relative(row["updated_at"], now),
            Text(_printable(row.get("reason") or ""), style="dim"),
        )
    make_console(sys.stdout).print(table)


async def _check_damage(provider: CheckpointProvider, row: dict[str, Any]) -> None:
    """Show an unfinished execution whose latest checkpoint cannot be read as
    ``damaged``, with the error as its reason (a worker skips it; nothing is written to
    it, so that restoring the damaged object from a backup repairs it)."""
    try:
        await provider.load_latest_checkpoint(row["execution_id"])
    except (CorruptObjectError, UnsupportedFormatError) as exc:
        row["status"] = "damaged"
        row["reason"] = " ".join(str(exc).split())


async def _failure_reason(provider: Any, execution_id: str) -> str | None:
    """Why a failed execution failed: the reason a worker recorded, else the error the
    program ended with (from the final record's document, decoded inertly)."""
    from durably.checkpoint import META_REASON, CheckpointManager
    from durably.errors import DurablyError as _Error

    try:
        latest = await provider.load_latest_checkpoint(execution_id)
        if latest is None:
            return None
        reason = latest.metadata.get(META_REASON)
        if reason:
            return str(reason)
        manager = CheckpointManager(execution_id, provider)
        doc = (await manager.decode(latest, unresolved=[])).get("doc", {})
    except _Error as exc:
        return f"(cannot be read: {exc})"
    result = doc.get("result") if isinstance(doc, dict) and doc.get("type") == "final" else None
    if result is None:
        return None
    text = " ".join(str(result).split())
    return text if len(text) <= 200 else text[:197] + "..."


async def _show(args: argparse.Namespace) -> int:
    from durably import open_store
    from durably._inspect import describe_execution, render_show
    from durably.checkpoint import CheckpointManager

    config = _config(args)
    async with open_store(config=config) as provider:
        data = await describe_execution(
            CheckpointManager(args.execution_id, provider, config=config), at=args.at
        )
    if data is None:
        raise NotFoundError(f"no execution {args.execution_id!r}")
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    from durably._console import fancy

    if fancy(sys.stdout):
        _show_fancy(data)
    else:
        print(render_show(data))
    return 0


def _show_fancy(data: dict[str, Any]) -> None:
    """``show`` on a terminal: the plain text, coloured, then the transcript as a chat."""
    from rich.text import Text

    from durably._console import STATUS_STYLE, agent_style, iso, make_console, relative
    from durably._inspect import render_show

    console = make_console(sys.stdout)
    lines = render_show(data).splitlines()
    head = Text()
    head.append(f"execution {data['execution_id']}", style="bold")
    head.append(": ")
    head.append(data["status"], style=f"bold {STATUS_STYLE.get(data['status'], '')}")
    head.append(
        f"   last activity {iso(data.get('updated_at'))} ({relative(data.get('updated_at'))})",
        style="dim",
    )
    console.print(head)
    section = ""
    for line in lines[1:]:
        if not line.startswith(" "):
            section = line.split(":")[0]
        style = ""
        if line.startswith(("error:", "tool error:")):
            style = "red"
        elif line.startswith("result:"):
            style = "green"
        elif line.startswith("agent "):
            style = f"bold {agent_style(line.split()[1])}"
        elif section == "transcript" and line.startswith("    "):
            agent, _, _ = line.strip().partition(": ")
            text = Text(line)
            text.stylize(f"bold {agent_style(agent)}", 4, 4 + len(agent))
            console.print(text)
            continue
        elif section == "user input" and line.startswith("    "):
            style = "green"
        elif not line.startswith(" "):
            style = "bold"
        console.print(Text(line, style=style))


def _age(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return float(text[:-1]) * units[text[-1]]
    if text.replace(".", "", 1).isdigit():
        return float(text)
    raise argparse.ArgumentTypeError(f"cannot read age {text!r}: use e.g. 90s, 30m, 12h, 7d")


async def _gc(args: argparse.Namespace) -> int:
    """Delete completed executions (first: that frees space) and prune checkpoints.

    An execution that did not complete is deleted only with ``--unfinished-older-than``
    and ``--force`` (it may be running, waiting for input or crashed and resumable).

    A damaged execution is reported and skipped; a store error on one execution is
    reported and the others are still collected (exit 1 at the end).
    """
    from durably import open_store
    from durably.errors import CorruptObjectError, UnsupportedFormatError
    from durably.storage import META_BASE, META_STATUS

    if (
        args.keep_last is None
        and args.completed_older_than is None
        and args.unfinished_older_than is None
    ):
        raise _UsageError("gc needs --keep-last N and/or --completed-older-than AGE")
    if args.unfinished_older_than is not None and not args.force:
        raise _UsageError(
            "--unfinished-older-than deletes executions that did not complete "
            "(running, waiting for input, stopped, crashed, failed): add "
            "--force to mean it (and --dry-run to list them first)"
        )
    if args.keep_last is not None and args.keep_last < 1:
        raise _UsageError("--keep-last must be at least 1")
    dry = args.dry_run
    verb = "would delete" if dry else "deleted"
    problems = 0
    doomed: list[tuple[str, int]] = []  # executions to delete, with their bytes
    unfinished: dict[str, str] = {}  # those of them that did not complete: their status
    prunable: list[str] = []
    async with open_store(config=_config(args)) as provider:
        now = time.time()
        async for execution in provider.iter_executions():
            execution_id = execution.execution_id
            try:
                infos = [info async for info in provider.iter_checkpoints(execution_id)]
                if not infos:
                    continue
                latest = infos[-1]
                status = latest.metadata.get(META_STATUS, "running")
                if status == "completed":
                    age = args.completed_older_than
                else:  # never without --force (checked above)
                    age = args.unfinished_older_than
                if age is not None and latest.created_at < now - age:
                    if status != "completed":
                        unfinished[execution_id] = await _shown_status(
                            provider, execution_id, status
                        )
                    doomed.append(
                        (
                            execution_id,
                            sum(i.size for i in infos) + await _blob_bytes(provider, execution_id),
                        )
                    )
                elif args.keep_last:
                    prunable.append(execution_id)
            except (CorruptObjectError, UnsupportedFormatError) as exc:
                problems += 1
                print(
                    _printable(f"skipped damaged execution {execution_id}: {exc}"), file=sys.stderr
                )
            except StoreError as exc:
                problems += 1
                print(_printable(f"skipped execution {execution_id}: {exc}"), file=sys.stderr)
        if doomed and not dry and not args.yes and sys.stdin.isatty():
            total = sum(size for _, size in doomed)
            what = (
                f"{len(doomed)} completed execution(s)"
                if not unfinished
                else f"{len(doomed)} execution(s), {len(unfinished)} of them unfinished"
            )
            answer = await asyncio.to_thread(input, f"delete {what} ({_bytes(total)})? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted", file=sys.stderr)
                return 1
        freed = 0
        executions = 0
        for execution_id, size in doomed:
            status = f", {unfinished[execution_id]}" if execution_id in unfinished else ""
            if dry:
                print(_printable(f"would delete execution {execution_id} ({_bytes(size)}{status})"))
            else:
                try:
                    if not await provider.delete_execution(execution_id):
                        continue
                except StoreError as exc:
                    problems += 1
                    print(
                        _printable(f"could not delete execution {execution_id}: {exc}"),
                        file=sys.stderr,
                    )
                    continue
            executions += 1
            freed += size
        checkpoints = 0
        pending = 0  # bytes pruned but not returned (no room to compact)
        for execution_id in prunable:
            try:
                infos = [info async for info in provider.iter_checkpoints(execution_id)]
                plan = _prune_plan(infos, args.keep_last, META_BASE)
                if not plan:
                    continue
                sizes = {info.seq: info.size for info in infos}
                if dry:
                    deleted = plan
                else:
                    deleted = await provider.prune(execution_id, keep_last=args.keep_last)
                size = sum(sizes.get(seq, 0) for seq in deleted)
                checkpoints += len(deleted)
                compact = getattr(provider, "compact", None)
                if dry or compact is None or not deleted:
                    freed += size
                    continue
                try:
                    await compact(execution_id)
                    freed += size
                except StoreError as exc:
                    pending += size
                    print(
                        _printable(
                            f"execution {execution_id}: pruned, but its log could "
                            f"not be compacted yet: {exc}"
                        ),
                        file=sys.stderr,
                    )
            except (CorruptObjectError, UnsupportedFormatError) as exc:
                problems += 1
                print(
                    _printable(f"skipped damaged execution {execution_id}: {exc}"), file=sys.stderr
                )
            except StoreError as exc:
                problems += 1
                print(
                    _printable(f"could not prune execution {execution_id}: {exc}"), file=sys.stderr
                )
    print(
        f"{verb} {executions} execution(s) and {checkpoints} checkpoint(s); "
        f"{'would free' if dry else 'freed'} {_bytes(freed)}"
    )
    if pending:
        print(
            f"{_bytes(pending)} of pruned checkpoints are returned once there is room to "
            "compact their logs: run gc again after freeing space",
            file=sys.stderr,
        )
    return 1 if problems else 0


async def _shown_status(provider: CheckpointProvider, execution_id: str, status: str) -> str:
    """What ``ls`` calls an unfinished execution (running, stopped, crashed, ...)."""
    from durably._inspect import owner_status

    try:
        return (await owner_status(provider, execution_id, status))[0]
    except StoreError:
        return status


def _prune_plan(infos: list[Any], keep_last: int, meta_base: str) -> list[int]:
    """The checkpoints ``prune(keep_last=...)`` deletes (what ``gc --dry-run`` shows)."""
    if not infos:
        return []
    latest = infos[-1]
    protected_from = latest.seq
    base = latest.metadata.get(meta_base)
    if base is not None and base.isdigit():
        protected_from = min(protected_from, int(base))
    return [
        info.seq
        for index, info in enumerate(infos)
        if info.seq < protected_from and index < len(infos) - keep_last
    ]


async def _blob_bytes(provider: CheckpointProvider, execution_id: str) -> int:
    total = 0
    cursor: str | None = None
    while True:
        page = await provider.list_blobs(execution_id, cursor=cursor)
        total += sum(blob.size for blob in page.items)
        if page.next_cursor is None:
            return total
        cursor = page.next_cursor


def _bytes(count: int) -> str:
    return f"{count:,} bytes"


class _UsageError(Exception):
    """A bad combination of command-line arguments (exit status 2)."""


async def _submit(args: argparse.Namespace) -> int:
    from durably.runner import submit_program

    spec = _llm_spec(args)
    if spec is None:
        raise ConfigError(
            "no LLM given", key="--llm", fix="Pass --llm scripted:PATH or --llm openai:MODEL"
        )
    execution_id = await submit_program(
        args.program,
        llm=spec,
        execution_id=args.execution_id,
        inputs=args.input or [],
        config=_config(args),
    )
    print(execution_id)
    return 0


async def _worker(args: argparse.Namespace) -> int:
    import logging

    from durably.config import load_worker_config
    from durably.worker import supervise

    if args.concurrency < 1:
        raise _UsageError("--concurrency must be at least 1")
    if not args.poll > 0 or args.poll == float("inf"):
        raise _UsageError("--poll must be a positive number of seconds")
    limits = load_worker_config(
        config_file=getattr(args, "config", None),
        overrides={
            "max_attempts": args.max_attempts,
            "statement_timeout": args.statement_timeout,
            "backoff": args.backoff,
            "max_backoff": args.max_backoff,
            "cpu_limit": args.cpu_limit,
            "memory_limit": args.memory_limit,
        },
    )
    config = _config(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from durably._redact import redact_logs

    redact_logs()
    summary = await supervise(
        concurrency=args.concurrency, poll=args.poll, once=args.once, config=config, limits=limits
    )
    print(
        f"worker finished {summary.finished} execution(s): {len(summary.completed)} "
        f"completed, {len(summary.failed)} failed, {len(summary.damaged)} damaged "
        "(skipped)",
        file=sys.stderr,
    )
    for execution_id, reason in {**summary.failed, **summary.damaged}.items():
        print(_printable(f"  {execution_id}: {reason}"), file=sys.stderr)
    return 1 if summary.failed or summary.damaged else 0


async def _migrate(args: argparse.Namespace) -> int:
    import importlib

    from durably import open_store

    config = _config(args)
    provider = open_store(config=config)
    package = importlib.import_module(type(provider).__module__.split(".")[0])
    await provider.close()
    migrate = getattr(package, "migrate_async", None)
    if migrate is None:
        print(f"{config.scheme}:// stores have no schema to migrate")
        return 0
    report = await migrate(config.store, dict(config.provider_options()))
    before, after = getattr(report, "before", None), getattr(report, "after", None)
    if before is None:
        print(report)
    elif before == after:
        print(f"schema {report.schema} is up to date (version {after})")
    else:
        print(f"schema {report.schema} migrated from version {before} to {after}")
    return 0


async def _fork(args: argparse.Namespace) -> int:
    from durably.timetravel import fork

    new_id = await fork(
        args.execution_id,
        at=args.at,
        at_llm_call=args.at_llm_call,
        new_id=args.new_id,
        config=_config(args),
    )
    print(new_id)
    print(f"resume it with: durably resume {new_id} [--llm SPEC]", file=sys.stderr)
    return 0


def _printable(text: str) -> str:
    """``text`` with terminal control characters escaped (stored text is untrusted)."""
    from durably._inspect import _printable as escape

    return escape(text)


def _dumps(value: object, limit: int) -> str:
    return json.dumps(value, default=repr, ensure_ascii=False)[:limit]


async def _diff(args: argparse.Namespace) -> int:
    points = args.points
    if len(points) == 3 and points[1].isdigit() and points[2].isdigit():
        return await _diff_one(args, points[0], int(points[1]), int(points[2]))
    if len(points) != 2:
        raise _UsageError(
            "diff takes EXECUTION[@CHECKPOINT] EXECUTION[@CHECKPOINT], or "
            "EXECUTION K1 K2 (two checkpoints of one execution)"
        )
    from durably.timetravel import compare, parse_point

    for point in points:
        try:
            parse_point(point)
        except ValueError as exc:
            raise _UsageError(str(exc)) from None
    data = await compare(points[0], points[1], config=_config(args))
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False, default=repr))
        return 0
    out = _Out()
    names = []
    for side in ("a", "b"):
        where = data[side]
        origin = f", forked from {where['forked_from']}" if where.get("forked_from") else ""
        names.append(f"{where['execution_id']}@{where['checkpoint']} ({where['status']}{origin})")
    out.line(f"--- {names[0]}", "bold red")
    out.line(f"+++ {names[1]}", "bold green")
    same = True
    for name, agent in data["agents"].items():
        old, new = agent["call_stack"]
        if old != new:
            same = False
            out.line(f"  {name} call stack: {old} -> {new}", "yellow")
        for part in ("state", "locals"):
            prefix = "state." if part == "state" else ""
            for key, value in agent[part]["added"].items():
                same = False
                out.line(f"+ {name} {prefix}{key} = {_dumps(value, 120)}", "green")
            for key in agent[part]["removed"]:
                same = False
                out.line(f"- {name} {prefix}{key}", "red")
            for key, (before, after) in agent[part]["changed"].items():
                same = False
                out.line(
                    f"~ {name} {prefix}{key}: {_dumps(before, 60)} -> {_dumps(after, 60)}", "yellow"
                )
    said = data["transcript"]
    out.line(f"transcript: {said['common']} line(s) in common", "bold")
    for side, mark, style in (("a", "-", "red"), ("b", "+", "green")):
        for line in said[side]:
            same = False
            out.line(f"{mark} {line['agent']}: {line['text']}", style)
    inputs = data["inputs"]
    for side, mark, style in (("a", "-", "red"), ("b", "+", "green")):
        for text in inputs[side]:
            same = False
            out.line(f"{mark} you: {text}", style)
    calls = data["llm_calls"]
    other = calls["same_prompt_other_response"]
    differs = f"; {other} with the same prompt answered differently" if other else ""
    out.line(f"LLM calls: {calls['common']} in common{differs}", "bold")
    for side, mark, style in (("a", "-", "red"), ("b", "+", "green")):
        for call in calls[side]:
            same = False
            out.line(
                f"{mark} {call['number']}. {call['agent']}.{call['playbook']} "
                f"({call['chars']} chars): {call['first_line']}",
                style,
            )
    for key in ("result", "error"):
        if data[key] is not None:
            same = False
            before, after = data[key]
            out.line(f"- {key}: {_dumps(before, 200)}", "red")
            out.line(f"+ {key}: {_dumps(after, 200)}", "green")
    if data["tool_errors"] is not None:
        same = False
        for index, mark, style in ((0, "-", "red"), (1, "+", "green")):
            for error in data["tool_errors"][index]:
                out.line(f"{mark} tool error: {_tool_error_text(error)}", style)
    if same:
        out.line("no difference in state, transcript, inputs, LLM calls or result", "green")
    return 0


class _Out:
    """Lines on stdout: coloured on a terminal, plain otherwise (control characters in
    stored text escaped either way)."""

    def __init__(self) -> None:
        from durably._console import fancy, make_console

        self.console = make_console(sys.stdout) if fancy(sys.stdout) else None

    def line(self, text: str, style: str | None = None) -> None:
        if self.console is None:
            print(_printable(text))
        else:
            self.console.print(_printable(text), style=style)


def _tool_error_text(error: dict[str, Any]) -> str:
    from durably._inspect import tool_error_text

    return tool_error_text(error)


async def _diff_one(args: argparse.Namespace, execution_id: str, a: int, b: int) -> int:
    from durably.timetravel import diff

    data = await diff(execution_id, a, b, config=_config(args))
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False, default=repr))
        return 0
    print(_printable(f"{execution_id}: checkpoint {a} -> {b}"))
    for name, agent in data["agents"].items():
        old, new = agent["call_stack"]
        if old != new:
            print(_printable(f"  {name} call stack: {old} -> {new}"))
        for part in ("state", "locals"):
            prefix = "state." if part == "state" else ""
            for key, value in agent[part]["added"].items():
                print(_printable(f"  {name} + {prefix}{key} = {_dumps(value, 120)}"))
            for key in agent[part]["removed"]:
                print(_printable(f"  {name} - {prefix}{key}"))
            for key, (before, after) in agent[part]["changed"].items():
                print(
                    _printable(
                        f"  {name} ~ {prefix}{key}: {_dumps(before, 60)} -> {_dumps(after, 60)}"
                    )
                )
    for line in data["transcript"]:
        print(_printable(f"  said: {line['agent']}: {line['text']}"))
    print(f"  LLM calls: +{data['llm_calls']}; journal entries: {len(data['journal'])}")
    for entry in data["journal"]:
        print(_printable(f"    #{entry['seq']} agent {entry['agent']}: {entry['kind']}"))
    return 0


async def _history(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from durably._console import fancy, iso, relative
    from durably.timetravel import history

    points = await history(args.execution_id, config=_config(args))
    if args.json:
        print(json.dumps([asdict(p) for p in points], indent=2, ensure_ascii=False))
        return 0
    now = time.time()
    rows = []
    for p in points:
        agent = f"{p.agent_class}({p.agent})" if p.agent_class else (p.agent or "-")
        rows.append(
            (
                str(p.seq),
                iso(p.created_at),
                relative(p.created_at, now),
                agent,
                p.kind,
                str(p.llm_calls),
                p.status,
                ", ".join(p.operations) or "-",
                p.statement or "",
            )
        )
    if fancy(sys.stdout):
        from rich.table import Table

        from durably._console import STATUS_STYLE, agent_style, make_console

        table = Table(title=f"history of {args.execution_id}", title_justify="left")
        for name, justify in (
            ("SEQ", "right"),
            ("TIME", "left"),
            ("AGO", "right"),
            ("AGENT", "left"),
            ("KIND", "left"),
            ("LLM CALLS", "right"),
            ("STATUS", "left"),
            ("OPERATIONS", "left"),
            ("STATEMENT", "left"),
        ):
            table.add_column(
                name,
                justify=justify,  # type: ignore[arg-type]
                overflow="fold" if name == "STATEMENT" else "ellipsis",
            )
        for p, row in zip(points, rows, strict=True):
            cells = [_printable(cell) for cell in row]
            table.add_row(
                *cells[:3],
                _styled(cells[3], agent_style(p.agent_class or "")),
                cells[4],
                cells[5],
                _styled(cells[6], STATUS_STYLE.get(p.status)),
                cells[7],
                _styled(cells[8], "dim"),
            )
        make_console(sys.stdout).print(table)
        return 0
    print(
        f"{'SEQ':>5} {'TIME':<19} {'AGO':>10} {'AGENT':<22} {'KIND':<9} {'LLM CALLS':>9}  "
        f"{'STATUS':<9} {'OPERATIONS':<28} STATEMENT"
    )
    for row in rows:
        print(
            _printable(
                f"{row[0]:>5} {row[1]:<19} {row[2]:>10} {row[3]:<22} {row[4]:<9} "
                f"{row[5]:>9}  {row[6]:<9} {row[7]:<28} {row[8]}".rstrip()
            )
        )
    return 0


def _styled(text: str, style: str | None) -> Any:
    from rich.text import Text

    return Text(text, style=style or "")


async def _demo(args: argparse.Namespace) -> int:
    from durably._demo import run_demo
    from durably.config import DurabilityConfig

    config = _config(args)
    if args.store is None and config.store == DurabilityConfig().store:
        config = None  # nothing configured: a temporary store of the demo's own
    return await run_demo(keep=args.keep, config=config, config_file=args.config)


async def _init(args: argparse.Namespace) -> int:
    from durably._starter import PROGRAM, write_starter

    for path in write_starter(args.directory):
        print(f"wrote {path}")
    print(f"run it with: {_cd(args.directory)}durably run {PROGRAM}", file=sys.stderr)
    return 0


def _cd(directory: str) -> str:
    """``cd DIR && `` unless DIR is the current directory."""
    here = os.path.realpath(directory) == os.path.realpath(os.curdir)
    return "" if here else f"cd {directory} && "


def version_text() -> str:
    """``durably --version``: this distribution's version, then every installed durably
    distribution, storage provider (URL scheme) and plugin, with their versions."""
    from importlib import metadata

    from durably._plugins import HOOK_GROUP, PROVIDER_GROUP

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    lines = [f"durably {version('durably')} (Python {sys.version.split()[0]})"]
    names = sorted(
        {
            (dist.metadata["Name"] or "").lower()
            for dist in metadata.distributions()
            if (dist.metadata["Name"] or "").lower().replace("_", "-").startswith("durably-")
        }
    )
    lines.extend(f"  {name} {version(name)}" for name in names)
    for label, group in (("storage providers", PROVIDER_GROUP), ("plugins", HOOK_GROUP)):
        found = []
        for ep in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            owner = f" ({dist.name} {dist.version})" if dist is not None else ""
            found.append(f"{ep.name}{'://' if group == PROVIDER_GROUP else ''}{owner}")
        lines.append(f"{label}: {', '.join(found) if found else 'none'}")
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str = argparse.SUPPRESS,
        default: str = argparse.SUPPRESS,
        help: str | None = None,
    ) -> None:
        super().__init__(
            option_strings=option_strings, dest=dest, default=default, nargs=0, help=help
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(version_text())
        parser.exit()


EXIT_STATUS_HELP = """\
exit status:
  0    success: the execution completed (run, resume), or the command did what was
       asked; never for a failed execution
  1    the execution failed (recorded as failed; `durably resume` retries it), or
       `worker --once` ended with failed or damaged executions, or `gc` skipped some
  2    usage or configuration error: a bad argument, durably.toml or store URL, an
       unknown or damaged execution, a changed program, an execution another live
       process holds (resume without --wait)
  3    the lease was lost: another process took the execution over while this one
       ran (it was paused past its lease); nothing was written after that
  130  interrupted (Ctrl-C)

Errors are one line on stderr; --debug (or DURABLY_DEBUG=1) adds the traceback. A
reader that goes away (`durably history ID | head`) ends ls/show/history/diff quietly
with 0.
Output is plain text (no colours or control codes) when piped or with NO_COLOR set."""


LLM_HELP = (
    "scripted:PATH[?chunk_seed=N&delay=SECONDS] (responses played back from a JSON "
    "file; delay waits before each chunk, e.g. 0.2 to kill a run by hand), "
    "openai:MODEL, azure-openai:DEPLOYMENT, anthropic:MODEL, or a plugin's "
    "PREFIX:REST (docs/guides/llm.md); default: DURABLY_LLM, else [llm] spec in "
    "durably.toml"
)


def build_parser() -> argparse.ArgumentParser:
    """The ``durably`` command's argument parser (its ``--help`` lists the exit statuses)."""
    parser = argparse.ArgumentParser(
        prog="durably",
        description="Durable execution for LLM agent programs: every await is a checkpoint.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        "-V",
        action=_VersionAction,
        help="print the versions of durably, its installed providers and plugins, and exit",
    )
    parser.add_argument("--debug", action="store_true", default=False, help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def store_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--store", help="store URL (default: from durably.toml, else file://.durably)"
        )
        p.add_argument("--config", help="a durably.toml to read instead of ./durably.toml")

    run = sub.add_parser(
        "run",
        help="run a program from its beginning",
        description="Run PROGRAM durably; prints what agents say to the user.",
    )
    run.add_argument("program", help="the program file (a .py defining Agent classes)")
    run.add_argument("--llm", metavar="SPEC", help=LLM_HELP)
    run.add_argument("--execution-id", help="id of the new execution (default: random)")
    run.add_argument(
        "--input",
        action="append",
        metavar="TEXT",
        help="an answer to the user's next Yield; repeat for more (stored with the execution)",
    )
    store_options(run)
    run.set_defaults(handler=_run)

    resume = sub.add_parser(
        "resume",
        help="resume an execution from its latest checkpoint",
        description="Restore EXECUTION_ID and continue it to the end.",
    )
    resume.add_argument("execution_id")
    resume.add_argument(
        "--llm",
        metavar="SPEC",
        help="use another LLM than the one recorded in the execution: " + LLM_HELP,
    )
    resume.add_argument(
        "--allow-changed-program",
        action="store_true",
        help="resume even if the program file changed",
    )
    resume.add_argument(
        "--wait",
        action="store_true",
        help="if another live process holds the execution, wait until it "
        "finishes or its lease expires instead of failing (a dead owner's "
        "lease is taken over at once, with or without --wait)",
    )
    resume.add_argument(
        "--input",
        action="append",
        metavar="TEXT",
        help="an answer to the user's next Yield, after those recorded with "
        "the execution; repeat for more",
    )
    store_options(resume)
    resume.set_defaults(handler=_resume)

    submit = sub.add_parser(
        "submit",
        help="create an execution for a worker to run",
        description="Create an execution of PROGRAM without running it; "
        "prints its id. `durably worker` (or `durably resume`) runs it.",
    )
    submit.add_argument("program")
    submit.add_argument("--llm", metavar="SPEC", help=LLM_HELP)
    submit.add_argument("--execution-id")
    submit.add_argument("--input", action="append", metavar="TEXT")
    store_options(submit)
    submit.set_defaults(handler=_submit)

    worker = sub.add_parser(
        "worker",
        help="resume orphaned executions (run on many machines)",
        description="Claim executions whose lease expired and that are not "
        "finished and resume each in a supervised child process (limits "
        "and retries: the [worker] table of durably.toml). Run one per "
        "machine.",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="executions resumed at once (default 4)",
    )
    worker.add_argument(
        "--poll",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often to look for work (default 1)",
    )
    worker.add_argument(
        "--once",
        action="store_true",
        help="exit when no resumable execution is left (status 1 if some failed or were damaged)",
    )
    worker.add_argument(
        "--max-attempts",
        type=int,
        metavar="N",
        help="failed attempts before an execution is marked failed "
        "(default: [worker] max_attempts, 3)",
    )
    worker.add_argument(
        "--statement-timeout",
        type=float,
        metavar="SECONDS",
        help="kill an attempt that makes no progress for this long "
        "(default: [worker] statement_timeout, 300; 0: no limit)",
    )
    worker.add_argument(
        "--backoff",
        type=float,
        metavar="SECONDS",
        help="wait before an execution's second attempt, doubled for each "
        "further one (default: [worker] backoff, 1)",
    )
    worker.add_argument(
        "--max-backoff",
        type=float,
        metavar="SECONDS",
        help="the longest wait between two attempts (default: [worker] max_backoff, 300)",
    )
    worker.add_argument(
        "--cpu-limit",
        type=float,
        metavar="SECONDS",
        help="CPU seconds one attempt may use, RLIMIT_CPU (default: [worker] "
        "cpu_limit, 0: no limit)",
    )
    worker.add_argument(
        "--memory-limit",
        metavar="SIZE",
        help="address space one attempt may map, RLIMIT_AS, e.g. 2GiB "
        "(default: [worker] memory_limit, 0: no limit)",
    )
    store_options(worker)
    worker.set_defaults(handler=_worker)

    migrate = sub.add_parser(
        "migrate",
        help="create or upgrade the store's schema",
        description="Run the schema migrations of the store's provider "
        "(the migrate_async(url, options) function of its package, where "
        "it has one, e.g. postgresql://); safe to run repeatedly and from "
        "several machines at once. Stores without a schema have nothing "
        "to migrate.",
    )
    store_options(migrate)
    migrate.set_defaults(handler=_migrate)

    ls = sub.add_parser("ls", help="list executions")
    ls.add_argument("--json", action="store_true", help="print JSON")
    store_options(ls)
    ls.set_defaults(handler=_ls)

    show = sub.add_parser("show", help="show an execution's latest checkpoint")
    show.add_argument("execution_id")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.add_argument(
        "--at",
        type=int,
        metavar="CHECKPOINT",
        help="show checkpoint CHECKPOINT instead of the latest",
    )
    store_options(show)
    show.set_defaults(handler=_show)

    history = sub.add_parser("history", help="list an execution's checkpoints with LLM calls")
    history.add_argument("execution_id")
    history.add_argument("--json", action="store_true")
    store_options(history)
    history.set_defaults(handler=_history)

    fork = sub.add_parser(
        "fork",
        help="copy an execution up to an earlier checkpoint",
        description="Create a new execution whose state is that of a checkpoint "
        "of EXECUTION_ID; `durably resume NEW [--llm SPEC]` continues it with "
        "fresh LLM calls. The original is untouched.",
    )
    fork.add_argument("execution_id")
    point = fork.add_mutually_exclusive_group(required=True)
    point.add_argument("--at", type=int, metavar="CHECKPOINT", help="a checkpoint number")
    point.add_argument(
        "--at-llm-call",
        type=int,
        metavar="N",
        help="right after the N-th LLM response was received",
    )
    fork.add_argument("--execution-id", dest="new_id", help="id of the new execution")
    store_options(fork)
    fork.set_defaults(handler=_fork)

    diff = sub.add_parser(
        "diff",
        help="compare two executions, or two checkpoints",
        usage="durably diff [-h] [--json] A[@CHECKPOINT] B[@CHECKPOINT]\n"
        "       durably diff [-h] [--json] EXECUTION K1 K2",
        description="Compare two points: each EXECUTION[@CHECKPOINT] (the latest checkpoint "
        "without @), e.g. a fork against its original (`durably diff kitchen-1@12 "
        "branch`), a resumed run against a baseline, or two checkpoints of one run "
        "(`durably diff k1@5 k1@20`): the agents' state, variables and call stacks, "
        "the transcript, the user's inputs and the LLM calls after what they have in "
        "common, the result. `durably diff EXECUTION K1 K2` lists what was journaled "
        "between checkpoints K1 < K2 of one execution.",
    )
    diff.add_argument(
        "points",
        nargs="+",
        metavar="POINT",
        help="EXECUTION[@CHECKPOINT] twice, or EXECUTION K1 K2",
    )
    diff.add_argument("--json", action="store_true", help="print one JSON object")
    store_options(diff)
    diff.set_defaults(handler=_diff)

    gc = sub.add_parser("gc", help="delete old checkpoints and completed executions")
    gc.add_argument(
        "--keep-last",
        type=int,
        metavar="N",
        help="keep the last N checkpoints of each execution (and what resume needs)",
    )
    gc.add_argument(
        "--completed-older-than",
        type=_age,
        metavar="AGE",
        help="delete completed executions older than AGE (e.g. 7d, 12h)",
    )
    gc.add_argument(
        "--unfinished-older-than",
        type=_age,
        metavar="AGE",
        help="also delete executions that did not complete (running, waiting "
        "for input, stopped, crashed, failed) whose last checkpoint is older "
        "than AGE; only with --force (without it, gc never deletes an "
        "unfinished execution)",
    )
    gc.add_argument("--force", action="store_true", help="allow --unfinished-older-than")
    gc.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be deleted and the bytes it would free; delete nothing",
    )
    gc.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="delete executions without asking (gc asks when stdin is a terminal)",
    )
    store_options(gc)
    gc.set_defaults(handler=_gc)

    demo = sub.add_parser(
        "demo",
        help="crash a bundled program mid-run and resume it",
        description="Runs a bundled two-agent program in a child process "
        "that kills itself in the middle of its 3rd LLM call, resumes it in "
        "a new process, and compares with an uninterrupted run.",
    )
    demo.add_argument("--keep", action="store_true", help="keep the demo's store directory")
    demo.add_argument(
        "--store",
        help="run the demo in this store (default: the store of "
        "durably.toml or DURABLY_STORE if one is configured, else a new "
        "temporary directory)",
    )
    demo.add_argument("--config", help="a durably.toml to read instead of ./durably.toml")
    demo.set_defaults(handler=_demo)

    init = sub.add_parser(
        "init",
        help="write a durably.toml and a starter program",
        description="Write DIR/durably.toml (every key with its default, "
        "commented out; [llm] spec set to the starter's scripted "
        "responses), DIR/hello.py and DIR/hello.scripted.json, so that "
        "`durably run hello.py` in DIR runs at once. Overwrites nothing: "
        "if one of the files exists, nothing is written (exit status 2).",
    )
    init.add_argument(
        "directory",
        nargs="?",
        default=".",
        metavar="DIR",
        help="where to write them (default: the current directory)",
    )
    init.set_defaults(handler=_init)
    from durably._scaffold import add_parser as add_new_provider_parser

    add_new_provider_parser(sub)  # durably new-provider NAME
    for command in sub.choices.values():  # `durably run --debug ...` too
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
        )
    return parser


DEBUG_HELP = "print the traceback of an error after its one-line message (as DURABLY_DEBUG=1 does)"


def _last_tool_error(args: argparse.Namespace, execution_id: str) -> str | None:
    """The last exception a Python tool of the execution raised (journaled), for the
    message of a run that then failed (its LLM was asked again and, say, had nothing)."""
    from durably import open_store
    from durably._events import journal_events
    from durably._inspect import tool_error_text
    from durably.checkpoint import CheckpointManager

    async def last() -> str | None:
        config = _config(args)
        async with open_store(config=config) as provider:
            errors, _ = await journal_events(
                CheckpointManager(execution_id, provider, config=config)
            )
        return tool_error_text(errors[-1]) if errors else None

    try:
        return asyncio.run(last())
    except Exception:
        return None


def _recorded(args: argparse.Namespace, execution_id: str) -> bool:
    """Whether the execution has a checkpoint (an error before it has one is an input
    error, e.g. a bad ``--llm``, not a failed execution)."""
    from durably import open_store

    async def check() -> bool:
        async with open_store(config=_config(args)) as provider:
            return await provider.load_latest_checkpoint(execution_id) is not None

    try:
        return asyncio.run(check())
    except Exception:
        return True


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
        # Only the lease watchdog cancels a command's task: another process took over.
        which = getattr(args, "started_execution", None)
        say(
            "stopped: ",
            f"{f'execution {which}' if which else 'the execution'} was "
            "cancelled: its lease was lost to another process (it wrote nothing after that)",
        )
        if debug:
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        return 3
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
        cause = _last_tool_error(args, execution_id) if execution_id else None
        say("error: ", f"{exc}{f' (after a tool failed: {cause})' if cause else ''}")
        return 1
    except BaseException as exc:  # what LLM code raised (SystemExit too), or a bad input
        execution_id = getattr(args, "started_execution", None)
        if (
            execution_id
            and args.command in ("run", "resume")
            and (not isinstance(exc, (ValueError, TypeError)) or _recorded(args, execution_id))
        ):
            say("", f"execution {execution_id} failed: {type(exc).__name__}: {exc}")
            return 1
        if isinstance(exc, (ValueError, TypeError, OverflowError, UnicodeError, OSError)):
            say("error: ", exc)
            return 2
        say("internal error: ", f"{type(exc).__name__}: {exc} (--debug shows the traceback)")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
