"""Cross-process clauses (C22): races between provider instances in child processes.

Each test opens one instance per child process (see :mod:`durably_conformance._processes`)
with ``from_url(store_url, store_options)`` and makes them race: every call of a round
starts at the same wall-clock instant. A provider whose atomicity comes from a
process-local lock (an ``asyncio.Lock``, a ``threading.Lock``) passes the in-process
races of C8 and C15 and fails these.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import pytest_asyncio

from durably.errors import (
    AlreadyExistsError,
    FencedError,
    LeaseHeldError,
    NotFoundError,
    PreconditionFailedError,
)
from durably.storage import CheckpointInfo, CheckpointProvider, ExpectedVersion, Lease
from durably_conformance._base import ProviderPool, SuiteBase
from durably_conformance._processes import ChildProcesses, race

__all__ = ["ProcessSuite"]

RUN = "run-1"
LONG = 600.0
ROUNDS = 5
"""Rounds of each race (each round starts one call in every child process)."""


def _describe(results: list[Any]) -> str:
    return "; ".join(
        f"process {i}: {type(r).__name__}" + (f" {r}" if isinstance(r, BaseException) else "")
        for i, r in enumerate(results)
    )


class ProcessSuite(SuiteBase):
    """Clause C22 across processes: creates, conditional writes, claims and fencing."""

    @pytest_asyncio.fixture(loop_scope="function")
    async def processes(
        self,
        provider_pool: ProviderPool,
        store_url: str | None,
        store_options: Mapping[str, Any],
    ) -> AsyncIterator[ChildProcesses]:
        """Instances of the provider in child processes, on this test's store."""
        if store_url is None:
            pytest.fail(
                "Capability.SHARED is checked across processes: override the store_url "
                "fixture (and store_options, if from_url needs options to open the store "
                "that make_provider uses) so that child processes can open the same store "
                "with from_url(store_url, store_options)",
                pytrace=False,
            )
        first = provider_pool.first
        # The store exists (tables, buckets...) before several processes first touch it.
        await first.get_lease(RUN)
        group = ChildProcesses(type(first), store_url, store_options)
        try:
            yield group
        finally:
            await group.aclose()

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(22)
    @pytest.mark.durably_shared
    async def test_c22_concurrent_creates_across_processes_exactly_one_wins(
        self,
        provider: CheckpointProvider,
        processes: ChildProcesses,
    ) -> None:
        """[C22] (C5, C8) Of creates of one seq started at once in several processes,
        exactly one wins and its bytes are stored."""
        remotes = await processes.open()
        for seq in range(ROUNDS):
            payloads = [f"seq {seq} from process {r.index}".encode() for r in remotes]
            results = await race(
                [r.call("save_checkpoint", RUN, seq, payloads[r.index]) for r in remotes]
            )
            winners = [i for i, r in enumerate(results) if isinstance(r, CheckpointInfo)]
            assert len(winners) == 1, (
                f"seq {seq}: {len(winners)} processes created it: {_describe(results)}"
            )
            assert all(
                isinstance(r, AlreadyExistsError)
                for r in results
                if not isinstance(r, CheckpointInfo)
            ), _describe(results)
            stored = await provider.load_checkpoint(RUN, seq)
            winner = results[winners[0]]
            assert (stored.data, stored.info.version) == (payloads[winners[0]], winner.version)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(22)
    @pytest.mark.durably_shared
    async def test_c22_conditional_writes_across_processes(
        self,
        provider: CheckpointProvider,
        processes: ChildProcesses,
    ) -> None:
        """[C22] (C6, C7, C8) ExpectedVersion races across processes have one winner;
        concurrent overwrites all get distinct versions and one of them is stored whole."""
        remotes = await processes.open()
        for seq in range(ROUNDS):
            base = await provider.save_checkpoint(RUN, seq, b"base")
            payloads = [f"seq {seq} from process {r.index}".encode() for r in remotes]
            results = await race(
                [
                    r.call(
                        "save_checkpoint",
                        RUN,
                        seq,
                        payloads[r.index],
                        mode=ExpectedVersion(base.version),
                    )
                    for r in remotes
                ]
            )
            winners = [i for i, r in enumerate(results) if isinstance(r, CheckpointInfo)]
            assert len(winners) == 1, (
                f"seq {seq}: {len(winners)} processes replaced version {base.version!r}: "
                f"{_describe(results)}"
            )
            assert all(
                isinstance(r, PreconditionFailedError)
                for r in results
                if not isinstance(r, CheckpointInfo)
            ), _describe(results)
            stored = await provider.load_checkpoint(RUN, seq)
            winner = results[winners[0]]
            assert (stored.data, stored.info.version) == (payloads[winners[0]], winner.version)
        seq = ROUNDS
        payloads = [f"overwrite from process {r.index}".encode() for r in remotes]
        results = await race(
            [
                r.call("save_checkpoint", RUN, seq, payloads[r.index], mode="overwrite")
                for r in remotes
            ]
        )
        assert all(isinstance(r, CheckpointInfo) for r in results), _describe(results)
        versions = [r.version for r in results]
        assert len(set(versions)) == len(versions), f"overwrites shared a version: {versions}"
        stored = await provider.load_checkpoint(RUN, seq)
        assert (stored.data, stored.info.version) in set(zip(payloads, versions, strict=True)), (
            "the stored checkpoint is not one of the overwrites (bytes and version of one "
            "write): a torn write"
        )

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(22)
    @pytest.mark.durably_shared
    async def test_c22_lease_claims_across_processes_exactly_one_wins(
        self,
        provider: CheckpointProvider,
        processes: ChildProcesses,
    ) -> None:
        """[C22] (C15) Of claims started at once in several processes, exactly one wins;
        the others raise LeaseHeldError."""
        remotes = await processes.open()
        for round_ in range(ROUNDS):
            execution_id = f"claimed-{round_}"
            results = await race(
                [r.call("claim", execution_id, f"worker-{r.index}", ttl=LONG) for r in remotes]
            )
            winners = [r for r in results if isinstance(r, Lease)]
            assert len(winners) == 1, (
                f"{execution_id}: {len(winners)} processes got the lease: {_describe(results)}"
            )
            assert all(
                isinstance(r, LeaseHeldError) for r in results if not isinstance(r, Lease)
            ), _describe(results)
            current = await provider.get_lease(execution_id)
            assert current is not None
            assert (current.owner, current.epoch) == (winners[0].owner, winners[0].epoch)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(22)
    @pytest.mark.durably_shared
    async def test_c22_a_claim_in_one_process_fences_another(
        self,
        provider: CheckpointProvider,
        processes: ChildProcesses,
    ) -> None:
        """[C22] (C9, C16) A claim made in one process fences the superseded lease's
        writes, deletes and renewals in another -- also when they race with the claim."""
        zombie, heir, *_ = await processes.open(2)
        lease = await zombie.run("claim", RUN, "worker-a", ttl=LONG)
        await zombie.run("save_checkpoint", RUN, 0, b"zombie 0", lease=lease)
        for seq in range(1, ROUNDS + 1):
            # The same owner restarts in another process while its old incarnation writes.
            write, claim = await race(
                [
                    zombie.call("save_checkpoint", RUN, seq, f"zombie {seq}".encode(), lease=lease),
                    heir.call("claim", RUN, "worker-a", ttl=LONG),
                ]
            )
            assert isinstance(claim, Lease), f"the restarted owner's claim failed: {claim!r}"
            assert claim.epoch > lease.epoch
            assert isinstance(write, (CheckpointInfo, FencedError)), repr(write)
            if isinstance(write, FencedError):
                with pytest.raises(NotFoundError):
                    await provider.load_checkpoint(RUN, seq)
            # From now on everything the old incarnation does is fenced.
            with pytest.raises(FencedError):
                await zombie.run(
                    "save_checkpoint", RUN, seq, b"late", mode="overwrite", lease=lease
                )
            with pytest.raises(FencedError):
                await zombie.run("delete_checkpoint", RUN, 0, lease=lease)
            with pytest.raises(FencedError):
                await zombie.run("renew", lease, ttl=LONG)
            assert (await provider.load_checkpoint(RUN, 0)).data == b"zombie 0"
            await heir.run("save_checkpoint", RUN, 100 + seq, b"heir", lease=claim)
            zombie, heir, lease = heir, zombie, claim
        current = await provider.get_lease(RUN)
        assert current is not None
        assert current.epoch == lease.epoch
