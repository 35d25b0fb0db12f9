"""Content-defined chunking: how large nodes become content-addressed blobs, and back.

The rule is in :mod:`durably._codec._format` ("Chunking"). :class:`ChunkWriter` cuts the
encoded items of a node that is too large into chunk blobs (and, when the list of digests
is itself too long, index blobs); :class:`ChunkReader` fetches, verifies and parses them
while decoding.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from json.encoder import encode_basestring_ascii as _esc
from typing import Any
from zlib import crc32

from durably._codec._format import (
    DIGEST_UNIT,
    MAX_INDEX_DEPTH,
    BlobGetter,
    b64,
    corrupt,
    digest_ok,
    short_repr,
)
from durably.errors import CorruptObjectError

__all__ = ["ChunkReader", "ChunkWriter"]


class ChunkWriter:
    """The blobs of one encode call.

    Attributes:
        limit: The blob threshold (characters).
        blobs: Digest -> canonical bytes, in the order they were first written.
    """

    __slots__ = ("avg", "blob_log", "blobs", "limit", "lo")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lo = limit // 16  # no content-defined boundary in the first 1/16 of a chunk
        self.avg = max(1, limit * 3 // 16)  # so that chunks average ~1/4 of the threshold
        self.blobs: dict[str, bytes] = {}
        self.blob_log: list[str] = []

    def mark(self) -> int:
        """A point to :meth:`rollback` to."""
        return len(self.blob_log)

    def rollback(self, mark: int) -> None:
        """Forget the blobs first written after ``mark``."""
        for digest in self.blob_log[mark:]:
            del self.blobs[digest]
        del self.blob_log[mark:]

    def store(self, text: str) -> str:
        """Keep one blob; return its digest."""
        data = text.encode("ascii")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if digest not in self.blobs:
            self.blobs[digest] = data
            self.blob_log.append(digest)
        return digest

    def cdc(self, units: list[str], prefix: str, min_units: int) -> list[str]:
        """Group ``units`` into content-defined chunks; store each; return the digests."""
        limit, lo, avg, store = self.limit, self.lo, self.avg, self.store
        out: list[str] = []
        cur: list[str] = []
        acc = 0
        for unit in units:
            n = len(unit) + 1
            if acc + n > limit and len(cur) >= min_units:
                out.append(store(prefix + ",".join(cur) + "]"))
                cur = []
                acc = 0
            cur.append(unit)
            acc += n
            if (
                len(cur) >= min_units
                and acc >= lo
                and (n >= avg or crc32(unit.encode("ascii")) * avg < n << 32)
            ):
                out.append(store(prefix + ",".join(cur) + "]"))
                cur = []
                acc = 0
        if cur:
            out.append(store(prefix + ",".join(cur) + "]"))
        return out

    def chunked(self, tag: str, header: str, units: list[str]) -> str:
        """The ``["C", tag, header..., digest, ...]`` node of a node's encoded items."""
        digests = self.cdc(units, '["c",', 1)
        while len(digests) * DIGEST_UNIT > self.limit:
            digests = self.cdc([f'"{d}"' for d in digests], '["cc",', 2)
        return f'["C","{tag}"{header},' + ",".join(f'"{d}"' for d in digests) + "]"

    def big_str(self, value: str) -> str:
        """A str longer than the threshold, cut into pieces at fixed positions."""
        step = max(1, self.limit // 2)
        return self.chunked(
            "str", "", [_esc(value[i : i + step]) for i in range(0, len(value), step)]
        )

    def binary(self, tag: str, value: bytes | bytearray) -> str:
        """A ``b``/``ba``/``lf`` node, chunked at fixed positions when too long."""
        s = f'["{tag}","{b64(value)}"]'
        if len(s) <= self.limit:
            return s
        step = max(3, self.limit // 2 // 4 * 3)
        mv = memoryview(value)
        return self.chunked(
            tag, "", [f'"{b64(mv[i : i + step])}"' for i in range(0, len(value), step)]
        )


class ChunkReader:
    """The blobs of one decode call, fetched once each and verified against their digest."""

    __slots__ = ("cache", "get_blob")

    def __init__(self, get_blob: BlobGetter | None) -> None:
        self.get_blob = get_blob
        self.cache: dict[str, list[Any]] = {}

    def blob(self, digest: Any) -> list[Any]:
        """Fetch, verify and parse one chunk blob.

        Raises:
            Fail: A malformed digest, or a chunked node where no blobs exist.
            CorruptObjectError: The blob is missing, corrupt or not a chunk.
        """
        if not digest_ok(digest):
            raise corrupt(f"bad blob digest {short_repr(digest)}")
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        if self.get_blob is None:
            raise corrupt("a chunked node in a single-value document")
        try:
            data = self.get_blob(digest)
        except Exception as exc:
            raise CorruptObjectError(f"blob {digest} is unavailable: {exc!r}") from exc
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CorruptObjectError(
                f"blob {digest}: the getter returned {type(data).__name__}, not bytes"
            )
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(actual, digest):
            raise CorruptObjectError(f"blob {digest} is corrupt: its content hashes to {actual}")
        try:
            content = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise CorruptObjectError(f"blob {digest} is not valid JSON: {exc}") from None
        if type(content) is not list or not content or content[0] not in ("c", "cc"):
            raise CorruptObjectError(f"blob {digest} is not a chunk")
        self.cache[digest] = content
        return content

    def expand(self, digest: Any, out: list[Any], depth: int = 0) -> None:
        """Append the items of the chunk ``digest`` (recursively for index chunks) to out."""
        content = self.blob(digest)
        if content[0] == "c":
            out.extend(content[1:])
            return
        if depth >= MAX_INDEX_DEPTH:
            raise corrupt("chunk index nested too deeply")
        for sub in content[1:]:
            self.expand(sub, out, depth + 1)
