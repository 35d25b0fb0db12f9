"""The ``durably`` command's argument parser, its ``--help`` texts and ``--version``.

Every command's options are declared here; what a command does is the handler
:mod:`durably.cli` maps its name to (:func:`build_parser`'s ``handlers``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

__all__ = ["DEBUG_HELP", "EXIT_STATUS_HELP", "LLM_HELP", "Handler", "build_parser", "version_text"]

Handler = Callable[[argparse.Namespace], Awaitable[int]]
"""What runs a command: its parsed arguments in, its exit status out."""


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
       `worker --once` ended with failed or damaged executions, or `gc` skipped some,
       or the command was cancelled from within (an asyncio.CancelledError from the
       program, a library or a store call; resume such a run)
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


DEBUG_HELP = "print the traceback of an error after its one-line message (as DURABLY_DEBUG=1 does)"


def _age(text: str) -> float:
    """An ``AGE`` argument (``90s``, ``30m``, ``12h``, ``7d``, ``2w``, or seconds) in seconds."""
    units = dict(s=1, m=60, h=3600, d=86400, w=604800)
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return float(text[:-1]) * units[text[-1]]
    if text.replace(".", "", 1).isdigit():
        return float(text)
    raise argparse.ArgumentTypeError(f"cannot read age {text!r}: use e.g. 90s, 30m, 12h, 7d")


def build_parser(handlers: Mapping[str, Handler]) -> argparse.ArgumentParser:
    """The ``durably`` command's argument parser (its ``--help`` lists the exit statuses).

    Args:
        handlers: The coroutine function run for each command, by the command's name
            (``run``, ``resume``, ``submit``, ``worker``, ``migrate``, ``ls``, ``show``,
            ``history``, ``fork``, ``diff``, ``gc``, ``demo``, ``init``); parsed
            arguments carry it as ``handler``. ``new-provider`` brings its own.
    """
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
    run.set_defaults(handler=handlers["run"])

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
    resume.set_defaults(handler=handlers["resume"])

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
    submit.set_defaults(handler=handlers["submit"])

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
    worker.set_defaults(handler=handlers["worker"])

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
    migrate.set_defaults(handler=handlers["migrate"])

    ls = sub.add_parser("ls", help="list executions")
    ls.add_argument("--json", action="store_true", help="print JSON")
    store_options(ls)
    ls.set_defaults(handler=handlers["ls"])

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
    show.set_defaults(handler=handlers["show"])

    history = sub.add_parser("history", help="list an execution's checkpoints with LLM calls")
    history.add_argument("execution_id")
    history.add_argument("--json", action="store_true")
    store_options(history)
    history.set_defaults(handler=handlers["history"])

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
    fork.set_defaults(handler=handlers["fork"])

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
    diff.set_defaults(handler=handlers["diff"])

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
    gc.set_defaults(handler=handlers["gc"])

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
    demo.set_defaults(handler=handlers["demo"])

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
    init.set_defaults(handler=handlers["init"])
    from durably._scaffold import add_parser as add_new_provider_parser

    add_new_provider_parser(sub)  # durably new-provider NAME
    for command in sub.choices.values():  # `durably run --debug ...` too
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
        )
    return parser
