"""``durably gc``, ``worker`` and ``migrate``: keeping a store and running its executions."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import TYPE_CHECKING, Any

from durably._cli._common import UsageError, cli_config, printable
from durably.errors import StoreError

if TYPE_CHECKING:
    from durably.storage import CheckpointProvider

__all__ = ["gc_command", "migrate_command", "worker_command"]


async def gc_command(args: argparse.Namespace) -> int:
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
        raise UsageError("gc needs --keep-last N and/or --completed-older-than AGE")
    if args.unfinished_older_than is not None and not args.force:
        raise UsageError(
            "--unfinished-older-than deletes executions that did not complete "
            "(running, waiting for input, stopped, crashed, failed): add "
            "--force to mean it (and --dry-run to list them first)"
        )
    if args.keep_last is not None and args.keep_last < 1:
        raise UsageError("--keep-last must be at least 1")
    dry = args.dry_run
    verb = "would delete" if dry else "deleted"
    problems = 0
    doomed: list[tuple[str, int]] = []  # executions to delete, with their bytes
    unfinished: dict[str, str] = {}  # those of them that did not complete: their status
    prunable: list[str] = []
    async with open_store(config=cli_config(args)) as provider:
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
                    printable(f"skipped damaged execution {execution_id}: {exc}"), file=sys.stderr
                )
            except StoreError as exc:
                problems += 1
                print(printable(f"skipped execution {execution_id}: {exc}"), file=sys.stderr)
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
                print(printable(f"would delete execution {execution_id} ({_bytes(size)}{status})"))
            else:
                try:
                    if not await provider.delete_execution(execution_id):
                        continue
                except StoreError as exc:
                    problems += 1
                    print(
                        printable(f"could not delete execution {execution_id}: {exc}"),
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
                        printable(
                            f"execution {execution_id}: pruned, but its log could "
                            f"not be compacted yet: {exc}"
                        ),
                        file=sys.stderr,
                    )
            except (CorruptObjectError, UnsupportedFormatError) as exc:
                problems += 1
                print(
                    printable(f"skipped damaged execution {execution_id}: {exc}"), file=sys.stderr
                )
            except StoreError as exc:
                problems += 1
                print(
                    printable(f"could not prune execution {execution_id}: {exc}"), file=sys.stderr
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


async def worker_command(args: argparse.Namespace) -> int:
    """``durably worker``: supervise executions until stopped (``--once``: until none is left)."""
    import logging

    from durably.config import load_worker_config
    from durably.worker import supervise

    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if not args.poll > 0 or args.poll == float("inf"):
        raise UsageError("--poll must be a positive number of seconds")
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
    config = cli_config(args)
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
        print(printable(f"  {execution_id}: {reason}"), file=sys.stderr)
    return 1 if summary.failed or summary.damaged else 0


async def migrate_command(args: argparse.Namespace) -> int:
    """``durably migrate``: run the schema migrations of the store's provider, if it has any."""
    import importlib

    from durably import open_store

    config = cli_config(args)
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
