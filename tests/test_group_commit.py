"""Group commit under a crash: SIGKILL a process while 100 executions write checkpoints
concurrently to the filesystem store, then resume them all.

The filesystem provider runs the durable writes of concurrent executions in a thread
pool so that their ``fdatasync`` calls share journal commits
(``durably_filesystem._syncpool``); a save must still return only once its own record is
durable. The child process (this file, run as a script) starts ``N`` executions of the
counter program with ``asyncio.gather`` and reports every checkpoint on stdout *after*
the provider's save returned -- the moment the runtime may run the code after the
``await``. The test kills it once about a third of the checkpoints were reported, then
checks, before anything else touches the store:

- every reported checkpoint is in the store, and reads back (its checksum verified);
- the kill happened while several saves were in flight in the pool (so the test does
  exercise group commit, not inline saves one at a time).

Then a second process resumes every execution that has a checkpoint (concurrently
again, one of them through the ``durably resume`` command), and each one's transcript,
agents' states, LLM calls and result equal those of an uninterrupted run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from crashkit import (
    CASE,
    COMPARED,
    EXECUTIONS,
    KILL_AT,
    resume_all,
    resume_and_compare,
    run_all,
    run_and_kill,
)

from conftest import durably, show

SLOW_APPEND = 0.02
"""Seconds the child adds to every log append (see ``_run_all``)."""


def _ids(n: int) -> list[str]:
    return [f"gc-{i:03d}" for i in range(n)]


# ------------------------------------------------------------------ the child process


async def _run_all(store: str, n: int) -> None:
    """Run ``n`` executions at once; report each acknowledged checkpoint on stdout."""
    from durably_filesystem import FilesystemProvider, _log, _syncpool

    # A slower disk than the test machine's (~0.2 ms per flush): every log append
    # takes SLOW_APPEND longer, so at any moment dozens of appends are in flight in the
    # pool, and a save acknowledged before its record was written would be caught by
    # the kill. (A SIGKILL cannot catch a missing fdatasync: the page cache survives
    # the process. That the flush runs before the save returns is by construction:
    # append_sync calls it, and the save waits for append_sync.)
    write_all = _log.write_all

    def slow_write_all(fd: int, parts: Sequence[bytes | memoryview]) -> None:
        time.sleep(SLOW_APPEND)
        write_all(fd, parts)

    _log.write_all = slow_write_all
    save = FilesystemProvider._save

    async def reporting_save(self, execution_id, seq, stored, metadata, mode, lease):  # type: ignore[no-untyped-def]
        info = await save(self, execution_id, seq, stored, metadata, mode, lease)
        # after the save returned: acknowledged. One write(2) per line, below PIPE_BUF,
        # so a line is either whole in the pipe or absent. The last field: saves of
        # other executions in flight in the sync pool right now.
        line = f"saved {execution_id} {seq} {info.version} {_syncpool._in_flight}\n"
        os.write(1, line.encode())
        return info

    FilesystemProvider._save = reporting_save  # type: ignore[method-assign]
    await run_all(_ids(n), store=store)


# ------------------------------------------------------------------------- the test


def test_sigkill_while_100_executions_group_commit(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    start = time.monotonic()

    # the uninterrupted run every execution must equal
    done = durably(*CASE.run_args(store, "reference"))
    assert done.code == 0, done.err
    data = show(store, "reference")
    assert data["status"] == "completed"
    reference = {key: data[key] for key in COMPARED}
    per_execution = int(data["checkpoints"])
    assert per_execution > 10

    target = int(EXECUTIONS * per_execution * KILL_AT)
    lines = run_and_kill(
        [sys.executable, __file__, "run", store, str(EXECUTIONS)], target, tmp_path
    )
    acked: dict[tuple[str, int], str] = {}
    concurrent = 0
    for line in lines:
        word, execution_id, seq, version, in_flight = line.split()
        assert word == "saved", line
        acked[(execution_id, int(seq))] = version
        concurrent = max(concurrent, int(in_flight))
    assert len(acked) >= target
    started = {execution_id for execution_id, _seq in acked}
    finished = {eid for eid in started if (eid, per_execution - 1) in acked}
    assert len(started) > 10, "too few executions were writing when the kill came"
    assert len(finished) < len(started), "every started execution had finished"
    assert concurrent >= 2, "the saves never overlapped in the sync pool"

    # every acknowledged checkpoint survived, readable, as acknowledged
    async def check() -> dict[str, int]:
        from durably_filesystem import FilesystemProvider

        latest: dict[str, int] = {}
        async with FilesystemProvider(tmp_path / "store") as provider:
            for (execution_id, seq), version in sorted(acked.items()):
                stored = await provider.load_checkpoint(execution_id, seq)  # checksummed
                assert str(stored.info.version) == version, (execution_id, seq)
            for execution_id in _ids(EXECUTIONS):
                found = await provider.load_latest_checkpoint(execution_id)
                if found is not None:
                    latest[execution_id] = found.seq
        return latest

    latest = asyncio.run(check())
    assert started <= set(latest), "an execution with acknowledged checkpoints is gone"

    # resume them all: one with the command, the others at once in one process
    resume_and_compare(
        __file__,
        ["--store", store],
        sorted(latest),
        tmp_path,
        reference,
        partial(show, store),
        timeout=120,
    )
    assert time.monotonic() - start < 120


if __name__ == "__main__":
    _mode, _store, *_rest = sys.argv[1:]
    if _mode == "run":
        asyncio.run(_run_all(_store, int(_rest[0])))
    else:
        asyncio.run(resume_all(_rest, store=_store))
