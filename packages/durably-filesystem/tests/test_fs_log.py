"""The log: torn appends, damage in the middle, compaction, versions, failed writes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from durably._envelope import Envelope
from durably.errors import (
    AlreadyExistsError,
    CorruptObjectError,
    NotFoundError,
    PreconditionFailedError,
    StoreError,
)
from durably.storage import ExpectedVersion
from durably_filesystem import FilesystemBackdoor, FilesystemProvider
from durably_filesystem import _format as fmt

RUN = "run-1"


def data(seq: int, size: int = 100) -> bytes:
    unit = f"checkpoint {seq};".encode()
    return (unit * (size // len(unit) + 1))[:size]


def record(seq: int, payload: bytes, *, flip_at: int | None = None) -> bytes:
    """A whole log record for checkpoint ``seq``, optionally with one byte inverted."""
    parts = fmt.encode_record(fmt.T_CHECKPOINT, seq, 12345, 1, b"", Envelope().wrap(payload))
    raw = bytearray(b"".join(bytes(p) for p in parts))
    if flip_at is not None:
        raw[flip_at] ^= 0xFF
    return bytes(raw)


def append_raw(path: str, raw: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(raw)


def flip(path: str, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


async def seqs_of(provider: FilesystemProvider, execution_id: str = RUN) -> list[int]:
    return [info.seq async for info in provider.iter_checkpoints(execution_id)]


async def write(root: Path, count: int, size: int = 100) -> FilesystemBackdoor:
    async with FilesystemProvider(root) as provider:
        for seq in range(count):
            await provider.save_checkpoint(RUN, seq, data(seq, size))
    return FilesystemBackdoor(root)


# --------------------------------------------------------------------- torn tails


@pytest.mark.asyncio
@pytest.mark.parametrize("keep", [1, fmt.HEAD_SIZE - 1, fmt.HEAD_SIZE, fmt.HEAD_SIZE + 30, -1])
async def test_incomplete_last_record_is_ignored_then_truncated(root: Path, keep: int) -> None:
    """A crash in the middle of an append leaves a prefix of a record: it does not exist."""
    backdoor = await write(root, 3)
    log = backdoor.log_path(RUN)
    clean_size = os.path.getsize(log)
    append_raw(log, record(3, data(3))[:keep])
    assert os.path.getsize(log) > clean_size

    async with FilesystemProvider(root) as provider:
        assert await seqs_of(provider) == [0, 1, 2]
        latest = await provider.load_latest_checkpoint(RUN)
        assert latest is not None
        assert (latest.seq, latest.data) == (2, data(2))
        with pytest.raises(NotFoundError):
            await provider.load_checkpoint(RUN, 3)
        # the torn bytes are still there: readers never truncate
        assert os.path.getsize(log) > clean_size

        # the next writer cuts them off before it appends
        await provider.save_checkpoint(RUN, 3, b"the real 3")
    index = backdoor.index(RUN)
    assert index.tail is None
    assert index.corrupt_regions == []
    assert index.seqs == [0, 1, 2, 3]
    assert index.entries[3].offset == clean_size, "the new record starts where the torn one did"
    async with FilesystemProvider(root) as provider:
        assert (await provider.load_checkpoint(RUN, 3)).data == b"the real 3"
        assert [(await provider.load_checkpoint(RUN, s)).data for s in range(3)] == [
            data(0),
            data(1),
            data(2),
        ]


@pytest.mark.asyncio
async def test_a_complete_last_record_failing_its_checksum_is_damage(root: Path) -> None:
    """A crash cannot leave a whole record with wrong bytes (the file's size never
    covers data that was not written), so such a record is damage, like in the middle:
    listed, reported when loaded, the latest reports it too; it is never truncated."""
    backdoor = await write(root, 3)
    log = backdoor.log_path(RUN)
    append_raw(log, record(3, data(3), flip_at=fmt.HEAD_SIZE + 20))

    async with FilesystemProvider(root) as provider:
        assert await seqs_of(provider) == [0, 1, 2, 3]
        with pytest.raises(CorruptObjectError, match="checkpoint 3"):
            await provider.load_checkpoint(RUN, 3)
        with pytest.raises(CorruptObjectError, match="checkpoint 3"):
            await provider.load_latest_checkpoint(RUN)
        assert (await provider.load_checkpoint(RUN, 2)).data == data(2)
        with pytest.raises(AlreadyExistsError):
            await provider.save_checkpoint(RUN, 3, b"x")
        await provider.save_checkpoint(RUN, 4, b"after the damage")
        with pytest.raises(CorruptObjectError):
            await provider.load_checkpoint(RUN, 3)
        await provider.save_checkpoint(RUN, 3, b"rewritten", mode="overwrite")
        assert (await provider.load_checkpoint(RUN, 3)).data == b"rewritten"
    index = backdoor.index(RUN)
    assert index.tail is None
    assert index.seqs == [0, 1, 2, 3, 4]


@pytest.mark.asyncio
async def test_garbage_without_a_record_header_at_the_end_is_truncated(root: Path) -> None:
    backdoor = await write(root, 2)
    log = backdoor.log_path(RUN)
    append_raw(log, b"\x00" * 4096)
    async with FilesystemProvider(root) as provider:
        assert await seqs_of(provider) == [0, 1]
        await provider.save_checkpoint(RUN, 2, b"after the garbage")
    index = backdoor.index(RUN)
    assert index.tail is None
    assert index.seqs == [0, 1, 2]


@pytest.mark.asyncio
async def test_an_open_provider_sees_a_torn_tail_appended_by_another_process(root: Path) -> None:
    """A provider that indexed the log before the torn append (its own index is warm)."""
    async with FilesystemProvider(root) as provider:
        for seq in range(3):
            await provider.save_checkpoint(RUN, seq, data(seq))
        backdoor = FilesystemBackdoor(root)
        append_raw(backdoor.log_path(RUN), record(3, data(3))[:-5])
        assert await seqs_of(provider) == [0, 1, 2]
        with pytest.raises(AlreadyExistsError):
            await provider.save_checkpoint(RUN, 2, b"x")
        await provider.save_checkpoint(RUN, 3, data(3))
        assert await seqs_of(provider) == [0, 1, 2, 3]
        assert (await provider.load_checkpoint(RUN, 3)).data == data(3)
    assert backdoor.index(RUN).tail is None


# ----------------------------------------------------------- damage in the middle


@pytest.mark.asyncio
async def test_damaged_record_in_the_middle_is_listed_but_never_loaded(root: Path) -> None:
    backdoor = await write(root, 5, size=3000)
    entry = backdoor.index(RUN).entries[2]
    flip(backdoor.log_path(RUN), entry.data_offset + entry.data_len // 2)

    async with FilesystemProvider(root) as provider:
        assert await seqs_of(provider) == [0, 1, 2, 3, 4]
        with pytest.raises(CorruptObjectError, match="checkpoint 2"):
            await provider.load_checkpoint(RUN, 2)
        for seq in (0, 1, 3, 4):
            assert (await provider.load_checkpoint(RUN, seq)).data == data(seq, 3000)
        latest = await provider.load_latest_checkpoint(RUN)
        assert latest is not None
        assert latest.seq == 4
        # writes go on; the damaged record stays reported
        await provider.save_checkpoint(RUN, 5, data(5))
        with pytest.raises(CorruptObjectError):
            await provider.load_checkpoint(RUN, 2)
        with pytest.raises(AlreadyExistsError):
            await provider.save_checkpoint(RUN, 2, b"x")
        # overwriting it on purpose replaces it
        await provider.save_checkpoint(RUN, 2, b"repaired", mode="overwrite")
        assert (await provider.load_checkpoint(RUN, 2)).data == b"repaired"


@pytest.mark.asyncio
async def test_damage_under_a_provider_that_already_indexed_the_log(root: Path) -> None:
    """Bit rot after the index was built is caught when the payload is read."""
    async with FilesystemProvider(root) as provider:
        for seq in range(4):
            await provider.save_checkpoint(RUN, seq, data(seq))
        backdoor = FilesystemBackdoor(root)
        for seq in (1, 3):  # one in the middle, the last one
            entry = backdoor.index(RUN).entries[seq]
            flip(backdoor.log_path(RUN), entry.data_offset + 5)
        with pytest.raises(CorruptObjectError):
            await provider.load_checkpoint(RUN, 1)
        with pytest.raises(CorruptObjectError):
            await provider.load_checkpoint(RUN, 3)
        with pytest.raises(CorruptObjectError):
            await provider.load_latest_checkpoint(RUN)
        assert (await provider.load_checkpoint(RUN, 2)).data == data(2)


@pytest.mark.asyncio
async def test_damaged_metadata_is_reported_not_returned(root: Path) -> None:
    async with FilesystemProvider(root) as provider:
        for seq in range(3):
            await provider.save_checkpoint(RUN, seq, data(seq), metadata={"step": f"s{seq}"})
    backdoor = FilesystemBackdoor(root)
    entry = backdoor.index(RUN).entries[1]
    flip(backdoor.log_path(RUN), entry.offset + fmt.HEAD_SIZE + 3)  # inside the JSON
    async with FilesystemProvider(root) as provider:
        infos = [info async for info in provider.iter_checkpoints(RUN)]
        assert [i.seq for i in infos] == [0, 1, 2]
        assert dict(infos[1].metadata) == {}, "damaged metadata must not be returned"
        assert dict(infos[0].metadata) == {"step": "s0"}
        with pytest.raises(CorruptObjectError):
            await provider.load_checkpoint(RUN, 1)


@pytest.mark.asyncio
@pytest.mark.parametrize("first", ["list", "load", "compact"])
@pytest.mark.parametrize("meta", [b"{not json", b'{"step": 1}', b"[]", b"\xff\xfe"])
async def test_metadata_that_passes_its_crc_but_does_not_parse_is_damage(
    root: Path, first: str, meta: bytes
) -> None:
    """The scan leaves metadata unparsed until it is read (``Entry``): metadata with a
    good CRC that is not a JSON object of strings (only a foreign writer makes one) is
    damage whichever reads it first -- the listing, a load, or a compaction."""
    backdoor = await write(root, 2)
    parts = fmt.encode_record(fmt.T_CHECKPOINT, 2, 7, 1, meta, Envelope().wrap(data(2)))
    append_raw(backdoor.log_path(RUN), b"".join(bytes(p) for p in parts))
    async with FilesystemProvider(root) as provider:
        await provider.save_checkpoint(RUN, 3, data(3))
        if first == "load":
            with pytest.raises(CorruptObjectError, match="checkpoint 2"):
                await provider.load_checkpoint(RUN, 2)
        elif first == "compact":
            await provider.delete_checkpoint(RUN, 0)
            assert await provider.compact(RUN)
        infos = [info async for info in provider.iter_checkpoints(RUN)]
        assert [i.seq for i in infos][-2:] == [2, 3]
        assert dict(infos[-2].metadata) == {}, "unparsable metadata must not be returned"
        with pytest.raises(CorruptObjectError, match="checkpoint 2"):
            await provider.load_checkpoint(RUN, 2)
        with pytest.raises(CorruptObjectError, match="checkpoint 2"):
            await provider.load_checkpoints(RUN, [1, 2, 3])
        found = await provider.load_checkpoints(RUN, [1, 3])
        assert [f.data if f else None for f in found] == [data(1), data(3)]
    async with FilesystemProvider(root) as provider:
        with pytest.raises(CorruptObjectError, match="checkpoint 2"):
            await provider.load_checkpoint(RUN, 2)
        assert (await provider.load_checkpoint(RUN, 3)).data == data(3)


@pytest.mark.asyncio
async def test_damaged_record_header_in_the_middle(root: Path) -> None:
    """When a header is unreadable the scan resynchronises on the next record; the lost
    record's seq is unknown, so asking for any missing seq reports the damage."""
    backdoor = await write(root, 5)
    entry = backdoor.index(RUN).entries[2]
    flip(backdoor.log_path(RUN), entry.offset + 10)  # inside the seq field

    async with FilesystemProvider(root) as provider:
        assert await seqs_of(provider) == [0, 1, 3, 4]
        for seq in (0, 1, 3, 4):
            assert (await provider.load_checkpoint(RUN, seq)).data == data(seq)
        with pytest.raises(CorruptObjectError, match="unreadable"):
            await provider.load_checkpoint(RUN, 2)
        await provider.save_checkpoint(RUN, 5, data(5))
        assert await seqs_of(provider) == [0, 1, 3, 4, 5]
    index = backdoor.index(RUN)
    assert len(index.corrupt_regions) == 1
    assert index.tail is None


