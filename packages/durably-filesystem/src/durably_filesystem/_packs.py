"""Blob packs: many blobs of one execution in one file, ``E/blobs/<32 hex>.pack``.

A store of layout version 2 (see :mod:`~durably_filesystem._store`) writes the new blobs
of a call -- a checkpoint's batch (C33) or one blob (C17) -- as one pack: a temporary
file written and flushed, linked under its final name, and the directory flushed. That
is two flushes for the whole batch (the file, then its directory), where a file per blob
takes three per blob (and a fan-out directory for most of them). A pack never changes
once linked, so a reader sees all of it or nothing, and a crash leaves at most a
temporary file.

Format (little-endian)::

    header
         0  8  magic            b"\\x89DRBPAK\\n"
         8  4  format version   1
        12  4  count            N, 1 <= N <= MAX_ENTRIES
    table, N entries of 56 bytes
         0 32  digest           the blob's digest (its SHA-256, raw)
        32  8  length           length of the stored (envelope) bytes
        40 16  checksum         BLAKE2b-128 of the stored bytes
    16         table checksum   BLAKE2b-128 of the header and the table
    data                        each entry's stored bytes, in table order, back to back

The table's checksum is checked when a pack is indexed, a blob's checksum whenever it is
read. A pack whose table is damaged hides which blobs it holds: a blob found nowhere
else is then reported as possibly in it (:class:`~durably.errors.CorruptObjectError`),
never as absent. Deleting a blob rewrites its pack without it (a new pack linked, then
the old one removed); :func:`merge` rewrites many small packs as one the same way.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import struct
from collections.abc import Iterable
from typing import NamedTuple

from durably.errors import CorruptObjectError, StoreError, UnsupportedFormatError
from durably_filesystem._format import frame_sum, pread_exact
from durably_filesystem._fsutil import O_CLOEXEC, fsync_dir, publish, tmp_path, write_new

__all__ = [
    "MAX_ENTRIES",
    "PackIndex",
    "Packed",
    "is_pack_name",
    "merge",
    "read_blob",
    "remove",
    "write_pack",
]

MAGIC = b"\x89DRBPAK\n"
VERSION = 1
MAX_ENTRIES = 4096
"""The most blobs one pack holds (a bigger batch is written as several packs)."""
SUFFIX = ".pack"
_HEAD = struct.Struct("<8sII")
_ENTRY = struct.Struct("<32sQ16s")
_SUM = 16


class Packed(NamedTuple):
    """Where a blob lies: its pack's file name, offset, length and checksum."""

    pack: str
    offset: int
    length: int
    checksum: bytes
    created: float
    """The pack's modification time (UNIX seconds): when the blob was stored."""


_NAME = re.compile(r"[0-9a-f]{32}\.pack")
_RELISTS = 10
"""Listings of the packs directory while packs vanish under it, before giving up."""


def is_pack_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def encode(entries: Iterable[tuple[str, bytes | memoryview, bytes | None]]) -> list[bytes]:
    """A pack's bytes as buffers: ``entries`` are ``(digest, stored, checksum)``, the
    checksum computed here when None (a rewrite carries the old one over, so that a
    damaged blob stays detectably damaged)."""
    table: list[bytes] = []
    data: list[bytes] = []
    for digest, stored, checksum in entries:
        raw = bytes.fromhex(digest.partition(":")[2])
        table.append(_ENTRY.pack(raw, len(stored), checksum or frame_sum(stored)))
        data.append(bytes(stored))
    head = _HEAD.pack(MAGIC, VERSION, len(table)) + b"".join(table)
    return [head, frame_sum(head), *data]


def write_pack(
    directory: str, entries: Iterable[tuple[str, bytes | memoryview, bytes | None]], fsync: bool
) -> tuple[str, dict[str, Packed]]:
    """Write a new pack into ``directory`` (flushed, then linked; the directory itself is
    not flushed: the caller flushes it once for all its packs). Returns its name and
    what it holds."""
    entries = list(entries)
    name = secrets.token_hex(16) + SUFFIX
    path = os.path.join(directory, name)
    tmp = tmp_path(directory, name)
    write_new(tmp, encode(entries), fsync=fsync)
    if not publish(tmp, path, exclusive=True):
        raise StoreError(f"cannot create {path}: a pack of that name exists")
    created = os.stat(path).st_mtime
    offset = _HEAD.size + len(entries) * _ENTRY.size + _SUM
    held: dict[str, Packed] = {}
    for digest, stored, checksum in entries:
        held[digest] = Packed(name, offset, len(stored), checksum or frame_sum(stored), created)
        offset += len(stored)
    return name, held


