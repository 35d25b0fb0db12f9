"""Group commit under a crash on PostgreSQL: SIGKILL a process while 100 executions write
checkpoints concurrently, then resume them all.

The PostgreSQL provider writes the checkpoints that queue while one is in flight in one
transaction (``durably_postgres._engine``), each still fenced, on a pool shared by the
process's executions. A save must return only once its transaction committed. The child
process (this file, run as a script) starts ``N`` executions of the counter program with
``asyncio.gather`` and reports every checkpoint on stdout *after* the provider's save
returned -- the moment the runtime may run the code after the ``await``. To widen the
window in which an acknowledgement before the COMMIT would be caught, every batch
sleeps ``SLOW_COMMIT`` on the server inside its transaction, before the COMMIT. The test
kills the child once about a third of the checkpoints were reported, then checks, before
anything else touches the store:

- every reported checkpoint is in the store, with the version the save returned;
- the kill came while batches of several saves were being written (so the test does
  exercise group commit, not saves one at a time).

Then a second process resumes every execution that has a checkpoint (concurrently
again, one of them through the ``durably resume`` command), and each one's transcript,
agents' states, LLM calls and result equal those of an uninterrupted run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
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

SLOW_COMMIT = 0.02
"""Seconds every group-commit transaction sleeps on the server before its COMMIT."""


def _ids(n: int) -> list[str]:
    return [f"pgc-{i:03d}" for i in range(n)]


# ------------------------------------------------------------------ the child process


async def _run_all(config_file: str, n: int) -> None:
    """Run ``n`` executions at once; report each acknowledged checkpoint on stdout."""
    from durably.config import load_config
    from durably_postgres import PostgresProvider, _engine

    pipelined = _engine._pipelined

    async def slow_pipelined(conn: _engine.AsyncConn, writes: list[_engine.Write]) -> list:  # type: ignore[type-arg]
        sleep = _engine.Write(
            writes[0].client, "sleeping", "SELECT pg_sleep(%(s)s)", {"s": SLOW_COMMIT}
        )
        return (await pipelined(conn, [*writes, sleep]))[:-1]

    _engine._pipelined = slow_pipelined  # type: ignore[assignment]
    save = PostgresProvider._save

    async def reporting_save(self, execution_id, seq, stored, metadata, mode, lease):  # type: ignore[no-untyped-def]
        info = await save(self, execution_id, seq, stored, metadata, mode, lease)
        # after the save returned: acknowledged. One write(2) per line, below PIPE_BUF.
        # The last field: the largest batch the process's committer has written so far.
        largest = self._db.engine.committer.largest_batch
        os.write(1, f"saved {execution_id} {seq} {info.version} {largest}\n".encode())
        return info

    PostgresProvider._save = reporting_save  # type: ignore[method-assign]
    config = load_config(config_file=config_file, use_env=False)
    await run_all(_ids(n), config=config)


# ------------------------------------------------------------------------- the test


def test_sigkill_while_100_executions_group_commit_on_postgres(
    postgres_config: tuple[Path, str], tmp_path: Path
) -> None:
    config, url = postgres_config
    start = time.monotonic()
    args = CASE.run_args(url, "reference")
    args[args.index("--store") : args.index("--store") + 2] = ["--config", str(config)]
    done = durably(*args)
    assert done.code == 0, done.err
    data = show(url, "reference", config=config)
    assert data["status"] == "completed"
    reference = {key: data[key] for key in COMPARED}
    per_execution = int(data["checkpoints"])
    assert per_execution > 10

    target = int(EXECUTIONS * per_execution * KILL_AT)
    acked: dict[tuple[str, int], str] = {}
    largest = 0
    argv = [sys.executable, __file__, "run", str(config), str(EXECUTIONS)]
    for line in run_and_kill(argv, target, tmp_path):
        word, execution_id, seq, version, batch = line.split()
        assert word == "saved", line
        acked[(execution_id, int(seq))] = version
        largest = max(largest, int(batch))
    assert len(acked) >= target
    started = {execution_id for execution_id, _seq in acked}
    finished = {eid for eid in started if (eid, per_execution - 1) in acked}
    assert len(started) > 10, "too few executions were writing when the kill came"
    assert len(finished) < len(started), "every started execution had finished"
    assert largest >= 10, "the saves were never written in batches"

    # every acknowledged checkpoint survived, as acknowledged
    async def check() -> dict[str, int]:
        from durably import open_store
        from durably.config import load_config

        latest: dict[str, int] = {}
        async with open_store(config=load_config(config_file=config, use_env=False)) as store:
            for (execution_id, seq), version in sorted(acked.items()):
                stored = await store.load_checkpoint(execution_id, seq)
                assert str(stored.info.version) == version, (execution_id, seq)
            for execution_id in _ids(EXECUTIONS):
                found = await store.load_latest_checkpoint(execution_id)
                if found is not None:
                    latest[execution_id] = found.seq
        return latest

    latest = asyncio.run(check())
    assert started <= set(latest), "an execution with acknowledged checkpoints is gone"

    # resume them all: one with the command, the others at once in one process
    resume_and_compare(
        __file__,
        ["--wait", "--config", str(config)],
        sorted(latest),
        tmp_path,
        reference,
        lambda execution_id: show(url, execution_id, config=config),
        timeout=180,
    )
    assert time.monotonic() - start < 180


if __name__ == "__main__":
    _mode, _config, *_rest = sys.argv[1:]
    if _mode == "run":
        asyncio.run(_run_all(_config, int(_rest[0])))
    else:
        from durably.config import load_config

        asyncio.run(resume_all(_rest, config=load_config(config_file=_config, use_env=False)))
