"""The ``durably`` command: run, resume, ls, show, gc, demo.

Exit status: 0 on success (also for resuming an execution that already completed), 1
when the program failed, 2 for usage errors, an unknown execution, bad configuration, a
store that cannot be used, or an execution another live process holds (resume without
``--wait``), 3 when another process took the execution over while this one ran (it was
paused or cut off past its lease; it wrote nothing after that), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from durably.errors import (
    ConfigError,
    DurablyError,
    FencedError,
    LeaseHeldError,
    NotFoundError,
    ProgramChangedError,
    StoreError,
)

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


class _Progress:
    """The current agent, playbook and step on stderr -- only when stderr is a terminal,
    so that piped output stays clean."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.shown = False

    def say(self, line: str) -> None:
        self._clear()
        print(line, flush=True)

    def step(self, agent: str, agent_id: str, stack: list[str]) -> None:
        if self.enabled:
            sys.stderr.write(f"\r\x1b[K  {agent}({agent_id}) {' > '.join(stack)}")
            sys.stderr.flush()
            self.shown = True

    def _clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            self.shown = False


async def _run(args: argparse.Namespace) -> int:
    from durably.runner import new_execution_id, run_program

    spec = _llm_spec(args)
    if spec is None:
        raise ConfigError("no LLM given", key="--llm",
                          fix="Pass --llm scripted:PATH or --llm openai:MODEL, or set [llm] spec "
                          "in durably.toml")
    config = _config(args)
    execution_id = args.execution_id or new_execution_id()
    args.started_execution = execution_id
    print(f"execution {execution_id}", file=sys.stderr, flush=True)
    progress = _Progress()
    result = await run_program(
        args.program, llm=spec, llm_options=_llm_options(args), execution_id=execution_id,
        inputs=args.input or [],
        interactive=not args.input and sys.stdin.isatty(), config=config,
        echo=progress.say, progress=progress.step,
    )
    progress._clear()
    return _report(result)


def _report(result: Any) -> int:
    if result.status == "already-completed":
        print(f"execution {result.execution_id} already completed", file=sys.stderr)
        return 0
    if result.status == "completed":
        if result.result is not None:
            print(f"result: {json.dumps(result.result, default=repr, ensure_ascii=False)}",
                  file=sys.stderr)
        return 0
    print(f"execution {result.execution_id} failed: {result.error}", file=sys.stderr)
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
        left = "" if exc.expires_at is None else (
            f"; lease expires in {max(0.0, exc.expires_at - time.time()):.0f} s")
        from durably._liveness import OwnerIdentity

        ident = OwnerIdentity.parse(exc.owner or "")
        holder = ident.label if ident else (exc.owner or "another process")
        alive = " (alive)" if exc.owner_alive else ""
        line = (f"waiting for {holder}{alive} to finish or let execution "
                f"{self.execution_id} go{left} (Ctrl-C to stop waiting)")
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
    progress = _Progress()
    countdown = _Countdown(args.execution_id)
    args.started_execution = args.execution_id

    def say(line: str) -> None:
        countdown.clear()
        progress.say(line)

    def notice(line: str) -> None:
        countdown.clear()
        print(line, file=sys.stderr, flush=True)

    try:
        result = await resume_execution(
            args.execution_id, llm=_llm_spec(args) if args.llm else None,
            llm_options=_llm_options(args), config=config,
            allow_changed_program=args.allow_changed_program,
            interactive=not args.input and sys.stdin.isatty(), echo=say, wait=args.wait,
            progress=progress.step, inputs=args.input or [], waiting=countdown,
            notice=notice,
        )
    finally:
        countdown.clear()
    progress._clear()
    return _report(result)


async def _ls(args: argparse.Namespace) -> int:
    from durably import open_store
    from durably._inspect import list_executions

    async with open_store(config=_config(args)) as provider:
        rows = await list_executions(provider)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no executions")
        return 0
    print(f"{'EXECUTION':<20} {'STATUS':<10} {'AGENTS':>6} {'CHECKPOINTS':>11} {'BYTES':>10}"
          "  LAST ACTIVITY")
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["updated_at"] or 0))
        print(_printable(f"{row['execution_id']:<20} {row['status']:<10} {row['agents']:>6} "
              f"{row['checkpoints']:>11} {row['bytes']:>10,}  {when}"))
    return 0


async def _show(args: argparse.Namespace) -> int:
    from durably import open_store
    from durably._inspect import describe_execution, render_show
    from durably.checkpoint import CheckpointManager

    config = _config(args)
    async with open_store(config=config) as provider:
        data = await describe_execution(CheckpointManager(args.execution_id, provider,
                                                          config=config), at=args.at)
    if data is None:
        raise NotFoundError(f"no execution {args.execution_id!r}")
    print(json.dumps(data, indent=2, ensure_ascii=False) if args.json else render_show(data))
    return 0


