"""The on-disk format of an execution's log, and the scanner that indexes it.

A log file is a 16-byte file header followed by records, appended one ``write`` each::

    file header (16 bytes, little-endian)
        0  8  magic            b"\\x89DRBLOG\\n"
        8  4  format version   1
       12  4  reserved         0

    record
        0  4  magic            b"\\xd5DRR"
        4  1  type             1 = checkpoint, 2 = tombstone, 3 = seal
        5  1  flags            0
        6  2  reserved         0
        8  8  seq
       16  8  write id         random; the checkpoint's version
       24  8  created          UNIX nanoseconds
       32  4  metadata length
       36  8  data length      length of the stored (envelope) bytes
       44  4  metadata CRC-32
       48  4  header CRC-32    of bytes 0..48
       52  .  metadata         compact JSON object, UTF-8 (absent when empty)
        .  .  data             the stored bytes, verbatim
        . 16  frame checksum   BLAKE2b-128 of everything above

The header CRC makes the lengths trustworthy on their own, so a record whose payload is
damaged can be skipped (and reported) without losing the records after it; the metadata
CRC lets listings trust metadata without reading payloads. The frame checksum covers
the whole record; it is verified whenever a payload is read, and while scanning for
records small enough to be read anyway.

A record that extends past the end of the file is an append that never completed (a
crash in the middle of ``write``): it is not indexed and the next writer truncates it.
A complete record that fails its checksum is damage, wherever it is: it is indexed,
listed, and loading it raises :class:`~durably.errors.CorruptObjectError`.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from bisect import bisect_left, insort
from dataclasses import dataclass, field
from typing import NamedTuple

from durably.errors import CorruptObjectError, UnsupportedFormatError
from durably.storage import decode_metadata, encode_metadata

LOG_MAGIC = b"\x89DRBLOG\n"
LOG_VERSION = 1
_LOG_HEAD = struct.Struct("<8sII")
LOG_HEADER_SIZE = _LOG_HEAD.size
LOG_HEADER = _LOG_HEAD.pack(LOG_MAGIC, LOG_VERSION, 0)

REC_MAGIC = b"\xd5DRR"
_REC_HEAD = struct.Struct("<4sBBHQQqIQI")
_CRC = struct.Struct("<I")
HEAD_SIZE = _REC_HEAD.size + _CRC.size
SUM_SIZE = 16
OVERHEAD = HEAD_SIZE + SUM_SIZE

T_CHECKPOINT = 1
T_TOMBSTONE = 2

MAX_META = 64 * 1024
MAX_DATA = 1 << 46
SCAN_CHUNK = 1 << 20
VERIFY_WHILE_SCANNING = 256 * 1024
"""Records up to this size are fully verified while the log is scanned (their bytes
are read anyway); larger ones are verified when loaded."""


def frame_sum(*parts: bytes | memoryview) -> bytes:
    digest = hashlib.blake2b(digest_size=SUM_SIZE)
    for part in parts:
        digest.update(part)
    return digest.digest()


def encode_meta(metadata: dict[str, str]) -> bytes:
    return encode_metadata(metadata).encode("utf-8")


def encode_record(
    kind: int,
    seq: int,
    write_id: int,
    created_ns: int,
    meta: bytes,
    data: bytes | memoryview,
) -> list[bytes | memoryview]:
    """Return a record as a list of buffers to hand to ``os.writev`` (data is not copied)."""
    head = _REC_HEAD.pack(
        REC_MAGIC, kind, 0, 0, seq, write_id, created_ns, len(meta), len(data), zlib.crc32(meta)
    )
    head += _CRC.pack(zlib.crc32(head))
    if meta:
        head += meta
    return [head, data, frame_sum(head, data)]


class RecordHead(NamedTuple):
    """A record header that passed its CRC and sanity checks (a tuple: the scan makes
    one per record)."""

    kind: int
    seq: int
    write_id: int
    created_ns: int
    meta_len: int
    data_len: int
    meta_crc: int
    length: int
    """The whole record's length: header, metadata, data and frame checksum."""