@pytest.mark.asyncio
async def test_damaged_log_file_header(root: Path) -> None:
    backdoor = await write(root, 2)
    flip(backdoor.log_path(RUN), 2)
    async with FilesystemProvider(root) as provider:
        with pytest.raises(CorruptObjectError, match="not a durably log"):
            await provider.load_latest_checkpoint(RUN)
        with pytest.raises(CorruptObjectError):
            await provider.save_checkpoint(RUN, 2, b"x")


@pytest.mark.asyncio
async def test_bulk_read_reports_damage_as_a_single_read_does(root: Path) -> None:
    """load_checkpoints (the provider's _load_many) reads a span in one go, but a record
    that fails its check, whether the index was built before or after the damage, is a
    CorruptObjectError, never data or None; the records around it read as they were."""
    async with FilesystemProvider(root) as provider:
        for seq in range(6):
            await provider.save_checkpoint(RUN, seq, data(seq, 3000))
        backdoor = FilesystemBackdoor(root)
        assert [c.data for c in await provider.load_checkpoints(RUN, [0, 1, 2, 9]) if c] == [
            data(seq, 3000) for seq in range(3)
        ]
        entry = backdoor.index(RUN).entries[3]
        flip(backdoor.log_path(RUN), entry.data_offset + 7)  # after the index was built
        with pytest.raises(CorruptObjectError, match="checkpoint 3"):
            await provider.load_checkpoints(RUN, [2, 3, 4])
        got = await provider.load_checkpoints(RUN, [0, 1, 2, 4, 5, 6])
        assert [c and c.data for c in got] == [data(s, 3000) for s in (0, 1, 2, 4, 5)] + [None]
    async with FilesystemProvider(root) as provider:  # a fresh index flags it corrupt
        with pytest.raises(CorruptObjectError, match="checkpoint 3"):
            await provider.load_checkpoints(RUN, list(range(6)))


