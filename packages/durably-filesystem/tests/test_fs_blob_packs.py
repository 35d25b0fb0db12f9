"""Blob packs (layout 2): a batch is one file and two flushes; a damaged pack is never
taken for an absent blob; deleting a blob rewrites its pack; layout-1 stores keep their
files and are read alongside packs."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from durably.errors import CorruptObjectError, NotFoundError, StoreError, UnsupportedFormatError
from durably.storage import blob_digest
from durably_filesystem import FilesystemBackdoor, FilesystemProvider
from durably_filesystem import _packs as packs_module

RUN = "run-packs"
MAX = packs_module.MAX_ENTRIES


def _batch(count: int, seed: int = 0) -> dict[str, bytes]:
    payloads = [f"blob {seed}:{i} ".encode() * (40 + i) for i in range(count)]
    return {blob_digest(data): data for data in payloads}


def _marker(root: Path) -> dict[str, object]:
    return json.loads((root / "durably-store.json").read_text())


@pytest.mark.asyncio
async def test_a_batch_is_one_pack_made_durable_with_two_flushes(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 new blobs: one file, flushed, linked, and its directory flushed -- two
    flushes, where a file per blob takes three per blob."""
    real_fsync = os.fsync
    flushed: list[int] = []

    def counting_fsync(fd: int) -> None:
        flushed.append(fd)
        real_fsync(fd)

    batch = _batch(16)
    async with FilesystemProvider(root) as provider:
        await provider.put_blob(RUN, b"makes the execution's blob directory")
        monkeypatch.setattr(os, "fsync", counting_fsync)
        assert await provider.put_blobs(RUN, batch) == dict.fromkeys(batch, True)
        monkeypatch.setattr(os, "fsync", real_fsync)
        for digest, data in batch.items():
            assert await provider.get_blob(RUN, digest) == data
    assert _marker(root)["version"] == 2
    backdoor = FilesystemBackdoor(root)
    assert len(backdoor.pack_names(RUN)) == 2  # the first blob's, and the batch's
    assert len(flushed) == 2, f"{len(flushed)} flushes for one batch"
    leftovers = [n for n in os.listdir(backdoor.packs_dir(RUN)) if n.startswith(".tmp")]
    assert leftovers == []