def decode_head(buf: bytes | memoryview, offset: int = 0) -> RecordHead | None:
    """Parse the header at ``offset``; None if it is not a valid record header."""
    if len(buf) - offset < HEAD_SIZE:
        return None
    fields = _REC_HEAD.unpack_from(buf, offset)
    magic, kind, flags, reserved, seq, write_id, created_ns, meta_len, data_len, meta_crc = fields
    if magic != REC_MAGIC:
        return None
    (crc,) = _CRC.unpack_from(buf, offset + _REC_HEAD.size)
    if crc != zlib.crc32(buf[offset : offset + _REC_HEAD.size]):
        return None
    if kind not in (T_CHECKPOINT, T_TOMBSTONE) or flags or reserved:
        return None
    if meta_len > MAX_META or data_len > MAX_DATA or seq >= 2**63:
        return None
    if kind == T_TOMBSTONE and (meta_len or data_len):
        return None
    length = HEAD_SIZE + meta_len + data_len + SUM_SIZE
    return RecordHead(kind, seq, write_id, created_ns, meta_len, data_len, meta_crc, length)


class Entry:
    """Where the current version of a checkpoint lives in the log.

    A scan checks each record's metadata CRC but keeps the metadata's bytes unparsed
    until :attr:`metadata` or :attr:`corrupt` is first read: a resume reads the last
    few records of a long log, and parsing the JSON of every record was most of the
    cost of opening it. Metadata that passes its CRC but does not parse makes the entry
    corrupt when it is parsed, as it would have at the scan (only a writer other than
    this provider can store such a record).
    """

    __slots__ = (
        "_corrupt",
        "_metadata",
        "_raw_meta",
        "created_ns",
        "data_len",
        "length",
        "meta_len",
        "offset",
        "seq",
        "verified",
        "write_id",
    )

    def __init__(
        self,
        seq: int,
        offset: int,
        length: int,
        write_id: int,
        created_ns: int,
        meta_len: int,
        data_len: int,
        metadata: dict[str, str] | None,
        corrupt: bool = False,
        verified: bool = False,
        *,
        raw_meta: bytes | None = None,
    ) -> None:
        self.seq = seq
        self.offset = offset
        self.length = length
        self.write_id = write_id
        self.created_ns = created_ns
        self.meta_len = meta_len
        self.data_len = data_len
        self.verified = verified
        self._corrupt = corrupt
        self._metadata = metadata  # None: not parsed yet, from _raw_meta (CRC-checked)
        self._raw_meta = raw_meta

    def _parse(self) -> dict[str, str]:
        raw, self._raw_meta = self._raw_meta, None
        try:
            metadata = decode_metadata(raw, f"the record of checkpoint {self.seq}")
        except CorruptObjectError:
            metadata = {}
            self._corrupt = True
        self._metadata = metadata
        return metadata

    @property
    def metadata(self) -> dict[str, str]:
        """The record's metadata ({} if it is damaged)."""
        metadata = self._metadata
        return self._parse() if metadata is None else metadata

    @property
    def corrupt(self) -> bool:
        """Known to fail its checks (it is listed, and loading it raises)."""
        if self._metadata is None:
            self._parse()
        return self._corrupt

    @corrupt.setter
    def corrupt(self, value: bool) -> None:
        if self._metadata is None:
            self._parse()
        self._corrupt = value

    def moved(self, offset: int, *, corrupt: bool) -> Entry:
        """This entry at another offset (compaction), verified; its metadata still
        unparsed if it was."""
        return Entry(
            self.seq,
            offset,
            self.length,
            self.write_id,
            self.created_ns,
            self.meta_len,
            self.data_len,
            self._metadata,
            self._corrupt or corrupt,
            True,
            raw_meta=self._raw_meta,
        )

    @property
    def data_offset(self) -> int:
        return self.offset + HEAD_SIZE + self.meta_len

    @property
    def version(self) -> str:
        return f"{self.write_id:016x}"

    def __repr__(self) -> str:
        return f"Entry(seq={self.seq}, offset={self.offset}, length={self.length})"