def _age(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return float(text[:-1]) * units[text[-1]]
    if text.replace(".", "", 1).isdigit():
        return float(text)
    raise argparse.ArgumentTypeError(f"cannot read age {text!r}: use e.g. 90s, 30m, 12h, 7d")


async def _gc(args: argparse.Namespace) -> int:
    from durably import open_store
    from durably.storage import META_STATUS

    deleted_checkpoints = 0
    deleted_executions = 0
    async with open_store(config=_config(args)) as provider:
        now = time.time()
        async for execution in provider.iter_executions():
            latest = await provider.load_latest_checkpoint(execution.execution_id)
            if latest is None:
                continue
            status = latest.metadata.get(META_STATUS)
            if (args.completed_older_than is not None and status == "completed"
                    and latest.info.created_at < now - args.completed_older_than):
                await provider.delete_execution(execution.execution_id)
                deleted_executions += 1
                continue
            if args.keep_last:
                deleted_checkpoints += len(await provider.prune(
                    execution.execution_id, keep_last=args.keep_last))
    print(f"deleted {deleted_executions} execution(s) and {deleted_checkpoints} checkpoint(s)")
    return 0


async def _submit(args: argparse.Namespace) -> int:
    from durably.runner import submit_program

    spec = _llm_spec(args)
    if spec is None:
        raise ConfigError("no LLM given", key="--llm", fix="Pass --llm scripted:PATH or "
                          "--llm openai:MODEL")
    execution_id = await submit_program(args.program, llm=spec, execution_id=args.execution_id,
                                        inputs=args.input or [], config=_config(args))
    print(execution_id)
    return 0


async def _worker(args: argparse.Namespace) -> int:
    import logging

    from durably.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from durably._redact import redact_logs

    redact_logs()
    finished = await run_worker(concurrency=args.concurrency, poll=args.poll, once=args.once,
                                config=_config(args))
    print(f"worker finished {finished} execution(s)", file=sys.stderr)
    return 0


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

    new_id = await fork(args.execution_id, at=args.at, at_llm_call=args.at_llm_call,
                        new_id=args.new_id, config=_config(args))
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
    from durably.timetravel import diff

    data = await diff(args.execution_id, args.a, args.b, config=_config(args))
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False, default=repr))
        return 0
    print(_printable(f"{args.execution_id}: checkpoint {args.a} -> {args.b}"))
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
                print(_printable(f"  {name} ~ {prefix}{key}: {_dumps(before, 60)} -> "
                                 f"{_dumps(after, 60)}"))
    for line in data["transcript"]:
        print(_printable(f"  said: {line['agent']}: {line['text']}"))
    print(f"  LLM calls: +{data['llm_calls']}; journal entries: {len(data['journal'])}")
    for entry in data["journal"]:
        print(_printable(f"    #{entry['seq']} agent {entry['agent']}: {entry['kind']}"))
    return 0