def read_table(path: str) -> dict[str, Packed]:
    """Index the pack at ``path`` from its table.

    Raises:
        FileNotFoundError: it is gone (deleted, or rewritten by a deletion).
        CorruptObjectError: its header or table is damaged, or it is truncated.
        UnsupportedFormatError: a newer pack format.
    """
    name = os.path.basename(path)
    fd = os.open(path, os.O_RDONLY | O_CLOEXEC)
    try:
        info = os.fstat(fd)
        head = pread_exact(fd, _HEAD.size, 0)
        if len(head) < _HEAD.size:
            raise CorruptObjectError(f"blob pack {path} is truncated ({info.st_size} bytes)")
        magic, version, count = _HEAD.unpack(head)
        if magic != MAGIC:
            raise CorruptObjectError(f"blob pack {path} is damaged: not a pack header")
        if version > VERSION:
            raise UnsupportedFormatError(
                f"blob pack {path} has format version {version}; this durably-filesystem "
                f"knows version {VERSION}. Upgrade it."
            )
        if version != VERSION:
            raise CorruptObjectError(f"blob pack {path} is damaged: format version {version}")
        if not 1 <= count <= MAX_ENTRIES:
            raise CorruptObjectError(f"blob pack {path} is damaged: {count} entries")
        size = count * _ENTRY.size
        rest = pread_exact(fd, size + _SUM, _HEAD.size)
        table, checksum = rest[:size], rest[size:]
        if len(rest) < size + _SUM or frame_sum(head, table) != checksum:
            raise CorruptObjectError(f"blob pack {path} is damaged: its table fails its checksum")
    finally:
        os.close(fd)
    offset = _HEAD.size + size + _SUM
    held: dict[str, Packed] = {}
    for raw, length, blob_sum in _ENTRY.iter_unpack(table):
        held[f"sha256:{raw.hex()}"] = Packed(name, offset, length, blob_sum, info.st_mtime)
        offset += length
    if offset != info.st_size:
        raise CorruptObjectError(
            f"blob pack {path} is damaged: {info.st_size} bytes, its table says {offset}"
        )
    return held


def read_blob(directory: str, digest: str, packed: Packed) -> bytes:
    """A blob's stored bytes from its pack, checked (FileNotFoundError: the pack is gone)."""
    path = os.path.join(directory, packed.pack)
    fd = os.open(path, os.O_RDONLY | O_CLOEXEC)
    try:
        stored = pread_exact(fd, packed.length, packed.offset)
    finally:
        os.close(fd)
    if len(stored) != packed.length or frame_sum(stored) != packed.checksum:
        raise CorruptObjectError(f"blob {digest} in pack {path} fails its checksum")
    return stored