@dataclass(slots=True)
class TornTail:
    """Bytes at the end of the file that do not form a complete record: an append that
    never completed. ``seq`` is known when its header is intact."""

    offset: int
    seq: int | None


@dataclass(slots=True)
class LogIndex:
    """The in-memory index of one log file, built by :func:`scan`."""

    entries: dict[int, Entry] = field(default_factory=dict)
    seqs: list[int] = field(default_factory=list)
    live_bytes: int = 0
    dead_bytes: int = 0
    valid_end: int = LOG_HEADER_SIZE
    """End of the last record the index accounts for; appends go here."""
    scanned_size: int = LOG_HEADER_SIZE
    """The file size when it was last scanned."""
    tail: TornTail | None = None
    corrupt_regions: list[tuple[int, int]] = field(default_factory=list)
    """Unreadable byte ranges in the middle of the log (their records are unknown)."""

    def put(self, entry: Entry) -> None:
        previous = self.entries.get(entry.seq)
        if previous is None:
            if not self.seqs or entry.seq > self.seqs[-1]:
                self.seqs.append(entry.seq)
            else:
                insort(self.seqs, entry.seq)
        else:
            self.live_bytes -= previous.length
            self.dead_bytes += previous.length
        self.entries[entry.seq] = entry
        self.live_bytes += entry.length

    def remove(self, seq: int, tombstone_length: int) -> bool:
        self.dead_bytes += tombstone_length
        previous = self.entries.pop(seq, None)
        if previous is None:
            return False
        del self.seqs[bisect_left(self.seqs, seq)]
        self.live_bytes -= previous.length
        self.dead_bytes += previous.length
        return True


def read_log_header(fd: int, path: str) -> None:
    """Check a log's file header; raise if it is not a log this code can read."""
    head = os.pread(fd, LOG_HEADER_SIZE, 0)
    if len(head) < LOG_HEADER_SIZE:
        raise CorruptObjectError(f"log {path} is truncated: its file header is incomplete")
    magic, version, _reserved = _LOG_HEAD.unpack(head)
    if magic != LOG_MAGIC:
        raise CorruptObjectError(f"{path} is not a durably log (bad magic {magic!r})")
    if version != LOG_VERSION:
        raise UnsupportedFormatError(
            f"log {path} has format version {version}; this durably-filesystem reads "
            f"version {LOG_VERSION}. Upgrade durably-filesystem to read it."
        )


class _ShortRead(Exception):
    """The file ended before the size it had when the scan started (it was truncated)."""