async def _history(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from durably.timetravel import history

    points = await history(args.execution_id, config=_config(args))
    if args.json:
        print(json.dumps([asdict(p) for p in points], indent=2))
        return 0
    print(f"{'SEQ':>5} {'KIND':<9} {'AGENT':<6} {'LLM CALLS':>9}  STATUS")
    for p in points:
        print(_printable(f"{p.seq:>5} {p.kind:<9} {p.agent or '-':<6} {p.llm_calls:>9}  "
                         f"{p.status}"))
    return 0


async def _demo(args: argparse.Namespace) -> int:
    from durably._demo import run_demo

    return await run_demo(keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="durably",
        description="Durable execution for LLM agent programs: every await is a checkpoint.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def store_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", help="store URL (default: from durably.toml, else "
                       "file://.durably)")
        p.add_argument("--config", help="a durably.toml to read instead of ./durably.toml")

    run = sub.add_parser("run", help="run a program from its beginning",
                         description="Run PROGRAM durably; prints what agents say to the user.")
    run.add_argument("program", help="the program file (a .py defining Agent classes)")
    run.add_argument("--llm", help="scripted:PATH[?chunk_seed=N] or openai:MODEL")
    run.add_argument("--execution-id", help="id of the new execution (default: random)")
    run.add_argument("--input", action="append", metavar="TEXT",
                     help="an answer to the user's next Yield; repeat for more (stored with "
                     "the execution)")
    store_options(run)
    run.set_defaults(handler=_run)

    resume = sub.add_parser("resume", help="resume an execution from its latest checkpoint",
                            description="Restore EXECUTION_ID and continue it to the end.")
    resume.add_argument("execution_id")
    resume.add_argument("--llm", help="override the LLM recorded in the execution")
    resume.add_argument("--allow-changed-program", action="store_true",
                        help="resume even if the program file changed")
    resume.add_argument("--wait", action="store_true",
                        help="if another live process holds the execution, wait until it "
                        "finishes or its lease expires instead of failing (a dead owner's "
                        "lease is taken over at once, with or without --wait)")
    resume.add_argument("--input", action="append", metavar="TEXT",
                        help="an answer to the user's next Yield, after those recorded with "
                        "the execution; repeat for more")
    store_options(resume)
    resume.set_defaults(handler=_resume)

    submit = sub.add_parser("submit", help="create an execution for a worker to run",
                            description="Create an execution of PROGRAM without running it; "
                            "prints its id. `durably worker` (or `durably resume`) runs it.")
    submit.add_argument("program")
    submit.add_argument("--llm", help="scripted:PATH or openai:MODEL")
    submit.add_argument("--execution-id")
    submit.add_argument("--input", action="append", metavar="TEXT")
    store_options(submit)
    submit.set_defaults(handler=_submit)

    worker = sub.add_parser("worker", help="resume orphaned executions (run on many machines)",
                            description="Claim executions whose lease expired and that are not "
                            "finished, resume them, renew their leases. Run one per machine.")
    worker.add_argument("--concurrency", type=int, default=4, metavar="N",
                        help="executions resumed at once (default 4)")
    worker.add_argument("--poll", type=float, default=1.0, metavar="SECONDS",
                        help="how often to look for work (default 1)")
    worker.add_argument("--once", action="store_true",
                        help="exit when no resumable execution is left")
    store_options(worker)
    worker.set_defaults(handler=_worker)

    migrate = sub.add_parser("migrate", help="create or upgrade the store's schema",
                             description="Run the store's schema migrations (PostgreSQL); safe "
                             "to run repeatedly and from several machines at once.")
    store_options(migrate)
    migrate.set_defaults(handler=_migrate)

    ls = sub.add_parser("ls", help="list executions")
    ls.add_argument("--json", action="store_true", help="print JSON")
    store_options(ls)
    ls.set_defaults(handler=_ls)

    show = sub.add_parser("show", help="show an execution's latest checkpoint")
    show.add_argument("execution_id")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.add_argument("--at", type=int, metavar="CHECKPOINT",
                      help="show checkpoint CHECKPOINT instead of the latest")
    store_options(show)
    show.set_defaults(handler=_show)

    history = sub.add_parser("history", help="list an execution's checkpoints with LLM calls")
    history.add_argument("execution_id")
    history.add_argument("--json", action="store_true")
    store_options(history)
    history.set_defaults(handler=_history)

    fork = sub.add_parser("fork", help="copy an execution up to an earlier checkpoint",
                          description="Create a new execution whose state is that of a checkpoint "
                          "of EXECUTION_ID; `durably resume NEW [--llm SPEC]` continues it with "
                          "fresh LLM calls. The original is untouched.")
    fork.add_argument("execution_id")
    point = fork.add_mutually_exclusive_group(required=True)
    point.add_argument("--at", type=int, metavar="CHECKPOINT", help="a checkpoint number")
    point.add_argument("--at-llm-call", type=int, metavar="N",
                       help="right after the N-th LLM response was received")
    fork.add_argument("--execution-id", dest="new_id", help="id of the new execution")
    store_options(fork)
    fork.set_defaults(handler=_fork)

    diff = sub.add_parser("diff", help="what changed between two checkpoints")
    diff.add_argument("execution_id")
    diff.add_argument("a", type=int)
    diff.add_argument("b", type=int)
    diff.add_argument("--json", action="store_true")
    store_options(diff)
    diff.set_defaults(handler=_diff)

    gc = sub.add_parser("gc", help="delete old checkpoints and completed executions")
    gc.add_argument("--keep-last", type=int, metavar="N",
                    help="keep the last N checkpoints of each execution (and what resume needs)")
    gc.add_argument("--completed-older-than", type=_age, metavar="AGE",
                    help="delete completed executions older than AGE (e.g. 7d, 12h)")
    store_options(gc)
    gc.set_defaults(handler=_gc)

    demo = sub.add_parser("demo", help="crash a bundled program mid-run and resume it",
                          description="Runs a bundled two-agent program in a child process "
                          "that kills itself in the middle of its 3rd LLM call, resumes it in "
                          "a new process, and compares with an uninterrupted run.")
    demo.add_argument("--keep", action="store_true", help="keep the demo's store directory")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``durably`` command."""
    from durably._redact import redact, redact_logs

    parser = build_parser()
    args = parser.parse_args(argv)
    redact_logs()  # no secret in any log line or message the command prints
    try:
        code: int = asyncio.run(args.handler(args))
        return code
    except KeyboardInterrupt:
        execution_id = getattr(args, "started_execution", None)
        if execution_id:
            print(f"interrupted; resume with: durably resume {execution_id}", file=sys.stderr)
        else:
            print("interrupted", file=sys.stderr)
        return 130
    except FencedError as exc:
        print(f"durably: stopped: {exc}", file=sys.stderr)
        return 3
    except (NotFoundError, ConfigError, LeaseHeldError, ProgramChangedError) as exc:
        print(f"durably: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"durably: store error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except DurablyError as exc:
        print(f"durably: error: {redact(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