class PackIndex:
    """Which blobs an execution's packs hold, kept up to date by :meth:`refresh` (one
    ``listdir``; only packs not seen before are read: a pack never changes)."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.packs: dict[str, dict[str, Packed]] = {}
        self.blobs: dict[str, Packed] = {}
        self.damaged: dict[str, tuple[type[CorruptObjectError | UnsupportedFormatError], str]] = {}
        """Packs that cannot be indexed: name -> (error class, message)."""
        self.sizes: dict[str, int] = {}
        """Pack name -> the bytes of the blobs it holds (what :func:`merge` plans with)."""

    def refresh(self) -> None:
        """Follow the packs directory: index new packs, forget removed ones.

        A pack listed but gone before its table was read was replaced (a deletion
        rewrote it) or removed: the directory is listed again, so that the pack that
        replaced it -- linked before the old one was removed -- is not missed.
        """
        for _ in range(_RELISTS):
            if self._follow():
                return
        raise StoreError(f"cannot index the blob packs of {self.dir}: they keep being replaced")

    def _follow(self) -> bool:
        """One listing (see :meth:`refresh`); False if a listed pack vanished meanwhile."""
        try:
            names = {name for name in os.listdir(self.dir) if is_pack_name(name)}
        except (FileNotFoundError, NotADirectoryError):
            names = set()
        complete = True
        gone = [name for name in self.packs if name not in names]
        for name in [name for name in self.damaged if name not in names]:
            del self.damaged[name]
        for name in gone:
            del self.packs[name]
            del self.sizes[name]
        for name in sorted(names - self.packs.keys() - self.damaged.keys()):
            try:
                self.packs[name] = read_table(os.path.join(self.dir, name))
            except FileNotFoundError:
                complete = False
                continue
            except (CorruptObjectError, UnsupportedFormatError) as exc:
                self.damaged[name] = (type(exc), str(exc))
                continue
            self.sizes[name] = sum(packed.length for packed in self.packs[name].values())
            for digest, packed in self.packs[name].items():
                self.blobs.setdefault(digest, packed)
        if gone:
            self.blobs = {}
            for held in self.packs.values():
                for digest, packed in held.items():
                    self.blobs.setdefault(digest, packed)
        return complete

    def add(self, name: str, held: dict[str, Packed]) -> None:
        """Record a pack this process just linked."""
        self.packs[name] = held
        self.sizes[name] = sum(packed.length for packed in held.values())
        for digest, packed in held.items():
            self.blobs.setdefault(digest, packed)

    def missing(self, digest: str, execution_id: str) -> None:
        """A blob not found: raise if a damaged pack may hold it (else return)."""
        for name, (cls, reason) in sorted(self.damaged.items()):
            raise cls(
                f"blob {digest} of execution {execution_id!r} was not found, and pack "
                f"{name} cannot be read: {reason}"
            )


def remove(index: PackIndex, digest: str, fsync: bool) -> bool:
    """Rewrite every pack that holds ``digest`` without it; whether one held it.

    The caller holds the execution's lock (two deletions rewriting one pack at once
    would each put the other's blob back). The new pack is linked and made durable
    before the old one is removed, so a crash in between loses nothing: the blob is
    then still there, as if the deletion had not started.
    """
    index.refresh()
    holders = [name for name, held in index.packs.items() if digest in held]
    for name in holders:
        path = os.path.join(index.dir, name)
        keep = [(d, packed) for d, packed in index.packs[name].items() if d != digest]
        if keep:
            fd = os.open(path, os.O_RDONLY | O_CLOEXEC)
            try:
                kept = [(d, pread_exact(fd, p.length, p.offset), p.checksum) for d, p in keep]
            finally:
                os.close(fd)
            new_name, new_held = write_pack(index.dir, kept, fsync)
            created = os.stat(path)  # the blobs keep their created_at
            os.utime(
                os.path.join(index.dir, new_name), ns=(created.st_atime_ns, created.st_mtime_ns)
            )
            index.add(
                new_name, {d: p._replace(created=created.st_mtime) for d, p in new_held.items()}
            )
            if fsync:
                fsync_dir(index.dir)
        os.unlink(path)
    if holders:
        if fsync:
            fsync_dir(index.dir)
        index.refresh()
    return bool(holders)


def merge(
    directory: str,
    plan: list[list[tuple[str, dict[str, Packed]]]],
    elsewhere: set[str],
    fsync: bool,
) -> int:
    """Write each group of packs in ``plan`` as one pack, then remove the packs they
    replace; returns how many packs were removed.

    ``plan`` is a list of groups of ``(pack name, what it holds)``, as the caller's index
    knew them; each group fits in one pack (:data:`MAX_ENTRIES` blobs). A blob is
    written once: not again when a pack outside the plan holds it (``elsewhere``: a
    merge cut short by a crash left it there), nor when an earlier group or pack of the
    plan held it. A group all of whose blobs are held elsewhere writes nothing: its
    packs are only removed. The caller holds the execution's lock: a deletion that
    rewrote one of these packs meanwhile would be undone (its blob copied into the
    merged pack). Every merged pack is linked and the directory flushed before any pack
    it replaces is removed, so a crash in between leaves some blobs in two packs, none
    lost -- and so does an error in a later group: the groups merged before it are
    finished (their packs removed) before it is raised. A merged pack takes the newest
    modification time of the packs it replaces: a blob may look younger than it is (its
    ``created_at``), never older, so a collector that spares young blobs still spares
    it. A group whose pack vanished meanwhile is left as it is. Runs in a worker thread:
    it reads and writes files only, not the index.
    """
    replaced: list[str] = []
    written = set(elsewhere)
    try:
        for group in plan:
            entries: dict[str, tuple[str, bytes, bytes]] = {}
            newest: os.stat_result | None = None
            try:
                for name, held in group:
                    fd = os.open(os.path.join(directory, name), os.O_RDONLY | O_CLOEXEC)
                    try:
                        info = os.fstat(fd)
                        for digest, packed in held.items():
                            if digest not in entries and digest not in written:
                                # with its old checksum: damage stays visible
                                stored = pread_exact(fd, packed.length, packed.offset)
                                entries[digest] = (digest, stored, packed.checksum)
                    finally:
                        os.close(fd)
                    if newest is None or info.st_mtime_ns > newest.st_mtime_ns:
                        newest = info
            except FileNotFoundError:
                continue  # deleted with its execution, or rewritten by a deletion earlier
            assert newest is not None
            if entries:
                new_name, _held = write_pack(directory, entries.values(), fsync)
                os.utime(
                    os.path.join(directory, new_name),
                    ns=(newest.st_atime_ns, newest.st_mtime_ns),
                )
                written.update(entries)
            replaced += [name for name, _held in group]
    finally:
        if replaced:
            if fsync:
                fsync_dir(directory)  # the merged packs are durable names before any goes
            for name in replaced:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, name))
            if fsync:
                fsync_dir(directory)
    return len(replaced)
