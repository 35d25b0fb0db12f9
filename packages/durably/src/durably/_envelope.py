"""The envelope every stored object is wrapped in: format version, codec, checksum.

Layout (little-endian, 40-byte header then the payload)::

    0   4  magic            b"\\x89DRB"
    4   1  format version   1
    5   1  codec            0 = identity, 1 = zstd
    6   2  reserved         0
    8   8  raw length       length of the payload before compression
    16  8  stored length    length of the payload as stored (after compression)
    24 16  checksum         BLAKE2b-128 of bytes 0..24 and the stored payload

A reader verifies magic, version, lengths and checksum before it decompresses, so a
torn, truncated or bit-flipped object raises :class:`~durably.errors.CorruptObjectError`
and an object from a newer durably raises :class:`~durably.errors.UnsupportedFormatError`.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from typing import Any

from durably.errors import CorruptObjectError, UnsupportedFormatError

MAGIC = b"\x89DRB"
FORMAT_VERSION = 1
CODEC_IDENTITY = 0
CODEC_ZSTD = 1
CODEC_NAMES = {CODEC_IDENTITY: "identity", CODEC_ZSTD: "zstd"}

_HEAD = struct.Struct("<4sBBHQQ")
HEADER_SIZE = _HEAD.size + 16

_local = threading.local()


def _zstd() -> Any:
    import zstandard

    return zstandard


class Envelope:
    """Wraps payloads for storage and unwraps them, verifying integrity.

    Args:
        compression_level: zstd level (1-22). 0 disables compression.
        compression_threshold: Payloads shorter than this many bytes are stored
            uncompressed (compressing tiny payloads costs more than it saves).
    """

    __slots__ = ("compression_level", "compression_threshold")

    def __init__(self, *, compression_level: int = 3, compression_threshold: int = 1024) -> None:
        self.compression_level = compression_level
        self.compression_threshold = compression_threshold

    def _compressor(self) -> Any:
        cache = getattr(_local, "compressors", None)
        if cache is None:
            cache = _local.compressors = {}
        comp = cache.get(self.compression_level)
        if comp is None:
            comp = cache[self.compression_level] = _zstd().ZstdCompressor(
                level=self.compression_level
            )
        return comp

    def wrap(self, payload: bytes) -> bytes:
        """Return ``payload`` wrapped in an envelope (compressed when worth it)."""
        codec = CODEC_IDENTITY
        stored = payload
        if self.compression_level > 0 and len(payload) >= self.compression_threshold:
            packed = self._compressor().compress(payload)
            if len(packed) < len(payload):
                codec, stored = CODEC_ZSTD, packed
        head = _HEAD.pack(MAGIC, FORMAT_VERSION, codec, 0, len(payload), len(stored))
        digest = hashlib.blake2b(head, digest_size=16)
        digest.update(stored)
        return b"".join((head, digest.digest(), stored))


def unwrap(blob: bytes | bytearray | memoryview, *, what: str = "object") -> bytes:
    """Verify an envelope and return its payload.

    Args:
        blob: The bytes as stored.
        what: A description used in error messages (``"checkpoint 7 of 'run-1'"``).

    Raises:
        CorruptObjectError: Wrong magic, truncated, bad checksum or bad compression.
        UnsupportedFormatError: A format version or codec this durably does not know.
    """
    view = memoryview(blob)
    if len(view) < HEADER_SIZE:
        raise CorruptObjectError(
            f"{what} is truncated: {len(view)} bytes, shorter than the {HEADER_SIZE}-byte header"
        )
    magic, version, codec, _reserved, raw_len, stored_len = _HEAD.unpack_from(view)
    if magic != MAGIC:
        raise CorruptObjectError(f"{what} is not a durably object (bad magic {bytes(magic)!r})")
    if version != FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{what} has format version {version}; this durably reads version "
            f"{FORMAT_VERSION}. Upgrade durably to read it."
        )
    if codec not in CODEC_NAMES:
        raise UnsupportedFormatError(f"{what} uses unknown codec {codec}; upgrade durably")
    if len(view) - HEADER_SIZE != stored_len:
        raise CorruptObjectError(
            f"{what} is truncated or has trailing data: header says {stored_len} payload "
            f"bytes, found {len(view) - HEADER_SIZE}"
        )
    digest = hashlib.blake2b(view[: _HEAD.size], digest_size=16)
    digest.update(view[HEADER_SIZE:])
    if digest.digest() != view[_HEAD.size : HEADER_SIZE]:
        raise CorruptObjectError(f"{what} failed its checksum: the stored bytes were altered")
    stored = view[HEADER_SIZE:]
    if codec == CODEC_IDENTITY:
        return bytes(stored)
    try:
        payload = _zstd().ZstdDecompressor().decompress(stored, max_output_size=raw_len)
    except Exception as exc:  # zstandard.ZstdError and friends
        raise CorruptObjectError(f"{what} could not be decompressed: {exc}") from exc
    if len(payload) != raw_len:
        raise CorruptObjectError(f"{what} decompressed to {len(payload)} bytes, not {raw_len}")
    return bytes(payload)


def describe(blob: bytes) -> dict[str, Any]:
    """Return the header fields of an envelope (for tools and tests); no verification."""
    if len(blob) < HEADER_SIZE:
        raise CorruptObjectError("object is shorter than the envelope header")
    magic, version, codec, _r, raw_len, stored_len = _HEAD.unpack_from(blob)
    return {
        "magic": magic,
        "format_version": version,
        "codec": CODEC_NAMES.get(codec, f"unknown({codec})"),
        "raw_length": raw_len,
        "stored_length": stored_len,
    }
