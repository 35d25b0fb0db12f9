"""Crash safety: a writer process is SIGKILLed at random moments, 50 times in a row.

The child (tests/crash_writer.py) resumes after the latest checkpoint it finds and
writes checkpoints (varied sizes, compressible or not, one of 1.2 MB now and then),
blobs (one at a time and in ``put_blobs`` batches), deletes and prunes (with a tiny
compaction threshold, so the log is rewritten all the time). It reports each operation
on stdout only after it returned. After every kill a fresh provider must find: a latest
checkpoint at least as new as the last one reported, every listed checkpoint loading
byte-for-byte as written, no checkpoint whose deletion was reported, every reported
blob (also beside a blob deleted from the same pack), no blob whose deletion was
reported, and no blob that is listed but damaged (half-written). ``DURABLY_CRASH_SEED``
changes the random kill schedule.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from durably_filesystem import FilesystemBackdoor, FilesystemProvider

RUN = "crash-run"
KILLS = 50
WRITER = Path(__file__).resolve().parent / "crash_writer.py"


def _writer_module() -> ModuleType:
    """crash_writer.py, imported by path (it defines the expected payloads)."""
    spec = importlib.util.spec_from_file_location("_durably_fs_crash_writer", WRITER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.asyncio
async def test_sigkill_at_random_moments_never_loses_or_damages_a_checkpoint(
    root: Path,
    child_env: dict[str, str],
) -> None:
    writer = _writer_module()
    rng = random.Random(int(os.getenv("DURABLY_CRASH_SEED", "20240611")))
    durable = -1  # the highest seq the child reported as saved
    deleted: set[int] = set()
    blobs: dict[str, int] = {}
    deleted_blobs: set[str] = set()
    resume_at = 0
    torn = interrupted = temporary_before = 0
    for kill in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, str(WRITER), str(root), RUN],
            stdout=subprocess.PIPE,
            env=child_env,
        )
        assert child.stdout is not None
        ready = child.stdout.readline().decode()
        assert ready == f"ready {resume_at}\n", f"kill {kill}: the child said {ready!r}"
        # kill at a random moment: right away, after a while, or aimed at a long write
        mode = rng.random()
        seen: list[bytes] = []
        if mode < 0.1:
            pass
        elif mode < 0.55:
            time.sleep(rng.uniform(0.0, 0.12))
        else:
            while not (seen and seen[-1] == b"writing\n"):
                seen.append(child.stdout.readline())
                assert seen[-1], f"kill {kill}: the child exited on its own"
            time.sleep(rng.uniform(0.0, 0.001))
        child.send_signal(signal.SIGKILL)
        output = b"".join(seen).decode() + child.stdout.read().decode()
        child.stdout.close()
        assert child.wait() == -signal.SIGKILL
        lines = output.split("\n")[:-1]  # the last one may be cut off (or empty)
        for line in lines:
            word, *rest = line.split()
            if word == "saved":
                durable = max(durable, int(rest[0]))
            elif word == "deleted":
                deleted.add(int(rest[0]))
            elif word == "pruned":
                deleted.update(int(seq) for seq in rest[1:])
            elif word == "writing":
                pass
            elif word == "blob":
                blobs[rest[1]] = int(rest[0])
            elif word == "unblob":  # about to be deleted: no longer expected
                blobs.pop(rest[0], None)
            elif word == "blobdel":
                deleted_blobs.add(rest[0])

        # what the kill left behind, for the summary (the checks below are what matter)
        backdoor = FilesystemBackdoor(root)
        with contextlib.suppress(FileNotFoundError):
            torn += backdoor.index(RUN).tail is not None
            temporary = sum(
                name.startswith(".tmp-") for name in os.listdir(backdoor.execution_dir(RUN))
            )
            interrupted += temporary > temporary_before
            temporary_before = temporary
        async with FilesystemProvider(root) as provider:
            latest = await provider.load_latest_checkpoint(RUN)
            if durable >= 0:
                assert latest is not None, f"kill {kill}: everything was lost"
            if latest is None:
                resume_at = 0
                continue
            assert latest.seq >= durable, (
                f"kill {kill}: checkpoint {durable} was reported saved, the latest is {latest.seq}"
            )
            assert latest.data == writer.payload(latest.seq)
            assert dict(latest.metadata) == writer.metadata(latest.seq)
            listed = [info async for info in provider.iter_checkpoints(RUN)]
            assert listed[-1].seq == latest.seq
            for info in listed:
                assert info.seq not in deleted, f"kill {kill}: deleted {info.seq} is back"
                stored = await provider.load_checkpoint(RUN, info.seq)
                assert stored.data == writer.payload(info.seq), f"kill {kill}: seq {info.seq}"
                assert dict(info.metadata) == writer.metadata(info.seq)
            for digest, seq in blobs.items():
                assert await provider.get_blob(RUN, digest) == writer.blob(seq)
            for digest in deleted_blobs:
                assert not await provider.has_blob(RUN, digest), f"kill {kill}: {digest} is back"
            # a blob is visible under its name only once whole (get_blob verifies it)
            page = await provider.list_blobs(RUN)
            for blob_info in page.items:
                await provider.get_blob(RUN, blob_info.digest)
            resume_at = latest.seq + 1

    assert durable > 200, "the child should have saved hundreds of checkpoints"
    assert len(deleted_blobs) > 10, "the child should have deleted blobs from packs"
    # nothing but the live files and, perhaps, temporary files of an interrupted
    # compaction (the next compaction removes them)
    index = FilesystemBackdoor(root).index(RUN)
    assert index.corrupt_regions == []
    leftovers = [
        name
        for name in os.listdir(FilesystemBackdoor(root).execution_dir(RUN))
        if name not in ("log", "lock", "lease", "blobs")
    ]
    assert all(name.startswith(".tmp-") for name in leftovers), leftovers
    print(
        f"\n{KILLS} kills: {durable + 1} checkpoints, {torn} torn appends found, "
        f"{interrupted} compactions interrupted"
    )
