"""The child of the crash test: writes checkpoints until it is killed.

Run as ``python crash_writer.py ROOT EXECUTION_ID``. It resumes after the latest
checkpoint it finds and loops forever: save checkpoint ``seq`` (payload and metadata
derived from ``seq`` only, see :func:`payload`), and only *after* the save returned,
print ``saved <seq>``; now and then it stores a blob (``blob <seq> <digest>``) or a
batch of blobs with ``put_blobs`` (a ``blob`` line for each, once the batch returned),
deletes one blob of the last batch (``unblob <digest>`` before, ``blobdel <digest>`` once
it returned: in a pack, a rewrite of the pack its neighbours share), deletes
an older checkpoint (``deleted <seq>``) or prunes (``pruned <seq> ...``). The store uses
a tiny compaction threshold so that compactions happen all the time. Deliberately
light on imports: it must start fast. Before each write of more than 1 MB it prints
``writing``, so that the parent can aim its kill at it.
"""

from __future__ import annotations

import asyncio
import random
import sys

from durably.storage import blob_digest
from durably_filesystem import FilesystemProvider, _fsutil, _log

_write_all = _fsutil.write_all


def _announced_write_all(fd: int, parts: list[bytes | memoryview]) -> None:
    """The provider's write, announced on stdout when it is big, so that the parent
    can aim its SIGKILL at the middle of it (and tear the record)."""
    if sum(len(part) for part in parts) > 1_000_000:
        sys.stdout.write("writing\n")
        sys.stdout.flush()
    _write_all(fd, parts)


setattr(_log, "write_all", _announced_write_all)  # noqa: B010 - patching on purpose

SIZES = (17, 300, 1500, 5000, 40_000, 700, 2, 120_000)
BIG = 1_200_000


def payload(seq: int) -> bytes:
    """The deterministic content of checkpoint ``seq``: varied sizes, some compressible.

    Every 10th is 1.2 MB of incompressible bytes (written from a worker thread).
    """
    size = BIG if seq % 10 == 9 else SIZES[seq % len(SIZES)]
    if seq % 3 == 0:  # compressible (the envelope compresses >= 1 KiB)
        unit = f"payload {seq} ".encode()
        return (unit * (size // len(unit) + 1))[:size]
    head = f"payload {seq} ".encode()
    return head + random.Random(seq).randbytes(max(0, size - len(head)))


BATCH = 1_000_000
"""Blobs put in batches are ``blob(BATCH + ...)``: other bytes than the single ones."""


def blob(seq: int) -> bytes:
    return random.Random(-seq).randbytes(2000 + seq % 5000)


def metadata(seq: int) -> dict[str, str]:
    return {"n": str(seq), "kind": "crash-test \u2713"}


async def main() -> None:
    root, execution_id = sys.argv[1], sys.argv[2]
    out = sys.stdout
    async with FilesystemProvider(root, compact_threshold=16 * 1024) as provider:
        latest = await provider.load_latest_checkpoint(execution_id)
        seq = 0 if latest is None else latest.seq + 1
        out.write(f"ready {seq}\n")
        out.flush()
        while True:
            await provider.save_checkpoint(execution_id, seq, payload(seq), metadata=metadata(seq))
            out.write(f"saved {seq}\n")
            out.flush()
            if seq % 7 == 3:
                digest = await provider.put_blob(execution_id, blob(seq))
                out.write(f"blob {seq} {digest}\n")
            if seq % 7 == 5:
                keys = [BATCH + seq * 8 + i for i in range(4 + seq % 5)]
                batch = {blob_digest(blob(key)): key for key in keys}
                await provider.put_blobs(execution_id, {d: blob(k) for d, k in batch.items()})
                out.writelines(f"blob {key} {digest}\n" for digest, key in batch.items())
            if seq % 7 == 6:
                doomed = blob_digest(blob(BATCH + (seq - 1) * 8))
                out.write(f"unblob {doomed}\n")
                out.flush()
                if await provider.delete_blob(execution_id, doomed):
                    out.write(f"blobdel {doomed}\n")
            if (
                seq % 5 == 4
                and seq >= 10
                and await provider.delete_checkpoint(execution_id, seq - 2)
            ):
                out.write(f"deleted {seq - 2}\n")
            if seq % 13 == 0:
                pruned = await provider.prune(execution_id, keep_last=4)
                out.write(f"pruned {seq} {' '.join(map(str, pruned))}\n")
            out.flush()
            seq += 1


if __name__ == "__main__":
    asyncio.run(main())
