"""Size limits count everything (issue 15, item 5), through `durably run` as a user runs it.

``max_checkpoint_size`` counts the new blobs a checkpoint stores (a big value is stored
once, as content-addressed blobs: before, ``self.state.big = os.urandom(100 MiB)``
completed with exit 0 and wrote 17,398 blob files), and ``max_execution_size`` counts
everything an execution stored. The error names the limit and the variable, and nothing
of the refused checkpoint (not even its blobs) is written.

The program is ``tests/programs/probe.py``: with the input ``big:N`` its LLM code stores
N random bytes in ``first``, then in ``second``, then in ``third``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conftest import ROOT, durably

PROBE = ROOT / "tests" / "programs" / "probe.py"
LLM = f"scripted:{ROOT / 'tests' / 'programs' / 'probe.scripted.json'}"
MIB = 1024 * 1024


def _run(tmp_path: Path, settings: str, execution_id: str, size: int) -> tuple[int, str]:
    config = tmp_path / "durably.toml"
    config.write_text(f'[durability]\nstore = "file://{tmp_path / "store"}"\n{settings}')
    done = durably(
        "run",
        str(PROBE),
        "--llm",
        LLM,
        "--config",
        str(config),
        "--execution-id",
        execution_id,
        "--input",
        f"big:{size}",
        timeout=120,
    )
    assert "Traceback" not in done.err, done.err
    return done.code, done.err


def _stored(tmp_path: Path, execution_id: str) -> tuple[int, str | None]:
    """(bytes the store holds for the execution, checkpoints and blobs; its status)."""
    from durably import open_store
    from durably.config import load_config
    from durably.storage import META_STATUS

    async def count() -> tuple[int, str | None]:
        config = load_config(overrides={"store": f"file://{tmp_path / 'store'}"}, use_env=False)
        async with open_store(config=config) as provider:
            total = 0
            status = None
            async for info in provider.iter_checkpoints(execution_id):
                total += info.size
                status = info.metadata.get(META_STATUS)
            cursor: str | None = None
            while True:
                page = await provider.list_blobs(execution_id, cursor=cursor)
                total += sum(blob.size for blob in page.items)
                if page.next_cursor is None:
                    return total, status
                cursor = page.next_cursor

    return asyncio.run(count())


def test_max_checkpoint_size_counts_blobs(tmp_path: Path) -> None:
    code, err = _run(tmp_path, 'max_checkpoint_size = "1MiB"\n', "big", 3_000_000)
    assert code == 1, err
    assert "over max_checkpoint_size (1,048,576)" in err, err
    assert "state 'first'" in err, err  # the variable that made it too large
    assert "new blob(s)" in err, err
    stored, status = _stored(tmp_path, "big")
    assert status != "completed"
    assert stored < MIB, stored  # the refused blobs were not written


@pytest.mark.parametrize(("limit", "refused"), [("5MiB", True), ("20MiB", False)])
def test_max_execution_size_counts_every_checkpoint_and_blob(
    tmp_path: Path, limit: str, refused: bool
) -> None:
    # Every value fits max_checkpoint_size; together they do not fit 5 MiB.
    settings = f'max_execution_size = "{limit}"\nsnapshot_every = 1\n'
    code, err = _run(tmp_path, settings, "many", 2_000_000)
    stored, status = _stored(tmp_path, "many")
    if not refused:
        assert code == 0, err
        assert status == "completed"
        assert stored > 5 * MIB, stored  # the three values: what 5 MiB refuses
        return
    assert code == 1, err
    assert "max_execution_size (5,242,880)" in err, err
    assert "already stored" in err, err
    assert "state 'second'" in err, err  # first and second stored, third refused
    assert status != "completed"
    assert stored <= 5 * MIB, stored
