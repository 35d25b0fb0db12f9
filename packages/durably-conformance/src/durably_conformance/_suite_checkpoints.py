"""Checkpoint clauses: load, save, latest, listing, write modes, delete, prune, metadata, bytes."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import time

import pytest

from durably.errors import (
    AlreadyExistsError,
    NotFoundError,
    PreconditionFailedError,
)
from durably.storage import (
    CheckpointInfo,
    CheckpointProvider,
    ExpectedVersion,
    StoredCheckpoint,
)
from durably_conformance._base import SuiteBase
from durably_conformance._helpers import (
    ALL_BYTE_VALUES,
    collect_pages,
    drain,
    gather_limited,
    list_while_changing,
    random_bytes,
)

__all__ = ["CheckpointSuite"]

RUN = "run-1"


async def _seqs(provider: CheckpointProvider, execution_id: str = RUN) -> list[int]:
    return [info.seq async for info in provider.iter_checkpoints(execution_id)]


async def _list_all(
    provider: CheckpointProvider,
    execution_id: str,
    *,
    limit: int,
    after: int | None = None,
) -> list[CheckpointInfo]:
    async def fetch(cursor: str | None) -> object:
        return await provider.list_checkpoints(
            execution_id,
            cursor=cursor,
            limit=limit,
            after=after,
        )

    items, _pages = await collect_pages(fetch, limit=limit, max_pages=10_000)
    return items


def _assert_same_info(got: CheckpointInfo, want: CheckpointInfo, tolerance: float) -> None:
    assert got.execution_id == want.execution_id
    assert got.seq == want.seq
    assert got.version == want.version, "the version changed without a write"
    assert got.size == want.size
    assert dict(got.metadata) == dict(want.metadata)
    assert abs(got.created_at - want.created_at) <= tolerance


class CheckpointSuite(SuiteBase):
    """Clauses C1-C8, C10, C11, C19, C20 and C27."""

    # ------------------------------------------------------------------ C1 load

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(1)
    async def test_c01_load_returns_what_was_saved(self, provider: CheckpointProvider) -> None:
        """[C1] load_checkpoint returns the saved bytes, seq, execution id and metadata."""
        saved = {}
        for seq in range(4):
            data = random_bytes(3000 + seq, seed=seq)
            saved[seq] = (
                data,
                await provider.save_checkpoint(
                    RUN,
                    seq,
                    data,
                    metadata={"step": str(seq)},
                ),
            )
        for seq in (2, 0, 3, 1):
            data, info = saved[seq]
            got = await provider.load_checkpoint(RUN, seq)
            assert isinstance(got, StoredCheckpoint)
            assert got.data == data, f"checkpoint {seq} came back with other bytes"
            assert got.seq == seq
            assert got.info.execution_id == RUN
            assert dict(got.metadata) == {"step": str(seq)}
            assert got.info.version == info.version

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(1)
    async def test_c01_load_missing_raises_not_found(self, provider: CheckpointProvider) -> None:
        """[C1] Loading a seq or an execution that does not exist raises NotFoundError."""
        with pytest.raises(NotFoundError):
            await provider.load_checkpoint("never-written", 0)
        await provider.save_checkpoint(RUN, 1, b"one")
        for seq in (0, 2, 10, 2**63 - 1):
            with pytest.raises(NotFoundError):
                await provider.load_checkpoint(RUN, seq)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(1)
    async def test_c01_load_many_returns_what_load_returns(
        self, provider: CheckpointProvider
    ) -> None:
        """[C1] load_checkpoints returns, for each seq asked in order, what load_checkpoint
        returns, and None for a checkpoint that is not stored (a provider's _load_many)."""
        saved = {}
        for seq in (0, 1, 2, 4, 5, 9):
            data = random_bytes(2000 + seq, seed=100 + seq)
            saved[seq] = (
                data,
                await provider.save_checkpoint(RUN, seq, data, metadata={"s": str(seq)}),
            )
        asked = list(range(12))
        got = await provider.load_checkpoints(RUN, asked)
        assert len(got) == len(asked), "one item per seq asked"
        for seq, item in zip(asked, got, strict=True):
            if seq not in saved:
                assert item is None, f"checkpoint {seq} is not stored, but came back"
                continue
            data, info = saved[seq]
            assert isinstance(item, StoredCheckpoint), f"checkpoint {seq} did not come back"
            assert item.seq == seq
            assert item.data == data, f"checkpoint {seq} came back with other bytes"
            assert dict(item.metadata) == {"s": str(seq)}
            assert item.info.version == info.version
        assert await provider.load_checkpoints(RUN, []) == []
        assert await provider.load_checkpoints("never-written", [0, 1]) == [None, None]

    # ------------------------------------------------------- C2 durable save

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(2)
    async def test_c02_save_returns_the_stored_info(self, provider: CheckpointProvider) -> None:
        """[C2] save_checkpoint returns the info of what it stored, and load agrees."""
        data = random_bytes(5000, seed=2)
        before = time.time()
        info = await provider.save_checkpoint(RUN, 3, data, metadata={"k": "v"})
        after = time.time()
        assert isinstance(info, CheckpointInfo)
        assert (info.execution_id, info.seq) == (RUN, 3)
        assert isinstance(info.version, str), "version must be a str"
        assert info.version, "version must not be empty"
        assert info.size == len(provider.envelope.wrap(data)), (
            "size must be the stored size, envelope included"
        )
        assert dict(info.metadata) == {"k": "v"}
        tolerance = self.clock_tolerance
        assert before - tolerance <= info.created_at <= after + tolerance, (
            f"created_at {info.created_at} is not UNIX seconds of the write (now={after})"
        )
        loaded = await provider.load_checkpoint(RUN, 3)
        _assert_same_info(loaded.info, info, tolerance)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(2)
    async def test_c02_saved_checkpoint_is_visible_at_once(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C2] As soon as save returns, load, latest, listings and executions show it."""
        data = random_bytes(2048, seed=22)
        info = await provider.save_checkpoint(RUN, 0, data)
        assert (await provider.load_checkpoint(RUN, 0)).data == data
        latest = await provider.load_latest_checkpoint(RUN)
        assert latest is not None
        assert latest.data == data
        listed = await provider.list_checkpoints(RUN)
        assert [item.seq for item in listed.items] == [0]
        _assert_same_info(listed.items[0], info, self.clock_tolerance)
        executions = await provider.list_executions()
        assert [item.execution_id for item in executions.items] == [RUN]

    # --------------------------------------------------------------- C3 latest

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(3)
    async def test_c03_latest_is_highest_seq_not_last_written(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C3] load_latest_checkpoint returns the highest seq, compared as integers."""
        for seq in (0, 1, 2, 9, 10):
            await provider.save_checkpoint(RUN, seq, f"data {seq}".encode())
        await provider.save_checkpoint(RUN, 5, b"data 5")  # written last, not the highest
        latest = await provider.load_latest_checkpoint(RUN)
        assert latest is not None
        assert latest.seq == 10, "seq 10 > 9 > 5: sequence numbers compare as integers"
        assert latest.data == b"data 10"

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(3)
    async def test_c03_latest_of_unknown_execution_is_none(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C3] An execution without checkpoints has no latest checkpoint (None)."""
        assert await provider.load_latest_checkpoint(RUN) is None
        await provider.save_checkpoint("other", 0, b"x")
        assert await provider.load_latest_checkpoint(RUN) is None

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(3)
    async def test_c03_latest_with_huge_sequence_numbers(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C3] Sequence numbers up to 2**63 - 1 are stored and ordered correctly."""
        seqs = [7, 2**31, 2**32 + 1, 2**40, 2**63 - 1]
        for seq in (2**40, 2**63 - 1, 7, 2**32 + 1, 2**31):
            await provider.save_checkpoint(RUN, seq, str(seq).encode())
        latest = await provider.load_latest_checkpoint(RUN)
        assert latest is not None
        assert (latest.seq, latest.data) == (2**63 - 1, str(2**63 - 1).encode())
        assert await _seqs(provider) == seqs
        for seq in seqs:
            assert (await provider.load_checkpoint(RUN, seq)).data == str(seq).encode()

    # -------------------------------------------------------------- C4 listing

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(4)
    async def test_c04_listing_is_in_ascending_seq_order(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C4] Listing returns every checkpoint once, ascending by seq as an integer."""
        seqs = [0, 1, 2, 9, 10, 11, 99, 100, 1000, 12345, 2**32 + 1]
        shuffled = seqs[:]
        random.Random(4).shuffle(shuffled)
        for seq in shuffled:
            await provider.save_checkpoint(RUN, seq, b"x", metadata={"seq": str(seq)})
        page = await provider.list_checkpoints(RUN)
        assert [info.seq for info in page.items] == seqs
        assert page.next_cursor is None
        for info in page.items:
            assert info.execution_id == RUN
            assert dict(info.metadata) == {"seq": str(info.seq)}, (
                "listings must carry each checkpoint's metadata (prune relies on it)"
            )
        assert await _seqs(provider) == seqs

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(4)
    async def test_c04_listing_of_unknown_execution_is_empty(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C4] An execution without checkpoints lists no items and no cursor."""
        page = await provider.list_checkpoints(RUN)
        assert list(page.items) == []
        assert page.next_cursor is None
        await provider.save_checkpoint("run-10", 0, b"x")
        page = await provider.list_checkpoints(RUN)
        assert list(page.items) == []
        assert page.next_cursor is None

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(4)
    async def test_c04_paging_returns_everything_once(self, provider: CheckpointProvider) -> None:
        """[C4] Following next_cursor with any limit yields every checkpoint once, in order."""
        seqs = list(range(0, 50, 2))  # 25 checkpoints with gaps
        for seq in seqs:
            await provider.save_checkpoint(RUN, seq, b"x")
        for limit in (1, 2, 3, 7, 24, 25, 26, 1000):
            items = await _list_all(provider, RUN, limit=limit)
            assert [info.seq for info in items] == seqs, f"limit={limit}"

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(4)
    async def test_c04_after_skips_lower_sequence_numbers(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C4] ``after=n`` lists only seq > n, with and without paging."""
        seqs = [0, 1, 2, 5, 8, 13, 21]
        for seq in seqs:
            await provider.save_checkpoint(RUN, seq, b"x")
        for after in (0, 1, 3, 5, 20, 21, 1000):
            want = [seq for seq in seqs if seq > after]
            page = await provider.list_checkpoints(RUN, after=after)
            assert [info.seq for info in page.items] == want, f"after={after}"
            for limit in (1, 2):
                items = await _list_all(provider, RUN, limit=limit, after=after)
                assert [info.seq for info in items] == want, f"after={after} limit={limit}"
        assert [i.seq async for i in provider.iter_checkpoints(RUN, after=5)] == [8, 13, 21]

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(4)
    async def test_c04_cursor_survives_writes_between_pages(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C4] Checkpoints present during the whole listing are returned exactly once."""
        for seq in range(10):
            await provider.save_checkpoint(RUN, seq, b"x")
        first = await provider.list_checkpoints(RUN, limit=3)
        seen = [info.seq for info in first.items]
        assert 1 <= len(seen) <= 3
        assert first.next_cursor is not None
        await provider.delete_checkpoint(RUN, 7)
        await provider.save_checkpoint(RUN, 20, b"new")
        cursor: str | None = first.next_cursor
        pages = 0
        while cursor is not None:
            page = await provider.list_checkpoints(RUN, cursor=cursor, limit=3)
            seen.extend(info.seq for info in page.items)
            cursor = page.next_cursor
            pages += 1
            assert pages < 100, "listing did not end"
        assert seen == sorted(set(seen)), f"duplicates or disorder: {seen}"
        stable = {0, 1, 2, 3, 4, 5, 6, 8, 9}
        assert stable <= set(seen), f"missing {sorted(stable - set(seen))}"
        assert set(seen) <= stable | {7, 20}

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(4)
    async def test_c04_cursor_survives_deletes_and_inserts_before_it(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C4] Deleting listed checkpoints and inserting lower seqs between pages skips
        and repeats nothing (a keyset cursor, not an offset)."""
        initial = [100 * i for i in range(1, 13)]
        for seq in initial:
            await provider.save_checkpoint(RUN, seq, b"x")
        inserted: list[int] = []

        async def insert_before(seq: int) -> None:
            for _ in range(2):
                inserted.append(len(inserted) + 1)  # 1, 2, ...: below every listed seq
                await provider.save_checkpoint(RUN, inserted[-1], b"new")

        seen = await list_while_changing(
            lambda cursor: provider.list_checkpoints(RUN, cursor=cursor, limit=3),
            lambda info: info.seq,
            delete=lambda seq: provider.delete_checkpoint(RUN, seq),
            insert_before=insert_before,
            limit=3,
        )
        assert seen == sorted(set(seen)), f"duplicates or disorder: {seen}"
        assert set(initial) <= set(seen), f"skipped {sorted(set(initial) - set(seen))}"
        assert set(seen) <= set(initial) | set(inserted), seen

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(4)
    async def test_c04_paging_past_1000_with_default_page_size(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C4] 1,100 checkpoints: default pages (1,000) and iteration cross the 1,000 mark."""
        count = 1100
        await gather_limited(
            (functools.partial(provider.save_checkpoint, RUN, seq, b"") for seq in range(count)),
            limit=self.write_concurrency,
        )
        first = await provider.list_checkpoints(RUN)
        assert 1 <= len(first.items) <= 1000
        assert first.next_cursor is not None, "1,100 checkpoints do not fit one default page"
        assert await _seqs(provider) == list(range(count))
        latest = await provider.load_latest_checkpoint(RUN)
        assert latest is not None
        assert latest.seq == count - 1

    # ------------------------------------------------------------ C5 create

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(5)
    async def test_c05_create_rejects_an_existing_seq(self, provider: CheckpointProvider) -> None:
        """[C5] "create" (the default) raises AlreadyExistsError and changes nothing."""
        original = await provider.save_checkpoint(RUN, 0, b"first", metadata={"n": "1"})
        with pytest.raises(AlreadyExistsError):
            await provider.save_checkpoint(RUN, 0, b"second", metadata={"n": "2"})
        with pytest.raises(AlreadyExistsError):
            await provider.save_checkpoint(RUN, 0, b"third", mode="create")
        got = await provider.load_checkpoint(RUN, 0)
        assert got.data == b"first"
        assert dict(got.metadata) == {"n": "1"}
        assert got.info.version == original.version
        assert await _seqs(provider) == [0]

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(5)
    async def test_c05_create_writes_new_sequence_numbers(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C5] "create" stores a seq that does not exist yet, gaps allowed."""
        for seq in (0, 1, 5):
            await provider.save_checkpoint(RUN, seq, bytes([seq]), mode="create")
        assert await _seqs(provider) == [0, 1, 5]
        assert (await provider.load_checkpoint(RUN, 5)).data == b"\x05"

    # --------------------------------------------------------- C6 overwrite

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(6)
    async def test_c06_overwrite_replaces_data_metadata_and_version(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C6] "overwrite" replaces bytes and metadata (not merged) and changes the version."""
        first = await provider.save_checkpoint(RUN, 0, b"old", metadata={"a": "1", "b": "2"})
        second = await provider.save_checkpoint(
            RUN,
            0,
            b"new",
            metadata={"c": "3"},
            mode="overwrite",
        )
        assert second.version != first.version
        got = await provider.load_checkpoint(RUN, 0)
        assert got.data == b"new"
        assert dict(got.metadata) == {"c": "3"}
        assert got.info.version == second.version
        assert await _seqs(provider) == [0]

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(6)
    async def test_c06_overwrite_creates_a_missing_seq(self, provider: CheckpointProvider) -> None:
        """[C6] "overwrite" of a seq that does not exist creates it."""
        await provider.save_checkpoint(RUN, 4, b"fresh", mode="overwrite")
        assert (await provider.load_checkpoint(RUN, 4)).data == b"fresh"

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(6)
    async def test_c06_every_write_changes_the_version(self, provider: CheckpointProvider) -> None:
        """[C6] Rewriting identical bytes and metadata still yields a new version."""
        versions = [(await provider.save_checkpoint(RUN, 0, b"same", metadata={"m": "x"})).version]
        for _ in range(3):
            info = await provider.save_checkpoint(
                RUN,
                0,
                b"same",
                metadata={"m": "x"},
                mode="overwrite",
            )
            versions.append(info.version)
        info = await provider.save_checkpoint(
            RUN,
            0,
            b"same",
            metadata={"m": "y"},
            mode="overwrite",
        )
        versions.append(info.version)
        assert len(set(versions)) == len(versions), f"versions repeat: {versions}"

    # --------------------------------------------------- C7 expected version

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(7)
    async def test_c07_expected_version_replaces_the_current_object(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C7] ExpectedVersion(current) replaces the object and yields a new version."""
        first = await provider.save_checkpoint(RUN, 0, b"v1")
        second = await provider.save_checkpoint(
            RUN,
            0,
            b"v2",
            metadata={"x": "y"},
            mode=ExpectedVersion(first.version),
        )
        assert second.version != first.version
        third = await provider.save_checkpoint(RUN, 0, b"v3", mode=ExpectedVersion(second.version))
        got = await provider.load_checkpoint(RUN, 0)
        assert got.data == b"v3"
        assert dict(got.metadata) == {}
        assert got.info.version == third.version

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(7)
    async def test_c07_stale_version_is_rejected(self, provider: CheckpointProvider) -> None:
        """[C7] A version that is no longer current raises PreconditionFailedError, no write."""
        first = await provider.save_checkpoint(RUN, 0, b"v1")
        second = await provider.save_checkpoint(RUN, 0, b"v2", mode="overwrite")
        with pytest.raises(PreconditionFailedError):
            await provider.save_checkpoint(RUN, 0, b"v3", mode=ExpectedVersion(first.version))
        with pytest.raises(PreconditionFailedError):
            await provider.save_checkpoint(RUN, 0, b"v3", mode=ExpectedVersion("no-such-version"))
        got = await provider.load_checkpoint(RUN, 0)
        assert (got.data, got.info.version) == (b"v2", second.version)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(7)
    async def test_c07_expected_version_of_a_missing_seq_creates_nothing(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C7] ExpectedVersion on a seq that does not exist fails and creates nothing."""
        other = await provider.save_checkpoint(RUN, 0, b"zero")
        with pytest.raises(PreconditionFailedError):
            await provider.save_checkpoint(RUN, 1, b"one", mode=ExpectedVersion(other.version))
        with pytest.raises(PreconditionFailedError):
            await provider.save_checkpoint("run-2", 0, b"x", mode=ExpectedVersion(other.version))
        with pytest.raises(NotFoundError):
            await provider.load_checkpoint(RUN, 1)
        assert await _seqs(provider) == [0]
        assert await provider.load_latest_checkpoint("run-2") is None

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(7)
    async def test_c07_version_of_a_deleted_object_does_not_match_its_successor(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C7] Delete and re-create (same bytes): the old version no longer matches."""
        old = await provider.save_checkpoint(RUN, 0, b"same")
        assert await provider.delete_checkpoint(RUN, 0)
        new = await provider.save_checkpoint(RUN, 0, b"same")
        assert new.version != old.version
        with pytest.raises(PreconditionFailedError):
            await provider.save_checkpoint(RUN, 0, b"late", mode=ExpectedVersion(old.version))
        assert (await provider.load_checkpoint(RUN, 0)).data == b"same"

    # ---------------------------------------------------- C8 concurrent writers

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(8)
    async def test_c08_concurrent_creates_exactly_one_wins(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C8] Of many concurrent "create" writes of one new seq, exactly one succeeds."""
        writers = 12
        for seq in range(5):
            payloads = [random_bytes(1024, seed=seq * 100 + i) for i in range(writers)]
            results = await asyncio.gather(
                *(provider.save_checkpoint(RUN, seq, data) for data in payloads),
                return_exceptions=True,
            )
            winners = [i for i, r in enumerate(results) if isinstance(r, CheckpointInfo)]
            others = [r for r in results if not isinstance(r, CheckpointInfo)]
            assert len(winners) == 1, f"seq {seq}: {len(winners)} writers succeeded: {results}"
            assert all(isinstance(r, AlreadyExistsError) for r in others), others
            got = await provider.load_checkpoint(RUN, seq)
            assert got.data == payloads[winners[0]], "the stored bytes are not the winner's"
            winner = results[winners[0]]
            assert isinstance(winner, CheckpointInfo)
            assert got.info.version == winner.version

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(8)
    async def test_c08_concurrent_expected_version_exactly_one_wins(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C8] Of many concurrent ExpectedVersion writes of one version, exactly one succeeds."""
        writers = 12
        current = await provider.save_checkpoint(RUN, 0, b"base")
        for round_ in range(5):
            payloads = [f"round {round_} writer {i}".encode() for i in range(writers)]
            results = await asyncio.gather(
                *(
                    provider.save_checkpoint(RUN, 0, data, mode=ExpectedVersion(current.version))
                    for data in payloads
                ),
                return_exceptions=True,
            )
            winners = [i for i, r in enumerate(results) if isinstance(r, CheckpointInfo)]
            assert len(winners) == 1, f"round {round_}: {len(winners)} writers succeeded"
            assert all(
                isinstance(r, PreconditionFailedError)
                for r in results
                if not isinstance(r, CheckpointInfo)
            ), results
            got = await provider.load_checkpoint(RUN, 0)
            assert got.data == payloads[winners[0]]
            winner = results[winners[0]]
            assert isinstance(winner, CheckpointInfo)
            current = winner

    # ----------------------------------------------------------- C10 delete

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(10)
    async def test_c10_delete_returns_whether_it_existed(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C10] delete_checkpoint returns True once, then False; the checkpoint is gone."""
        for seq in range(3):
            await provider.save_checkpoint(RUN, seq, bytes([seq]))
        assert await provider.delete_checkpoint(RUN, 1) is True
        assert await provider.delete_checkpoint(RUN, 1) is False
        assert await provider.delete_checkpoint(RUN, 99) is False
        assert await provider.delete_checkpoint("never-written", 0) is False
        with pytest.raises(NotFoundError):
            await provider.load_checkpoint(RUN, 1)
        assert await _seqs(provider) == [0, 2]
        assert (await provider.load_checkpoint(RUN, 0)).data == b"\x00"
        assert (await provider.load_checkpoint(RUN, 2)).data == b"\x02"

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(10)
    async def test_c10_deleting_the_latest_makes_the_previous_one_latest(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C10] After deleting the latest checkpoint, the next highest seq is the latest."""
        for seq in (0, 3, 7):
            await provider.save_checkpoint(RUN, seq, f"c{seq}".encode())
        for deleted, expected in ((7, 3), (3, 0)):
            assert await provider.delete_checkpoint(RUN, deleted)
            latest = await provider.load_latest_checkpoint(RUN)
            assert latest is not None
            assert (latest.seq, latest.data) == (expected, f"c{expected}".encode())
        assert await provider.delete_checkpoint(RUN, 0)
        assert await provider.load_latest_checkpoint(RUN) is None
        assert await _seqs(provider) == []

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(10)
    async def test_c10_a_deleted_seq_can_be_created_again(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C10] After a delete, "create" of the same seq succeeds with the new bytes."""
        await provider.save_checkpoint(RUN, 0, b"before")
        assert await provider.delete_checkpoint(RUN, 0)
        await provider.save_checkpoint(RUN, 0, b"after", mode="create")
        assert (await provider.load_checkpoint(RUN, 0)).data == b"after"

    # ------------------------------------------------------------- C11 prune

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(11)
    async def test_c11_prune_keep_last(self, provider: CheckpointProvider) -> None:
        """[C11] prune(keep_last=n) deletes all but the n newest and returns them ascending."""
        for seq in range(6):
            await provider.save_checkpoint(RUN, seq, bytes([seq]))
        assert await provider.prune(RUN, keep_last=2) == [0, 1, 2, 3]
        assert await _seqs(provider) == [4, 5]
        assert await provider.prune(RUN, keep_last=2) == []
        latest = await provider.load_latest_checkpoint(RUN)
        assert latest is not None
        assert latest.seq == 5

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(11)
    async def test_c11_prune_keeps_the_base_of_the_latest(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C11] prune keeps every seq >= the latest's "durably.base", whatever keep_last says."""
        for seq in range(10):
            meta = {"durably.base": "4"} if seq == 9 else {}
            await provider.save_checkpoint(RUN, seq, f"c{seq}".encode(), metadata=meta)
        assert await provider.prune(RUN, keep_last=1) == [0, 1, 2, 3]
        assert await _seqs(provider) == [4, 5, 6, 7, 8, 9]
        # Resuming needs the latest and everything from its base on: all still load.
        latest = await provider.load_latest_checkpoint(RUN)
        assert latest is not None
        assert latest.seq == 9
        for seq in range(4, 10):
            assert (await provider.load_checkpoint(RUN, seq)).data == f"c{seq}".encode()

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(11)
    async def test_c11_prune_never_deletes_the_latest(self, provider: CheckpointProvider) -> None:
        """[C11] Even keep_last=1 with older_than=0 keeps the latest checkpoint."""
        await provider.save_checkpoint(RUN, 0, b"only")
        assert await provider.prune(RUN, keep_last=1, older_than=0) == []
        assert await _seqs(provider) == [0]
        assert await provider.prune("never-written", keep_last=1) == []

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(11)
    async def test_c11_prune_older_than_spares_recent_checkpoints(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C11] older_than=3600 deletes nothing that was written a moment ago."""
        for seq in range(4):
            await provider.save_checkpoint(RUN, seq, b"x")
        assert await provider.prune(RUN, older_than=3600) == []
        assert await provider.prune(RUN, keep_last=1, older_than=3600) == []
        assert await _seqs(provider) == [0, 1, 2, 3]

    # --------------------------------------------------------- C19 metadata

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(19)
    async def test_c19_unicode_metadata_round_trips(self, provider: CheckpointProvider) -> None:
        """[C19] Any Unicode metadata values come back exactly, in every view."""
        metadata = {
            "empty": "",
            "ascii": "plain value",
            "latin": "na\u00efve caf\u00e9",
            "cjk": "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
            "emoji": "\U0001f389\U0001f468\u200d\U0001f469\u200d\U0001f467",
            "rtl": "\u05e2\u05d1\u05e8\u05d9\u05ea \u0627\u0644\u0639\u0631\u0628\u064a\u0629",
            "combining": "e\u0301 vs \u00e9",
            "nul": "before\x00after",
            "controls": "line\nbreak\ttab\rreturn\u2028sep",
            "quotes": "'single' \"double\" `back` \\ backslash",
            "url-ish": "a=1&b=2?c#d%20e/f+g;h:i",
            "json-ish": '{"k": [1, 2]}',
            "astral": "\U00010348\U0010fffd",
            "durably.base": "17",
            "k" * 64: "longest key",
        }
        saved = await provider.save_checkpoint(RUN, 0, b"x", metadata=metadata)
        assert dict(saved.metadata) == metadata
        assert dict((await provider.load_checkpoint(RUN, 0)).metadata) == metadata
        latest = await provider.load_latest_checkpoint(RUN)
        assert latest is not None
        assert dict(latest.metadata) == metadata
        listed = await provider.list_checkpoints(RUN)
        assert dict(listed.items[0].metadata) == metadata

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(19)
    async def test_c19_metadata_at_the_size_limit_round_trips(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C19] 2 KiB of metadata (multi-byte characters included) round-trips."""
        # The core counts len(key) + len(value.encode()) and allows 2048 bytes.
        metadata = {"a": "\u00e9" * 600, "b": "\u20ac" * 200, "c": "x" * (2048 - 3 - 1200 - 600)}
        assert sum(len(k) + len(v.encode()) for k, v in metadata.items()) == 2048
        await provider.save_checkpoint(RUN, 0, b"x", metadata=metadata)
        assert dict((await provider.load_checkpoint(RUN, 0)).metadata) == metadata
        listed = await provider.list_checkpoints(RUN)
        assert dict(listed.items[0].metadata) == metadata

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(19)
    async def test_c19_empty_metadata_is_an_empty_mapping(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C19] A checkpoint saved without metadata has empty (not missing) metadata."""
        saved = await provider.save_checkpoint(RUN, 0, b"x")
        assert dict(saved.metadata) == {}
        assert dict((await provider.load_checkpoint(RUN, 0)).metadata) == {}
        assert dict((await provider.list_checkpoints(RUN)).items[0].metadata) == {}

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(19)
    async def test_c19_invalid_metadata_writes_nothing(self, provider: CheckpointProvider) -> None:
        """[C19] Oversized or malformed metadata is refused (ValueError) and nothing is stored."""
        for bad in ({"big": "x" * 2048}, {"Upper": "x"}, {"": "x"}, {"k": 1}):
            with pytest.raises((ValueError, TypeError)):
                await provider.save_checkpoint(RUN, 0, b"x", metadata=bad)  # type: ignore[arg-type]
        assert await _seqs(provider) == []

    # ---------------------------------------------------- C20 byte round-trip

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(20)
    @pytest.mark.parametrize("kind", ["empty", "all-byte-values", "random-1MiB", "zeros-1MiB"])
    async def test_c20_checkpoint_bytes_round_trip(
        self,
        provider: CheckpointProvider,
        kind: str,
    ) -> None:
        """[C20] Checkpoint payloads come back byte for byte (compressed or not)."""
        data = _payload(kind)
        info = await provider.save_checkpoint(RUN, 0, data)
        assert info.size == len(provider.envelope.wrap(data))
        assert (await provider.load_checkpoint(RUN, 0)).data == data
        latest = await provider.load_latest_checkpoint(RUN)
        assert latest is not None
        assert latest.data == data

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(20)
    @pytest.mark.parametrize("kind", ["empty", "all-byte-values", "random-1MiB", "zeros-1MiB"])
    async def test_c20_blob_bytes_round_trip(
        self,
        provider: CheckpointProvider,
        kind: str,
    ) -> None:
        """[C20] Blob payloads come back byte for byte (compressed or not)."""
        data = _payload(kind)
        digest = await provider.put_blob(RUN, data)
        assert await provider.get_blob(RUN, digest) == data

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(20)
    @pytest.mark.durably_large_objects
    async def test_c20_64_mib_round_trips(self, provider: CheckpointProvider) -> None:
        """[C20] With LARGE_OBJECTS, a 64 MiB checkpoint and a 64 MiB blob round-trip."""
        data = os.urandom(64 * 1024 * 1024)
        await provider.save_checkpoint(RUN, 0, data)
        got = await provider.load_checkpoint(RUN, 0)
        assert len(got.data) == len(data)
        assert got.data == data
        del got
        digest = await provider.put_blob(RUN, data)
        blob = await provider.get_blob(RUN, digest)
        assert len(blob) == len(data)
        assert blob == data

    # ---------------------------------------------- C27 concurrency, one instance

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(27)
    async def test_c27_concurrent_operations_on_one_instance(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C27] Many tasks saving, loading and listing at once on one instance all succeed."""
        runs = [f"run-{i}" for i in range(4)]
        expected = {
            (run, seq): random_bytes(512, seed=index * 100 + seq)
            for index, run in enumerate(runs)
            for seq in range(25)
        }
        await asyncio.gather(
            *(
                provider.save_checkpoint(run, seq, data, metadata={"seq": str(seq)})
                for (run, seq), data in expected.items()
            )
        )
        loaded = await asyncio.gather(
            *(provider.load_checkpoint(run, seq) for run, seq in expected)
        )
        for (key, data), got in zip(expected.items(), loaded, strict=True):
            assert got.data == data, f"{key} came back with other bytes"
            assert dict(got.metadata) == {"seq": str(key[1])}
        listings = await asyncio.gather(*(drain(provider.iter_checkpoints(run)) for run in runs))
        for listing in listings:
            assert [info.seq for info in listing] == list(range(25))


def _payload(kind: str) -> bytes:
    if kind == "empty":
        return b""
    if kind == "all-byte-values":
        return ALL_BYTE_VALUES
    if kind == "random-1MiB":
        return random_bytes(1024 * 1024, seed=20)
    if kind == "zeros-1MiB":
        return bytes(1024 * 1024)
    raise AssertionError(kind)
