"""Measure the cost of a checkpoint save against the raw append it is built on.

Run: ``python benchmarks/bench_fs_append.py [--quick] [DIR]`` (DIR defaults to
a temporary directory; use one on the disk you care about). Not a test: it asserts
nothing. It times 2,000 ``save_checkpoint`` calls of a 1 KB payload on one execution,
2,000 ``os.write`` + ``os.fdatasync`` of a record-sized buffer to an open file in the same
directory, and a *floor*: the least a durable await can do in Python (await a coroutine,
encode its record as JSON, checksum it, chain it to the previous record with SHA-256,
append it, ``fdatasync``), in alternating rounds, and prints the medians and their ratios
to the raw append. The floor shows how much of the ratio is Python's own minimum on this
machine and how much is durably's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import zlib

from durably_filesystem import FilesystemProvider

COUNT = 2000
ROUNDS = 5
PAYLOAD = os.urandom(1000)


async def provider_round(directory: str, number: int) -> float:
    async with FilesystemProvider(os.path.join(directory, f"store-{number}")) as provider:
        await provider.save_checkpoint("bench", 0, PAYLOAD)  # creates the files
        start = time.perf_counter()
        for seq in range(1, COUNT + 1):
            await provider.save_checkpoint("bench", seq, PAYLOAD)
        return (time.perf_counter() - start) / COUNT


async def floor_round(directory: str, number: int) -> float:
    path = os.path.join(directory, f"floor-{number}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)

    async def operation(seq: int) -> int:
        return seq

    try:
        chain = bytes(32)
        start = time.perf_counter()
        for seq in range(1, COUNT + 1):
            result = await operation(seq)
            head = json.dumps(
                {"seq": seq, "op": "Step", "args": f"Main:{seq}", "result": result},
                separators=(",", ":"),
            ).encode()
            body = head + PAYLOAD
            chain = hashlib.sha256(chain + body).digest()
            frame = len(body).to_bytes(4, "little") + zlib.crc32(body).to_bytes(4, "little")
            os.write(fd, frame + chain + body)
            os.fdatasync(fd)
        return (time.perf_counter() - start) / COUNT
    finally:
        os.close(fd)


def raw_round(directory: str, number: int, size: int) -> float:
    path = os.path.join(directory, f"raw-{number}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    buffer = os.urandom(size)
    try:
        start = time.perf_counter()
        for _ in range(COUNT):
            os.write(fd, buffer)
            os.fdatasync(fd)
        return (time.perf_counter() - start) / COUNT
    finally:
        os.close(fd)


def main() -> None:
    global COUNT, ROUNDS
    positional = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    if "--quick" in sys.argv:
        COUNT, ROUNDS = 300, 3
    base = positional[0] if positional else None
    directory = tempfile.mkdtemp(prefix="durably-bench-", dir=base)
    try:
        # a record: 52-byte header + metadata (none) + 40-byte envelope + data + 16-byte sum
        record = 52 + 40 + len(PAYLOAD) + 16
        saves, raws, floors = [], [], []
        for number in range(ROUNDS):
            saves.append(asyncio.run(provider_round(directory, number)))
            raws.append(raw_round(directory, number, record))
            floors.append(asyncio.run(floor_round(directory, number)))
        save, raw = statistics.median(saves), statistics.median(raws)
        floor = statistics.median(floors)
        print(f"directory: {directory}")
        print(
            f"save_checkpoint (1 KB):   {save * 1e6:8.1f} us  (rounds: "
            f"{', '.join(f'{s * 1e6:.0f}' for s in saves)})"
        )
        print(
            f"write + fdatasync ({record} B): {raw * 1e6:8.1f} us  (rounds: "
            f"{', '.join(f'{r * 1e6:.0f}' for r in raws)})"
        )
        print(
            f"floor (Python, 1 KB):     {floor * 1e6:8.1f} us  (rounds: "
            f"{', '.join(f'{f * 1e6:.0f}' for f in floors)})"
        )
        print(f"ratio: {save / raw:.2f}")
        print(f"floor ratio: {floor / raw:.2f} (the least a durable await costs in Python)")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
