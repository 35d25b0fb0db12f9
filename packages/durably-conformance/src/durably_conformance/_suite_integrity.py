"""Integrity clauses: hostile execution ids (C12) and corruption detection (C14)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from durably.errors import (
    CorruptObjectError,
    InvalidExecutionIdError,
    UnsupportedFormatError,
)
from durably.storage import CheckpointProvider, Lease, blob_digest
from durably_conformance._backdoor import Backdoor
from durably_conformance._base import SuiteBase
from durably_conformance._helpers import (
    BOUNDARY_EXECUTION_IDS,
    HOSTILE_EXECUTION_IDS,
    drain,
    random_bytes,
    with_format_version,
)

__all__ = ["IntegritySuite"]

RUN = "run-1"

Call = Callable[[CheckpointProvider], Awaitable[object]]


def _public_calls(execution_id: Any) -> list[tuple[str, Call]]:
    """Every public method that takes an execution id, called with ``execution_id``."""
    lease = Lease(execution_id, "worker-a", 1, time.time() + 600)
    digest = blob_digest(b"x")
    return [
        ("save_checkpoint", lambda p: p.save_checkpoint(execution_id, 0, b"x")),
        (
            "save_checkpoint(overwrite)",
            lambda p: p.save_checkpoint(execution_id, 0, b"x", mode="overwrite"),
        ),
        ("save_checkpoint(lease)", lambda p: p.save_checkpoint(execution_id, 0, b"x", lease=lease)),
        ("load_checkpoint", lambda p: p.load_checkpoint(execution_id, 0)),
        ("load_latest_checkpoint", lambda p: p.load_latest_checkpoint(execution_id)),
        ("list_checkpoints", lambda p: p.list_checkpoints(execution_id)),
        ("iter_checkpoints", lambda p: drain(p.iter_checkpoints(execution_id))),
        ("delete_checkpoint", lambda p: p.delete_checkpoint(execution_id, 0)),
        ("prune", lambda p: p.prune(execution_id, keep_last=1)),
        ("delete_execution", lambda p: p.delete_execution(execution_id)),
        ("claim", lambda p: p.claim(execution_id, "worker-a", ttl=60)),
        ("renew", lambda p: p.renew(lease, ttl=60)),
        ("release", lambda p: p.release(lease)),
        ("get_lease", lambda p: p.get_lease(execution_id)),
        ("put_blob", lambda p: p.put_blob(execution_id, b"x")),
        ("get_blob", lambda p: p.get_blob(execution_id, digest)),
        ("has_blob", lambda p: p.has_blob(execution_id, digest)),
        ("list_blobs", lambda p: p.list_blobs(execution_id)),
        ("delete_blob", lambda p: p.delete_blob(execution_id, digest)),
    ]


def _id_name(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:12]}...len{len(value)}"  # type: ignore[arg-type]


class IntegritySuite(SuiteBase):
    """Clauses C12 and C14."""

    # ------------------------------------------------------------ C12 hostile ids

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(12)
    @pytest.mark.parametrize("execution_id", HOSTILE_EXECUTION_IDS, ids=_id_name)
    async def test_c12_hostile_ids_are_rejected_everywhere(
        self,
        provider: CheckpointProvider,
        checked_backdoor: Backdoor,
        execution_id: object,
    ) -> None:
        """[C12] Every public method rejects the id with InvalidExecutionIdError, writes nothing."""
        problems = []
        for name, call in _public_calls(execution_id):
            try:
                await call(provider)
            except InvalidExecutionIdError:
                continue
            except Exception as exc:
                problems.append(f"{name} raised {type(exc).__name__}: {exc}")
            else:
                problems.append(f"{name} accepted it")
        assert not problems, f"execution id {execution_id!r}:\n" + "\n".join(problems)
        assert await checked_backdoor.locations() == [], "a rejected call left something behind"

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(12)
    async def test_c12_unusual_valid_ids_are_stored_faithfully(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C12] Valid ids at the edges (1 and 128 characters, dots, dashes) work and stay apart."""
        for execution_id in BOUNDARY_EXECUTION_IDS:
            await provider.save_checkpoint(execution_id, 0, execution_id.encode())
            await provider.put_blob(execution_id, execution_id.encode())
        for execution_id in BOUNDARY_EXECUTION_IDS:
            got = await provider.load_checkpoint(execution_id, 0)
            assert got.data == execution_id.encode()
            blob = await provider.get_blob(execution_id, blob_digest(execution_id.encode()))
            assert blob == execution_id.encode()
        listed = [item.execution_id async for item in provider.iter_executions()]
        assert listed == sorted(BOUNDARY_EXECUTION_IDS)

    # ------------------------------------------------------------ C14 corruption

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(14)
    async def test_c14_the_backdoor_sees_the_stored_envelope(
        self,
        provider: CheckpointProvider,
        checked_backdoor: Backdoor,
    ) -> None:
        """[C14] (Checks the backdoor.) Stored bytes are the envelope; rewriting them is seen."""
        data = random_bytes(4096, seed=14)
        await provider.save_checkpoint(RUN, 0, data)
        assert await checked_backdoor.read_checkpoint(RUN, 0) == provider.envelope.wrap(data), (
            "the provider must store exactly the bytes the core hands it "
            "(or the backdoor does not read them back)"
        )
        other = random_bytes(4096, seed=141)
        await checked_backdoor.write_checkpoint(RUN, 0, provider.envelope.wrap(other))
        assert (await provider.load_checkpoint(RUN, 0)).data == other

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(14)
    async def test_c14_a_flipped_byte_is_detected(
        self,
        provider: CheckpointProvider,
        checked_backdoor: Backdoor,
    ) -> None:
        """[C14] Bit rot in a checkpoint raises CorruptObjectError; the others still load."""
        payloads = await _three_checkpoints(provider)
        await checked_backdoor.corrupt_checkpoint(RUN, 1)
        with pytest.raises(CorruptObjectError):
            await provider.load_checkpoint(RUN, 1)
        await _assert_loads(provider, payloads, 0, 2)
        await checked_backdoor.corrupt_checkpoint(RUN, 2)
        with pytest.raises(CorruptObjectError):
            await provider.load_latest_checkpoint(RUN)
        await _assert_loads(provider, payloads, 0)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(14)
    async def test_c14_truncation_is_detected(
        self,
        provider: CheckpointProvider,
        checked_backdoor: Backdoor,
    ) -> None:
        """[C14] A truncated checkpoint raises CorruptObjectError; the others still load."""
        payloads = await _three_checkpoints(provider)
        await checked_backdoor.truncate_checkpoint(RUN, 2)
        with pytest.raises(CorruptObjectError):
            await provider.load_checkpoint(RUN, 2)
        with pytest.raises(CorruptObjectError):
            await provider.load_latest_checkpoint(RUN)
        await _assert_loads(provider, payloads, 0, 1)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(14)
    @pytest.mark.parametrize("damage", ["flipped-payload-byte", "garbage", "empty", "header-only"])
    async def test_c14_rewritten_bad_bytes_are_detected(
        self,
        provider: CheckpointProvider,
        checked_backdoor: Backdoor,
        damage: str,
    ) -> None:
        """[C14] Bad bytes behind intact provider framing are caught by the envelope checksum."""
        payloads = await _three_checkpoints(provider)
        envelope = provider.envelope.wrap(payloads[1])
        if damage == "flipped-payload-byte":
            middle = len(envelope) // 2
            raw = envelope[:middle] + bytes([envelope[middle] ^ 0x01]) + envelope[middle + 1 :]
        elif damage == "garbage":
            raw = b"this is not a durably object" * 10
        elif damage == "empty":
            raw = b""
        else:
            raw = envelope[:40]
        await checked_backdoor.write_checkpoint(RUN, 1, raw)
        with pytest.raises(CorruptObjectError):
            await provider.load_checkpoint(RUN, 1)
        await _assert_loads(provider, payloads, 0, 2)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(14)
    async def test_c14_an_unknown_format_version_is_refused(
        self,
        provider: CheckpointProvider,
        checked_backdoor: Backdoor,
    ) -> None:
        """[C14] An envelope of an unknown format version raises UnsupportedFormatError."""
        payloads = await _three_checkpoints(provider)
        future = with_format_version(provider.envelope.wrap(b"from the future"), 99)
        await checked_backdoor.write_checkpoint(RUN, 2, future)
        with pytest.raises(UnsupportedFormatError):
            await provider.load_checkpoint(RUN, 2)
        with pytest.raises(UnsupportedFormatError):
            await provider.load_latest_checkpoint(RUN)
        await _assert_loads(provider, payloads, 0, 1)


async def _three_checkpoints(provider: CheckpointProvider) -> dict[int, bytes]:
    payloads = {seq: random_bytes(6000, seed=140 + seq) for seq in range(3)}
    for seq, data in payloads.items():
        await provider.save_checkpoint(RUN, seq, data)
    return payloads


async def _assert_loads(
    provider: CheckpointProvider,
    payloads: dict[int, bytes],
    *seqs: int,
) -> None:
    for seq in seqs:
        got = await provider.load_checkpoint(RUN, seq)
        assert got.data == payloads[seq], f"intact checkpoint {seq} came back with other bytes"
