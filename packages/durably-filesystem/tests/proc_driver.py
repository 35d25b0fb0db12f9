"""A provider in a separate process, driven by JSON commands on stdin (for tests).

Run as ``python proc_driver.py ROOT``. Each stdin line is a command; each reply is one
JSON line on stdout. Errors are replied as ``{"error": "<exception class name>"}``.
Not collected by pytest (its name does not start with ``test_``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from durably.errors import DurablyError
from durably.storage import Lease
from durably_filesystem import FilesystemProvider


def _lease(raw: list[Any] | None) -> Lease | None:
    if raw is None:
        return None
    execution_id, owner, epoch, expires_at = raw
    return Lease(str(execution_id), str(owner), int(epoch), float(expires_at))


async def _handle(provider: FilesystemProvider, cmd: dict[str, Any]) -> dict[str, Any]:
    op = cmd["op"]
    ex = str(cmd.get("exec", "run"))
    if op == "claim":
        lease = await provider.claim(ex, str(cmd["owner"]), ttl=float(cmd["ttl"]))
        return {"lease": [lease.execution_id, lease.owner, lease.epoch, lease.expires_at]}
    if op == "save":
        info = await provider.save_checkpoint(
            ex,
            int(cmd["seq"]),
            str(cmd["data"]).encode(),
            lease=_lease(cmd.get("lease")),
            mode="overwrite" if cmd.get("overwrite") else "create",
        )
        return {"version": info.version}
    if op == "delete":
        return {
            "deleted": await provider.delete_checkpoint(
                ex, int(cmd["seq"]), lease=_lease(cmd.get("lease"))
            )
        }
    if op == "renew":
        old = _lease(cmd["lease"])
        assert old is not None
        lease = await provider.renew(old, ttl=float(cmd["ttl"]))
        return {"lease": [lease.execution_id, lease.owner, lease.epoch, lease.expires_at]}
    if op == "load":
        found = await provider.load_checkpoint(ex, int(cmd["seq"]))
        return {"data": found.data.decode()}
    if op == "seqs":
        return {"seqs": [info.seq async for info in provider.iter_checkpoints(ex)]}
    if op == "race":
        # try to create seqs 0..n-1; report which this process won
        won = []
        for seq in range(int(cmd["n"])):
            try:
                await provider.save_checkpoint(ex, seq, f"{cmd['name']}:{seq}".encode())
            except DurablyError as exc:
                if type(exc).__name__ != "AlreadyExistsError":
                    raise
            else:
                won.append(seq)
        return {"won": won}
    if op == "read_loop":
        # read everything repeatedly for `seconds`; verify each payload names its seq
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(cmd["seconds"])
        rounds = checked = 0
        while loop.time() < deadline:
            async for info in provider.iter_checkpoints(ex):
                try:
                    found = await provider.load_checkpoint(ex, info.seq)
                except DurablyError as exc:
                    if type(exc).__name__ == "NotFoundError":
                        continue  # deleted between listing and loading
                    raise
                expected = f"payload {info.seq} ".encode()
                if not found.data.startswith(expected):
                    return {"error": "WrongData", "seq": info.seq}
                checked += 1
            rounds += 1
        return {"rounds": rounds, "checked": checked}
    raise ValueError(f"unknown op {op!r}")


async def main() -> None:
    provider = FilesystemProvider(sys.argv[1])
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True}), flush=True)
    async with provider:
        while line := await reader.readline():
            cmd = json.loads(line)
            try:
                reply = await _handle(provider, cmd)
            except DurablyError as exc:
                reply = {"error": type(exc).__name__, "message": str(exc)}
            print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