class _Window:
    """Buffered positional reads of a file region."""

    def __init__(self, fd: int, end: int) -> None:
        self.fd = fd
        self.end = end
        self.base = 0
        self.buf = b""

    def get(self, offset: int, size: int) -> memoryview:
        stop = offset + size
        if not (self.base <= offset and stop <= self.base + len(self.buf)):
            want = min(max(size, SCAN_CHUNK), self.end - offset)
            self.buf = pread_exact(self.fd, want, offset)
            self.base = offset
            if len(self.buf) < size:
                raise _ShortRead
        start = offset - self.base
        return memoryview(self.buf)[start : start + size]


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """Read ``size`` bytes at ``offset`` (fewer only at end of file)."""
    chunks = []
    remaining = size
    while remaining > 0:
        chunk = os.pread(fd, min(remaining, 1 << 30), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def verify_record(fd: int, offset: int, head: RecordHead) -> bool:
    """Whether the record at ``offset`` passes its frame checksum (streamed for big ones)."""
    body = head.length - SUM_SIZE
    digest = hashlib.blake2b(digest_size=SUM_SIZE)
    position = offset
    while position < offset + body:
        chunk = os.pread(fd, min(SCAN_CHUNK * 8, offset + body - position), position)
        if not chunk:
            return False
        digest.update(chunk)
        position += len(chunk)
    return os.pread(fd, SUM_SIZE, offset + body) == digest.digest()


def _resync(fd: int, start: int, end: int) -> int | None:
    """The offset of the next verifiable record at or after ``start``, or None."""
    position = start
    while position < end:
        chunk = os.pread(fd, min(SCAN_CHUNK, end - position), position)
        if not chunk:
            return None
        found = chunk.find(REC_MAGIC)
        while found != -1:
            candidate = position + found
            head_bytes = os.pread(fd, HEAD_SIZE, candidate)
            head = decode_head(head_bytes)
            if (
                head is not None
                and candidate + head.length <= end
                and verify_record(fd, candidate, head)
            ):
                return candidate
            found = chunk.find(REC_MAGIC, found + 1)
        # the magic may straddle two chunks
        position += max(1, len(chunk) - len(REC_MAGIC) + 1)
    return None


def scan(fd: int, index: LogIndex, start: int, end: int) -> None:
    """Index the records in ``[start, end)`` of a log into ``index``.

    A record whose header is valid but whose payload or metadata fails its checks is
    indexed as corrupt (listed; loading it raises). Unreadable bytes followed by a valid
    record become a *corrupt region*. Bytes at the end of the file that do not form a
    complete record -- a record cut short, or an unreadable header with no valid record
    after it -- become :attr:`LogIndex.tail` and are not indexed: they are an append
    that never completed, and the next writer truncates them.
    """
    window = _Window(fd, end)
    position = start
    index.tail = None
    try:
        _scan_records(fd, index, window, position, end)
    except _ShortRead:
        # another process truncated a torn tail while we read it: stop where the
        # valid records end; the next refresh reads what was appended since
        index.tail = TornTail(index.valid_end, None)
    index.scanned_size = end


def _scan_records(fd: int, index: LogIndex, window: _Window, position: int, end: int) -> None:
    index.valid_end = position
    while position < end:
        if end - position < HEAD_SIZE:
            index.tail = TornTail(position, None)
            break
        head = decode_head(window.get(position, HEAD_SIZE))
        if head is None:
            resumed = _resync(fd, position + 1, end)
            if resumed is None:
                index.tail = TornTail(position, None)
                break
            index.corrupt_regions.append((position, resumed))
            index.dead_bytes += resumed - position
            position = index.valid_end = resumed
            continue
        record_end = position + head.length
        if record_end > end:
            index.tail = TornTail(position, head.seq)
            break
        length = head.length
        meta_len = head.meta_len
        if length <= VERIFY_WHILE_SCANNING:
            record = window.get(position, length)
            body = length - SUM_SIZE
            corrupt = frame_sum(record[:body]) != record[body:]
            verified = True
            meta = record[HEAD_SIZE : HEAD_SIZE + meta_len]
        else:
            verified = corrupt = False
            meta = window.get(position + HEAD_SIZE, meta_len)
        if head.kind == T_CHECKPOINT:
            raw_meta = bytes(meta)
            metadata: dict[str, str] | None = None  # parsed when first read (see Entry)
            if zlib.crc32(raw_meta) != head.meta_crc:
                corrupt = True
                metadata = {}
            elif not meta_len:
                metadata = {}
            index.put(
                Entry(
                    head.seq,
                    position,
                    length,
                    head.write_id,
                    head.created_ns,
                    meta_len,
                    head.data_len,
                    metadata,
                    corrupt,
                    verified,
                    raw_meta=None if metadata is not None else raw_meta,
                )
            )
        else:
            # a tombstone carries no payload: its CRC-checked header says all there is
            index.remove(head.seq, head.length)
        position = record_end
        index.valid_end = position


def check_record(raw: bytes | memoryview, entry: Entry) -> bool:
    """Whether ``raw`` (a whole record read back) is the record ``entry`` describes."""
    if len(raw) != entry.length:
        return False
    head = decode_head(raw)
    if (
        head is None
        or head.kind != T_CHECKPOINT
        or head.seq != entry.seq
        or head.write_id != entry.write_id
        or head.length != entry.length
    ):
        return False
    return frame_sum(raw[: entry.length - SUM_SIZE]) == raw[entry.length - SUM_SIZE :]