@pytest.mark.asyncio
async def test_bulk_read_of_a_seq_lost_to_a_damaged_header(root: Path) -> None:
    """A seq missing from the index while the log has unreadable regions is reported by a
    bulk read as by a single one (the region may have held it)."""
    backdoor = await write(root, 5)
    entry = backdoor.index(RUN).entries[2]
    flip(backdoor.log_path(RUN), entry.offset + 10)  # inside the seq field
    async with FilesystemProvider(root) as provider:
        got = await provider.load_checkpoints(RUN, [0, 1, 3, 4])
        assert [c and c.data for c in got] == [data(seq) for seq in (0, 1, 3, 4)]
        with pytest.raises(CorruptObjectError, match="unreadable"):
            await provider.load_checkpoints(RUN, [1, 2, 3])


@pytest.mark.asyncio
async def test_bulk_read_across_overwrites_and_distant_records(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records far apart in the log (an overwrite appends the new version at the end)
    are read in separate runs; every item is the current version."""
    from durably_filesystem import _checkpoints

    monkeypatch.setattr(_checkpoints, "READ_GAP", 100)
    monkeypatch.setattr(_checkpoints, "READ_RUN", 2000)
    async with FilesystemProvider(root) as provider:
        for seq in range(8):
            await provider.save_checkpoint(RUN, seq, data(seq, 700))
        await provider.save_checkpoint(RUN, 1, b"new one", mode="overwrite")
        await provider.save_checkpoint(RUN, 20, data(20, 5000))
        seqs = [0, 1, 2, 5, 6, 7, 8, 20]
        got = await provider.load_checkpoints(RUN, seqs)
        singles = [await provider.load_checkpoint(RUN, s) for s in seqs if s != 8]
        assert [c for c in got if c is not None] == singles
        assert got[1] is not None
        assert got[1].data == b"new one"
        assert got[6] is None


# ------------------------------------------------------------------- compaction


@pytest.mark.asyncio
async def test_compaction_keeps_live_records_and_their_versions(root: Path) -> None:
    async with FilesystemProvider(root) as provider:
        infos = {}
        for seq in range(50):
            infos[seq] = await provider.save_checkpoint(
                RUN, seq, data(seq, 2000), metadata={"n": str(seq)}
            )
        for seq in range(0, 45):
            assert await provider.delete_checkpoint(RUN, seq)
        backdoor = FilesystemBackdoor(root)
        inode_before = os.stat(backdoor.log_path(RUN)).st_ino
        size_before = os.path.getsize(backdoor.log_path(RUN))

        assert await provider.compact(RUN)
        assert not await provider.compact(RUN), "nothing left to reclaim"
        assert os.stat(backdoor.log_path(RUN)).st_ino != inode_before
        assert os.path.getsize(backdoor.log_path(RUN)) < size_before / 5
        listed = [info async for info in provider.iter_checkpoints(RUN)]
        assert listed == [infos[seq] for seq in range(45, 50)], "versions survive compaction"
        for seq in range(45, 50):
            assert (await provider.load_checkpoint(RUN, seq)).data == data(seq, 2000)
        await provider.save_checkpoint(RUN, 47, b"new", mode=ExpectedVersion(infos[47].version))
        await provider.save_checkpoint(RUN, 50, b"after")
    index = backdoor.index(RUN)
    assert index.seqs == [45, 46, 47, 48, 49, 50]
    assert index.tail is None


@pytest.mark.asyncio
async def test_compaction_happens_on_its_own(root: Path) -> None:
    """Overwrites and deletes accumulate dead records until the threshold; then the log
    is rewritten, so its size stays bounded."""
    async with FilesystemProvider(root, compact_threshold=20_000) as provider:
        backdoor = FilesystemBackdoor(root)
        sizes = []
        for round_ in range(200):
            await provider.save_checkpoint(RUN, 0, data(round_, 1000), mode="overwrite")
            await provider.save_checkpoint(RUN, round_ + 1, data(round_, 900))
            if round_ >= 2:
                await provider.delete_checkpoint(RUN, round_ - 1)
            sizes.append(os.path.getsize(backdoor.log_path(RUN)))
        assert max(sizes) < 60_000
        assert await seqs_of(provider) == [0, 199, 200]
        assert (await provider.load_checkpoint(RUN, 0)).data == data(199, 1000)


@pytest.mark.asyncio
async def test_prune_compacts(root: Path) -> None:
    async with FilesystemProvider(root, compact_threshold=10_000) as provider:
        for seq in range(40):
            await provider.save_checkpoint(RUN, seq, data(seq, 1000))
        backdoor = FilesystemBackdoor(root)
        inode = os.stat(backdoor.log_path(RUN)).st_ino
        assert await provider.prune(RUN, keep_last=3) == list(range(37))
        assert os.stat(backdoor.log_path(RUN)).st_ino != inode
        assert backdoor.index(RUN).dead_bytes == 0
        assert await seqs_of(provider) == [37, 38, 39]


@pytest.mark.asyncio
async def test_deleting_every_checkpoint_leaves_an_empty_log(root: Path) -> None:
    async with FilesystemProvider(root) as provider:
        for seq in range(3):
            await provider.save_checkpoint(RUN, seq, data(seq))
        await provider.save_checkpoint("other", 0, b"x")
        for seq in range(3):
            assert await provider.delete_checkpoint(RUN, seq)
        assert os.path.getsize(FilesystemBackdoor(root).log_path(RUN)) == fmt.LOG_HEADER_SIZE
        assert [e.execution_id async for e in provider.iter_executions()] == ["other"]
        assert await provider.load_latest_checkpoint(RUN) is None
        await provider.save_checkpoint(RUN, 3, b"again")
        assert [e.execution_id async for e in provider.iter_executions()] == ["other", RUN]


@pytest.mark.asyncio
async def test_damaged_records_stay_damaged_through_compaction(root: Path) -> None:
    """Compaction copies a damaged record verbatim (here: as the last record of the new
    file), so it is still reported afterwards -- never dropped, never "repaired"."""
    backdoor = await write(root, 6, size=500)
    entry = backdoor.index(RUN).entries[4]
    flip(backdoor.log_path(RUN), entry.data_offset + 7)
    async with FilesystemProvider(root) as provider:
        await provider.delete_checkpoint(RUN, 5)  # seq 4 becomes the last record kept
        for seq in (0, 1):
            await provider.delete_checkpoint(RUN, seq)
        assert await provider.compact(RUN)
        with pytest.raises(CorruptObjectError):
            await provider.load_checkpoint(RUN, 4)
    async with FilesystemProvider(root) as provider:
        assert await seqs_of(provider) == [2, 3, 4]
        with pytest.raises(CorruptObjectError):
            await provider.load_checkpoint(RUN, 4)
        with pytest.raises(CorruptObjectError):
            await provider.load_latest_checkpoint(RUN)
        await provider.save_checkpoint(RUN, 6, b"next")
        with pytest.raises(CorruptObjectError):
            await provider.load_checkpoint(RUN, 4)
        assert (await provider.load_checkpoint(RUN, 3)).data == data(3, 500)


@pytest.mark.asyncio
async def test_another_instance_reads_across_compaction(root: Path) -> None:
    """Instance B (another process, as far as files go) keeps reading correctly while A
    compacts: it notices the new inode and re-indexes."""
    async with FilesystemProvider(root) as a, FilesystemProvider(root) as b:
        for seq in range(30):
            await a.save_checkpoint(RUN, seq, data(seq, 700))
        assert await seqs_of(b) == list(range(30))  # B's index is warm
        for seq in range(20):
            await a.delete_checkpoint(RUN, seq)
        listed_before = await seqs_of(b)
        assert listed_before == list(range(20, 30))
        assert await a.compact(RUN)
        # B's listing was taken before the compaction; every seq in it still loads
        for seq in listed_before:
            assert (await b.load_checkpoint(RUN, seq)).data == data(seq, 700)
        with pytest.raises(NotFoundError):
            await b.load_checkpoint(RUN, 5)
        # and B writes into the new file, which A sees
        await b.save_checkpoint(RUN, 30, b"from b")
        assert (await a.load_checkpoint(RUN, 30)).data == b"from b"
        assert await seqs_of(a) == [*range(20, 30), 30]
        await a.save_checkpoint(RUN, 31, b"from a")
        assert await seqs_of(b) == [*range(20, 30), 30, 31]


@pytest.mark.asyncio
async def test_leftover_temporary_files_are_removed_by_compaction(root: Path) -> None:
    async with FilesystemProvider(root) as provider:
        await provider.save_checkpoint(RUN, 0, b"a")
        await provider.save_checkpoint(RUN, 1, b"b")
        directory = Path(FilesystemBackdoor(root).execution_dir(RUN))
        (directory / ".tmp-dead00000000-log").write_bytes(b"half a compaction")
        await provider.delete_checkpoint(RUN, 0)
        assert await provider.compact(RUN)
        assert sorted(p.name for p in directory.iterdir()) == ["lock", "log"]


# ---------------------------------------------------------------- versions, errors


@pytest.mark.asyncio
async def test_every_write_gets_a_new_version(root: Path) -> None:
    async with FilesystemProvider(root) as provider:
        versions = set()
        for _ in range(20):
            info = await provider.save_checkpoint(RUN, 0, b"same bytes", mode="overwrite")
            versions.add(info.version)
        assert len(versions) == 20
        with pytest.raises(PreconditionFailedError):
            await provider.save_checkpoint(RUN, 0, b"x", mode=ExpectedVersion("0" * 16))


@pytest.mark.asyncio
async def test_a_failed_flush_writes_nothing(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If fdatasync fails (EIO), the append is cut off again and the error is a StoreError
    naming the log; the store stays usable."""
    from durably_filesystem import _log

    async with FilesystemProvider(root) as provider:
        await provider.save_checkpoint(RUN, 0, b"fine")
        size = os.path.getsize(FilesystemBackdoor(root).log_path(RUN))

        def failing(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(_log, "fdatasync", failing)
        with pytest.raises(StoreError, match="Input/output error") as caught:
            await provider.save_checkpoint(RUN, 1, b"lost")
        assert isinstance(caught.value.__cause__, OSError)
        assert FilesystemBackdoor(root).log_path(RUN) in str(caught.value)
        monkeypatch.undo()
        assert os.path.getsize(FilesystemBackdoor(root).log_path(RUN)) == size
        with pytest.raises(NotFoundError):
            await provider.load_checkpoint(RUN, 1)
        await provider.save_checkpoint(RUN, 1, b"second try")
        assert (await provider.load_checkpoint(RUN, 1)).data == b"second try"


@pytest.mark.asyncio
@pytest.mark.parametrize("keep", [10, fmt.HEAD_SIZE + 5])
async def test_an_execution_whose_first_append_was_torn_is_not_listed(
    root: Path,
    keep: int,
) -> None:
    async with FilesystemProvider(root) as provider:
        await provider.save_checkpoint("other", 0, b"x")
        await provider.save_checkpoint(RUN, 0, b"x")
        await provider.delete_checkpoint(RUN, 0)  # an empty log, as after a crash...
    append_raw(FilesystemBackdoor(root).log_path(RUN), record(0, data(0))[:keep])  # ...here
    async with FilesystemProvider(root) as provider:
        assert [e.execution_id async for e in provider.iter_executions()] == ["other"]
        await provider.save_checkpoint(RUN, 0, b"now")
        assert [e.execution_id async for e in provider.iter_executions()] == ["other", RUN]


@pytest.mark.asyncio
async def test_a_failed_compaction_does_not_fail_the_write_that_triggered_it(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FilesystemProvider(root, compact_threshold=0) as provider:
        await provider.save_checkpoint(RUN, 0, b"first")
        await provider.save_checkpoint(RUN, 1, b"second")
        log = FilesystemBackdoor(root).log_path(RUN)
        inode = os.stat(log).st_ino

        def failing_rename(src: str, dst: str) -> None:
            raise OSError(errno.ENOSPC, "No space left on device", src)

        monkeypatch.setattr(os, "rename", failing_rename)
        info = await provider.save_checkpoint(RUN, 0, b"again", mode="overwrite")
        monkeypatch.undo()
        assert os.stat(log).st_ino == inode, "the compaction did not happen"
        assert [p.name for p in Path(log).parent.iterdir() if p.name.startswith(".tmp")] == []
        stored = await provider.load_checkpoint(RUN, 0)
        assert (stored.data, stored.info.version) == (b"again", info.version)
        await provider.save_checkpoint(RUN, 1, b"third", mode="overwrite")
        assert os.stat(log).st_ino != inode, "the next compaction works"
        assert [(await provider.load_checkpoint(RUN, s)).data for s in (0, 1)] == [
            b"again",
            b"third",
        ]
