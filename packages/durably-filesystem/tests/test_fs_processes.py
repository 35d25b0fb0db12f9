"""Conditional writes, leases and compaction between real processes (tests/proc_driver.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from durably.errors import FencedError, LeaseHeldError
from durably.storage import Lease
from durably_filesystem import FilesystemProvider

RUN = "run-1"
Start = Callable[[], Any]


def lease_args(reply: dict[str, Any]) -> list[Any]:
    assert "lease" in reply, reply
    lease: list[Any] = reply["lease"]
    return lease


@pytest.mark.asyncio
async def test_two_processes_racing_to_create_the_same_seq(root: Path, driver: Start) -> None:
    """Round after round, both processes are told at the same instant to create the
    same seq: exactly one succeeds, the other gets AlreadyExistsError, and what is
    stored is the winner's payload."""
    rounds = 400
    a, b = driver(), driver()
    wins = {"a": 0, "b": 0}
    for seq in range(rounds):
        pair = [("a", a), ("b", b)] if seq % 2 else [("b", b), ("a", a)]
        for name, proc in pair:
            proc.send(op="save", exec=RUN, seq=seq, data=f"{name}:{seq}")
        replies = {name: proc.recv() for name, proc in pair}
        winners = [name for name, reply in replies.items() if "version" in reply]
        assert len(winners) == 1, f"seq {seq}: {replies}"
        loser = "b" if winners[0] == "a" else "a"
        assert replies[loser]["error"] == "AlreadyExistsError", replies
        wins[winners[0]] += 1
        assert a.call(op="load", exec=RUN, seq=seq) == {"data": f"{winners[0]}:{seq}"}
    assert wins["a"] > 0, f"the processes never really raced: {wins}"
    assert wins["b"] > 0, f"the processes never really raced: {wins}"
    async with FilesystemProvider(root) as provider:
        assert [i.seq async for i in provider.iter_checkpoints(RUN)] == list(range(rounds))


@pytest.mark.asyncio
async def test_two_processes_streaming_creates_of_the_same_seqs(
    root: Path,
    driver: Start,
) -> None:
    """Both processes try to create seqs 0..N-1 as fast as they can: each seq is
    created exactly once, with the creator's payload."""
    count = 1500
    a, b = driver(), driver()
    a.send(op="race", exec=RUN, n=count, name="a")
    b.send(op="race", exec=RUN, n=count, name="b")
    won_a, won_b = set(a.recv()["won"]), set(b.recv()["won"])
    assert won_a.isdisjoint(won_b), f"seqs created twice: {sorted(won_a & won_b)[:10]}"
    assert won_a | won_b == set(range(count))
    async with FilesystemProvider(root) as provider:
        for seq in range(count):
            winner = "a" if seq in won_a else "b"
            stored = await provider.load_checkpoint(RUN, seq)
            assert stored.data == f"{winner}:{seq}".encode()


@pytest.mark.asyncio
async def test_a_stale_lease_holder_in_another_process_is_fenced(
    root: Path,
    driver: Start,
) -> None:
    holder = driver()
    old = lease_args(holder.call(op="claim", exec=RUN, owner="worker-1", ttl=0.3))
    assert holder.call(op="save", exec=RUN, seq=0, data="by worker-1", lease=old).get("version")

    async with FilesystemProvider(root) as provider:
        # while it is live, nobody else may claim it -- across processes
        with pytest.raises(LeaseHeldError) as held:
            await provider.claim(RUN, "worker-2", ttl=30)
        assert held.value.owner == "worker-1"
        time.sleep(max(0.0, old[3] - time.time()) + 0.05)
        new = await provider.claim(RUN, "worker-2", ttl=30)
        assert new.epoch > old[2]

        # the old holder wakes up: every fenced operation fails and writes nothing
        assert (
            holder.call(op="save", exec=RUN, seq=1, data="stale", lease=old)["error"]
            == "FencedError"
        )
        assert (
            holder.call(op="save", exec=RUN, seq=0, data="stale", lease=old, overwrite=True)[
                "error"
            ]
            == "FencedError"
        )
        assert holder.call(op="delete", exec=RUN, seq=0, lease=old)["error"] == "FencedError"
        assert holder.call(op="renew", lease=old, ttl=30)["error"] == "FencedError"
        assert [i.seq async for i in provider.iter_checkpoints(RUN)] == [0]
        assert (await provider.load_checkpoint(RUN, 0)).data == b"by worker-1"

        # the new holder writes; the other process sees it, and sees the new lease
        await provider.save_checkpoint(RUN, 1, b"by worker-2", lease=new)
        assert holder.call(op="load", exec=RUN, seq=1) == {"data": "by worker-2"}
        current = await provider.get_lease(RUN)
        assert current is not None
        assert (current.owner, current.epoch) == ("worker-2", new.epoch)


@pytest.mark.asyncio
async def test_a_restarted_owner_fences_its_previous_incarnation(
    root: Path,
    driver: Start,
) -> None:
    """The same owner claiming again (a restarted process) gets a new epoch at once,
    even while its old lease is live, and the old incarnation is fenced."""
    first = driver()
    old = lease_args(first.call(op="claim", exec=RUN, owner="svc", ttl=60))
    second = driver()
    new = lease_args(second.call(op="claim", exec=RUN, owner="svc", ttl=60))
    assert new[2] > old[2]
    assert first.call(op="save", exec=RUN, seq=0, data="old", lease=old)["error"] == "FencedError"
    assert "version" in second.call(op="save", exec=RUN, seq=0, data="new", lease=new)
    async with FilesystemProvider(root) as provider:
        assert (await provider.load_checkpoint(RUN, 0)).data == b"new"
        with pytest.raises(FencedError):
            await provider.renew(Lease(RUN, "svc", old[2], old[3]), ttl=5)


@pytest.mark.asyncio
async def test_another_process_reads_correctly_during_compactions(
    root: Path,
    driver: Start,
) -> None:
    """A reader process loads and verifies every listed checkpoint in a loop while this
    process appends, deletes and compacts (the log is replaced again and again)."""
    reader = driver()
    async with FilesystemProvider(root, compact_threshold=8_000) as provider:
        await provider.save_checkpoint(RUN, 0, b"payload 0 first")
        reader.send(op="read_loop", exec=RUN, seconds=1.5)
        deadline = time.monotonic() + 1.5
        seq = 1
        replaced = 0
        log = root / "executions" / RUN / "log"
        inode = log.stat().st_ino
        while time.monotonic() < deadline:
            await provider.save_checkpoint(RUN, seq, f"payload {seq} ".encode() * 40)
            if seq >= 3:
                await provider.delete_checkpoint(RUN, seq - 3)
            if log.stat().st_ino != inode:
                replaced += 1
                inode = log.stat().st_ino
            seq += 1
        result = reader.recv()
        assert "error" not in result, result
        assert result["checked"] > 0
        assert result["rounds"] > 0
        assert replaced >= 5, "the test meant to compact many times"
        assert reader.call(op="seqs", exec=RUN)["seqs"] == [
            i.seq async for i in provider.iter_checkpoints(RUN)
        ]