@pytest.mark.asyncio
async def test_big_blobs_get_a_pack_each(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Packs stay at most INLINE_LIMIT bytes unless one blob is bigger; every blob is read
    back whole from wherever it landed."""
    monkeypatch.setattr("durably_filesystem._blobs.INLINE_LIMIT", 10_000)
    big = {blob_digest(d): d for d in (os.urandom(30_000), os.urandom(25_000))}
    small = _batch(40)  # ~2-3 KB each: several packs of at most 10,000 bytes
    async with FilesystemProvider(root) as provider:
        written = await provider.put_blobs(RUN, {**small, **big})
        assert written == dict.fromkeys({**small, **big}, True)
        for digest, data in {**small, **big}.items():
            assert await provider.get_blob(RUN, digest) == data
    backdoor = FilesystemBackdoor(root)
    tables = [
        packs_module.read_table(os.path.join(backdoor.packs_dir(RUN), name))
        for name in backdoor.pack_names(RUN)
    ]
    bigs = [t for t in tables if set(t) & set(big)]
    assert sorted(len(t) for t in bigs) == [1, 1], "a big blob shares no pack"
    smalls = [sum(p.length for p in t.values()) for t in tables if t not in bigs]
    assert all(size <= 10_000 for size in smalls), smalls
    assert len(smalls) >= -(-sum(smalls) // 10_000) >= 2


@pytest.mark.asyncio
async def test_a_pack_written_by_another_instance_is_found(root: Path) -> None:
    """Each instance indexes the packs it has seen; a blob another one stored is found
    (and not written again), and a rewrite by another instance's deletion is followed."""
    first, second = _batch(3, seed=1), _batch(3, seed=2)
    async with FilesystemProvider(root) as a, FilesystemProvider(root) as b:
        await a.put_blobs(RUN, first)
        assert [await b.get_blob(RUN, d) for d in first] == list(first.values())
        await b.put_blobs(RUN, second)
        assert await a.put_blobs(RUN, second) == dict.fromkeys(second, False)
        assert [await a.get_blob(RUN, d) for d in second] == list(second.values())
        gone, *kept = list(first)
        assert await b.delete_blob(RUN, gone) is True  # rewrites the pack a indexed
        for digest in kept:
            assert await a.get_blob(RUN, digest) == first[digest]
        assert not await a.has_blob(RUN, gone)
        with pytest.raises(NotFoundError):
            await a.get_blob(RUN, gone)
        assert await a.delete_blob(RUN, gone) is False


@pytest.mark.asyncio
async def test_deleting_blobs_of_one_pack_at_once_deletes_each(root: Path) -> None:
    """Two instances (two locks) delete different blobs of one pack at the same time:
    each rewrite starts from the other's result, so both blobs are gone."""
    batch = _batch(8)
    digests = list(batch)
    async with FilesystemProvider(root) as a, FilesystemProvider(root) as b:
        await a.put_blobs(RUN, batch)
        created = {info.digest: info.created_at for info in (await a.list_blobs(RUN)).items}
        results = await asyncio.gather(
            *((a if i % 2 else b).delete_blob(RUN, digest) for i, digest in enumerate(digests[:4]))
        )
        assert results == [True] * 4
        listed = [info.digest for info in (await a.list_blobs(RUN)).items]
        assert listed == sorted(digests[4:])
        after = {info.digest: info.created_at for info in (await b.list_blobs(RUN)).items}
        assert after == {digest: created[digest] for digest in digests[4:]}
        for digest in digests[4:]:
            assert await b.get_blob(RUN, digest) == batch[digest]
    assert len(FilesystemBackdoor(root).pack_names(RUN)) == 1


@pytest.mark.asyncio
async def test_a_batch_of_more_blobs_than_one_writev_takes(root: Path) -> None:
    """A pack of many small blobs is more buffers than one ``writev`` accepts (1024 on
    Linux); the batch is stored whole, in packs of at most MAX_ENTRIES blobs."""
    batch = {blob_digest(data): data for data in (b"%d" % i for i in range(MAX + 1))}
    async with FilesystemProvider(root) as provider:
        assert await provider.put_blobs(RUN, batch) == dict.fromkeys(batch, True)
        for digest in list(batch)[:: MAX // 7]:
            assert await provider.get_blob(RUN, digest) == batch[digest]
    assert len(FilesystemBackdoor(root).pack_names(RUN)) == 2


@pytest.mark.asyncio
async def test_a_pack_replaced_while_it_is_indexed_is_not_missed(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process deletes a blob between our listing of the packs and our reading
    of the listed pack: its replacement (linked before the old pack went) is indexed,
    so the other blobs are never reported absent."""
    batch = _batch(3)
    gone, *kept = list(batch)
    async with FilesystemProvider(root) as provider:
        await provider.put_blobs(RUN, batch)
    backdoor = FilesystemBackdoor(root)
    [pack] = backdoor.pack_names(RUN)
    real_read_table = packs_module.read_table
    replaced: list[str] = []

    def read_table_after_a_deletion(path: str) -> dict[str, packs_module.Packed]:
        if os.path.basename(path) == pack and not replaced:
            replaced.append(path)
            other = packs_module.PackIndex(backdoor.packs_dir(RUN))  # another process's
            assert packs_module.remove(other, gone, fsync=False)
        return real_read_table(path)

    monkeypatch.setattr(packs_module, "read_table", read_table_after_a_deletion)
    async with FilesystemProvider(root) as provider:
        for digest in kept:
            assert await provider.has_blob(RUN, digest), "a stored blob reported absent"
            assert await provider.get_blob(RUN, digest) == batch[digest]
        assert replaced
        assert not await provider.has_blob(RUN, gone)
        listed = [info.digest for info in (await provider.list_blobs(RUN)).items]
        assert listed == sorted(kept)


@pytest.mark.asyncio
async def test_a_store_that_cannot_be_created_is_a_typed_error(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("not a store")
    async with FilesystemProvider(not_a_directory) as provider:
        with pytest.raises(StoreError):
            await provider.put_blob(RUN, b"x")
        with pytest.raises(StoreError):
            await provider.put_blobs(RUN, _batch(2))


@pytest.mark.asyncio
@pytest.mark.parametrize("damage", ["table", "truncated", "version", "version 0"])
async def test_a_pack_that_cannot_be_read_is_never_taken_for_absent_blobs(
    root: Path, damage: str
) -> None:
    """A blob that may be in an unreadable pack raises (never NotFoundError, never False);
    the blobs of other packs still load; putting the lost blobs again repairs them."""
    lost, other = _batch(4, seed=1), _batch(4, seed=2)
    async with FilesystemProvider(root) as provider:
        await provider.put_blobs(RUN, lost)
        await provider.put_blobs(RUN, other)
    backdoor = FilesystemBackdoor(root)
    pack = next(
        os.path.join(backdoor.packs_dir(RUN), name)
        for name in backdoor.pack_names(RUN)
        if next(iter(lost)) in packs_module.read_table(os.path.join(backdoor.packs_dir(RUN), name))
    )
    raw = bytearray(Path(pack).read_bytes())
    if damage == "table":
        raw[20] ^= 0xFF
    elif damage == "truncated":
        del raw[-10:]
    else:
        struct.pack_into("<I", raw, 8, 99 if damage == "version" else 0)
    Path(pack).write_bytes(bytes(raw))
    expected = UnsupportedFormatError if damage == "version" else CorruptObjectError
    async with FilesystemProvider(root) as provider:
        for digest, data in other.items():
            assert await provider.get_blob(RUN, digest) == data
        digest = next(iter(lost))
        with pytest.raises(expected, match=os.path.basename(pack)):
            await provider.get_blob(RUN, digest)
        with pytest.raises(expected):
            await provider.has_blob(RUN, digest)
        with pytest.raises(expected):
            await provider.list_blobs(RUN)
        with pytest.raises(expected):
            await provider.delete_blob(RUN, digest)
        assert await provider.put_blobs(RUN, lost) == dict.fromkeys(lost, True)
        for digest, data in lost.items():
            assert await provider.get_blob(RUN, digest) == data


@pytest.mark.asyncio
async def test_a_damaged_blob_in_a_pack_stays_damaged_when_its_pack_is_rewritten(
    root: Path,
) -> None:
    """Deleting a blob copies the others with their own checksums: a damaged one is not
    laundered into a valid one."""
    batch = _batch(3)
    damaged, deleted, kept = list(batch)
    async with FilesystemProvider(root) as provider:
        await provider.put_blobs(RUN, batch)
        await FilesystemBackdoor(root).corrupt_blob(RUN, damaged)
        assert await provider.delete_blob(RUN, deleted) is True
        with pytest.raises(CorruptObjectError):
            await provider.get_blob(RUN, damaged)
        assert await provider.get_blob(RUN, kept) == batch[kept]


@pytest.mark.asyncio
async def test_a_layout_1_store_keeps_a_file_per_blob(root: Path) -> None:
    """A store made before packs stays layout 1 (an older release can still use it)."""
    root.mkdir()
    (root / "durably-store.json").write_text('{"layout": "durably-filesystem", "version": 1}')
    batch = _batch(5)
    async with FilesystemProvider(root) as provider:
        assert await provider.put_blobs(RUN, batch) == dict.fromkeys(batch, True)
        digest = await provider.put_blob(RUN, b"alone")
    backdoor = FilesystemBackdoor(root)
    assert backdoor.pack_names(RUN) == []
    for d in [*batch, digest]:
        assert os.path.isfile(backdoor.blob_path(RUN, d))
    assert _marker(root)["version"] == 1


@pytest.mark.asyncio
async def test_blob_files_and_packs_are_read_and_listed_together(root: Path) -> None:
    """Blobs in files of their own (a layout-1 store's) and in packs are one set: got,
    listed in one order with cursors, deleted."""
    root.mkdir()
    (root / "durably-store.json").write_text('{"layout": "durably-filesystem", "version": 1}')
    in_files, in_packs = _batch(6, seed=1), _batch(6, seed=2)
    async with FilesystemProvider(root) as provider:
        await provider.put_blobs(RUN, in_files)
    (root / "durably-store.json").write_text('{"layout": "durably-filesystem", "version": 2}')
    everything = {**in_files, **in_packs}
    async with FilesystemProvider(root) as provider:
        await provider.put_blobs(RUN, in_packs)
        assert FilesystemBackdoor(root).pack_names(RUN) != []
        for digest, data in everything.items():
            assert await provider.get_blob(RUN, digest) == data
            assert await provider.has_blob(RUN, digest)
        listed: list[str] = []
        cursor = None
        while True:
            page = await provider.list_blobs(RUN, cursor=cursor, limit=5)
            listed += [info.digest for info in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert listed == sorted(everything)
        for digest in [next(iter(in_files)), next(iter(in_packs))]:
            assert await provider.delete_blob(RUN, digest) is True
            assert await provider.delete_blob(RUN, digest) is False
            assert not await provider.has_blob(RUN, digest)
        assert len((await provider.list_blobs(RUN)).items) == len(everything) - 2


@pytest.mark.asyncio
async def test_an_execution_with_only_packed_blobs_exists(root: Path) -> None:
    async with FilesystemProvider(root) as provider:
        await provider.put_blobs(RUN, _batch(2))
        assert [info.execution_id for info in (await provider.list_executions()).items] == [RUN]
        assert await provider.delete_execution(RUN) is True
        assert (await provider.list_executions()).items == ()
        assert not await provider.has_blob(RUN, next(iter(_batch(2))))


# ---------------------------------------------------------------- merging small packs


def _tables(root: Path) -> dict[str, dict[str, packs_module.Packed]]:
    backdoor = FilesystemBackdoor(root)
    return {
        name: packs_module.read_table(os.path.join(backdoor.packs_dir(RUN), name))
        for name in backdoor.pack_names(RUN)
    }


def _held(root: Path) -> list[str]:
    """Every digest the packs hold, once per pack that holds it."""
    return sorted(digest for table in _tables(root).values() for digest in table)


def _random_batch(count: int, size: int) -> dict[str, bytes]:
    payloads = [os.urandom(size) for _ in range(count)]  # incompressible: stored as big
    return {blob_digest(data): data for data in payloads}


TIERS = 6
"""Tiers of small packs (weights 256 B to 512 KiB, a factor of 4 each)."""


@pytest.mark.asyncio
async def test_small_packs_are_merged_as_they_accumulate(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every put with new blobs writes a pack; once MERGE_AFTER small ones of a tier
    accumulate, a put merges them. The packs stay few, every blob reads back whole from
    a new instance and is listed once with the size it has in a store that never merged,
    no blob looks older than when it was put, nothing is left behind."""
    batches = [_batch(1 + i % 3, seed=i) for i in range(40)]
    monkeypatch.setattr("durably_filesystem._blobs.MERGE_AFTER", 1000)
    async with FilesystemProvider(tmp_path / "unmerged") as control:
        for batch in batches:
            await control.put_blobs(RUN, batch)
        sizes = {info.digest: info.size for info in (await control.list_blobs(RUN)).items}
    monkeypatch.setattr("durably_filesystem._blobs.MERGE_AFTER", 4)
    stored: dict[str, bytes] = {}
    put_at: dict[str, float] = {}
    async with FilesystemProvider(root) as provider:
        await provider.claim(RUN, "me", ttl=60)  # its lock file: merging needs the lock
        for batch in batches:
            before = time.time()
            assert await provider.put_blobs(RUN, batch) == dict.fromkeys(batch, True)
            stored.update(batch)
            put_at.update(dict.fromkeys(batch, before))
            assert len(FilesystemBackdoor(root).pack_names(RUN)) <= (4 - 1) * TIERS
            for digest in batch:  # the instance that merged reads through its index
                assert await provider.get_blob(RUN, digest) == stored[digest]
    assert len(_tables(root)) <= 40 // 4
    assert _held(root) == sorted(stored), "every blob in exactly one pack"
    leftovers = [n for n in os.listdir(FilesystemBackdoor(root).packs_dir(RUN)) if n[0] == "."]
    assert leftovers == []
    async with FilesystemProvider(root) as provider:
        for digest, data in stored.items():
            assert await provider.get_blob(RUN, digest) == data
        listed = (await provider.list_blobs(RUN, limit=1000)).items
        assert [info.digest for info in listed] == sorted(stored)
        for info in listed:
            assert info.size == sizes[info.digest]
            assert info.created_at >= put_at[info.digest] - 0.05  # never older


@pytest.mark.asyncio
async def test_a_merged_pack_takes_the_newest_time_of_those_it_replaces(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob's created_at may move later by a merge (to the newest replaced pack's
    time), never earlier, and not to the time of the merge."""
    monkeypatch.setattr("durably_filesystem._blobs.MERGE_AFTER", 1000)
    async with FilesystemProvider(root) as provider:
        await provider.claim(RUN, "me", ttl=60)
        for i in range(4):
            await provider.put_blobs(RUN, _batch(2, seed=i))
    directory = FilesystemBackdoor(root).packs_dir(RUN)
    past = time.time() - 3600
    for age, name in enumerate(sorted(os.listdir(directory))):
        os.utime(os.path.join(directory, name), (past - age * 60, past - age * 60))
    monkeypatch.setattr("durably_filesystem._blobs.MERGE_AFTER", 4)
    big = _random_batch(1, 100_000)  # another tier: its put merges the four
    async with FilesystemProvider(root) as provider:
        await provider.put_blobs(RUN, big)
        assert len(FilesystemBackdoor(root).pack_names(RUN)) == 2
        created = {
            info.created_at
            for info in (await provider.list_blobs(RUN)).items
            if info.digest not in big
        }
    assert len(created) == 1
    assert created.pop() == pytest.approx(past, abs=0.01)


@pytest.mark.asyncio
async def test_the_directory_is_flushed_before_a_replaced_pack_is_removed(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The merged pack's name is durable before any pack it replaces goes."""
    monkeypatch.setattr("durably_filesystem._blobs.MERGE_AFTER", 4)
    events: list[str] = []
    real_fsync_dir, real_unlink = packs_module.fsync_dir, os.unlink

    def fsync_dir(path: str) -> None:
        events.append("fsync dir")
        real_fsync_dir(path)

    def unlink(path: str, *args: Any, **kwargs: Any) -> None:
        if path.endswith(".pack") and not os.path.basename(path).startswith(".tmp-"):
            events.append("unlink")  # a replaced pack (not a linked temporary file)
        real_unlink(path, *args, **kwargs)

    async with FilesystemProvider(root) as provider:
        await provider.claim(RUN, "me", ttl=60)
        for i in range(3):
            await provider.put_blobs(RUN, _batch(2, seed=i))
        monkeypatch.setattr(packs_module, "fsync_dir", fsync_dir)
        monkeypatch.setattr(packs_module.os, "unlink", unlink)
        await provider.put_blobs(RUN, _batch(2, seed=3))
    assert "unlink" in events
    assert events[0] == "fsync dir"
    assert events.index("fsync dir") < events.index("unlink")
    assert events[-1] == "fsync dir"


@pytest.mark.asyncio
async def test_a_merge_never_brings_back_a_deleted_blob(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another instance deletes a blob (rewriting the pack this one indexed); this one's
    next merge starts from the packs as they are under the lock, not from its index."""
    monkeypatch.setattr("durably_filesystem._blobs.MERGE_AFTER", 4)
    batches = [_batch(2, seed=i) for i in range(4)]
    async with FilesystemProvider(root) as a, FilesystemProvider(root) as b:
        await a.claim(RUN, "me", ttl=60)
        for batch in batches[:3]:
            await a.put_blobs(RUN, batch)
        gone = next(iter(batches[0]))
        assert await b.delete_blob(RUN, gone) is True
        await a.put_blobs(RUN, batches[3])
        await a.put_blobs(RUN, _batch(2, seed=98))  # 4 packs of 2 blobs: a merges them
        assert len(FilesystemBackdoor(root).pack_names(RUN)) <= 2
        for instance in (a, b):
            assert not await instance.has_blob(RUN, gone)
            with pytest.raises(NotFoundError):
                await instance.get_blob(RUN, gone)
        assert gone not in _held(root)
        for batch in batches:
            for digest, data in batch.items():
                if digest != gone:
                    assert await b.get_blob(RUN, digest) == data


@pytest.mark.asyncio
@pytest.mark.parametrize("merged", ["small", "big"])
async def test_a_merge_cut_short_leaves_every_blob_and_is_finished_later(
    root: Path, monkeypatch: pytest.MonkeyPatch, merged: str
) -> None:
    """A crash after a merged pack was linked and before the packs it replaces were
    removed leaves blobs in two packs: each is read and listed once, and a later merge
    keeps one copy -- also when the merged pack is no longer small (it is not merged
    again: the old packs' blobs are found in it and not written anew)."""
    monkeypatch.setattr("durably_filesystem._blobs.MERGE_AFTER", 4)
    size, count = (300, 2) if merged == "small" else (100_000, 2)  # big: 600 KB merged
    stored: dict[str, bytes] = {}
    async with FilesystemProvider(root) as provider:
        await provider.claim(RUN, "me", ttl=60)
        for _ in range(3):
            batch = _random_batch(count, size)
            await provider.put_blobs(RUN, batch)
            stored.update(batch)
    directory = FilesystemBackdoor(root).packs_dir(RUN)
    # what the merge had written when the crash came: the merged pack, the old ones kept
    copies = [
        (digest, packs_module.read_blob(directory, digest, packed), None)
        for table in _tables(root).values()
        for digest, packed in table.items()
    ]
    packs_module.write_pack(directory, copies, True)
    assert len(os.listdir(directory)) == 4
    async with FilesystemProvider(root) as provider:
        listed = (await provider.list_blobs(RUN, limit=1000)).items
        assert [info.digest for info in listed] == sorted(stored)
        for digest, data in stored.items():
            assert await provider.get_blob(RUN, digest) == data
        for _ in range(2):  # the tier of the old packs fills up: they are merged
            more = _random_batch(count, size)
            await provider.put_blobs(RUN, more)
            stored.update(more)
        assert _held(root) == sorted(stored), "one copy of each blob"
        for digest, data in stored.items():
            assert await provider.get_blob(RUN, digest) == data


@pytest.mark.asyncio
async def test_a_merge_failing_in_a_later_group_finishes_the_earlier_ones(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A merge of two groups whose second pack cannot be written (a full disk) removes
    the packs the first one replaced before the error is logged: no blob is held twice,
    and the next puts do not pile up copies."""
    monkeypatch.setattr("durably_filesystem._blobs.MERGE_AFTER", 4)
    monkeypatch.setattr("durably_filesystem._blobs.INLINE_LIMIT", 2_000)  # groups of 2
    stored: dict[str, bytes] = {}
    async with FilesystemProvider(root) as provider:
        await provider.claim(RUN, "me", ttl=60)
        for _ in range(3):
            batch = _random_batch(1, 700)
            await provider.put_blobs(RUN, batch)
            stored.update(batch)
        real_write = packs_module.write_pack
        calls: list[int] = []

        def full_on_second(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(*args, **kwargs)

        monkeypatch.setattr(packs_module, "write_pack", full_on_second)
        batch = _random_batch(1, 700)
        with caplog.at_level(logging.WARNING, logger="durably.filesystem"):
            assert await provider.put_blobs(RUN, batch) == dict.fromkeys(batch, True)
        stored.update(batch)
        assert "No space left" in caplog.text
        assert len(calls) == 2
        held = _held(root)
        assert held == sorted(stored), "the first group's packs were removed"
        monkeypatch.setattr(packs_module, "write_pack", real_write)
        for _ in range(3):
            batch = _random_batch(1, 700)
            await provider.put_blobs(RUN, batch)
            stored.update(batch)
            assert _held(root) == sorted(stored)
        for digest, data in stored.items():
            assert await provider.get_blob(RUN, digest) == data


@pytest.mark.asyncio
async def test_a_damaged_pack_is_left_out_of_merges(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pack whose table cannot be read is not merged (its blobs cannot be copied): it
    stays, and so does the error for the blobs only it may hold."""
    monkeypatch.setattr("durably_filesystem._blobs.MERGE_AFTER", 4)
    lost = _batch(2, seed=0)
    async with FilesystemProvider(root) as provider:
        await provider.put_blobs(RUN, lost)
    (damaged,) = FilesystemBackdoor(root).pack_names(RUN)
    path = os.path.join(FilesystemBackdoor(root).packs_dir(RUN), damaged)
    raw = bytearray(Path(path).read_bytes())
    raw[20] ^= 0xFF
    Path(path).write_bytes(bytes(raw))
    stored: dict[str, bytes] = {}
    async with FilesystemProvider(root) as provider:
        await provider.claim(RUN, "me", ttl=60)
        for i in range(1, 7):
            batch = _batch(2, seed=i)
            await provider.put_blobs(RUN, batch)
            stored.update(batch)
        names = FilesystemBackdoor(root).pack_names(RUN)
        assert damaged in names
        assert len(names) < 1 + 6
        assert Path(path).read_bytes() == bytes(raw)
        with pytest.raises(CorruptObjectError, match=damaged):
            await provider.get_blob(RUN, next(iter(lost)))
        for digest, data in stored.items():
            assert await provider.get_blob(RUN, digest) == data


@pytest.mark.asyncio
async def test_a_merge_that_fails_does_not_fail_the_put(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The put's blobs were durable before the merge: a merge that cannot write (a full
    disk) is logged, the put succeeds, and nothing is lost."""
    monkeypatch.setattr("durably_filesystem._blobs.MERGE_AFTER", 2)

    def full_disk(*args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("durably_filesystem._blobs.merge", full_disk)
    stored: dict[str, bytes] = {}
    async with FilesystemProvider(root) as provider:
        await provider.claim(RUN, "me", ttl=60)
        for i in range(5):
            batch = _batch(1, seed=i)
            with caplog.at_level(logging.WARNING, logger="durably.filesystem"):
                assert await provider.put_blobs(RUN, batch) == dict.fromkeys(batch, True)
            stored.update(batch)
        for digest, data in stored.items():
            assert await provider.get_blob(RUN, digest) == data
    assert len(FilesystemBackdoor(root).pack_names(RUN)) == 5
    assert "could not merge the blob packs" in caplog.text
    assert "No space left" in caplog.text


@pytest.mark.asyncio
async def test_blobs_put_before_any_lease_are_not_merged(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Merging takes the execution's lock; an execution that never had one (blobs put
    before a lease or a checkpoint) is left as it is, so that putting blobs leaves blobs
    and nothing else (C33). Its first lease's next put merges."""
    monkeypatch.setattr("durably_filesystem._blobs.MERGE_AFTER", 2)
    async with FilesystemProvider(root) as provider:
        for i in range(5):
            await provider.put_blobs(RUN, _batch(1, seed=i))
        assert len(FilesystemBackdoor(root).pack_names(RUN)) == 5
        assert sorted(os.listdir(FilesystemBackdoor(root).execution_dir(RUN))) == ["blobs"]
        await provider.claim(RUN, "me", ttl=60)
        await provider.put_blobs(RUN, _batch(1, seed=5))
        assert len(FilesystemBackdoor(root).pack_names(RUN)) < 5
