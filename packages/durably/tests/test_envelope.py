"""The envelope: every stored object carries format version, codec and checksum."""

from __future__ import annotations

import os

import pytest

from durably._envelope import HEADER_SIZE, Envelope, describe, unwrap
from durably.errors import CorruptObjectError, UnsupportedFormatError


@pytest.mark.parametrize(
    "payload",
    [b"", b"x", bytes(range(256)), b"a" * 5000, os.urandom(200_000)],
    ids=["empty", "one", "all-bytes", "compressible", "random"],
)
def test_round_trip_is_exact(payload: bytes) -> None:
    assert unwrap(Envelope().wrap(payload)) == payload


def test_small_payloads_are_stored_raw_and_large_compressible_ones_with_zstd() -> None:
    env = Envelope(compression_threshold=1024)
    assert describe(env.wrap(b"a" * 100))["codec"] == "identity"
    wrapped = env.wrap(b"a" * 5000)
    assert describe(wrapped)["codec"] == "zstd"
    assert wrapped[HEADER_SIZE : HEADER_SIZE + 4] == b"\x28\xb5\x2f\xfd"  # zstd frame magic
    assert len(wrapped) < 200


def test_incompressible_payload_is_stored_raw() -> None:
    data = os.urandom(10_000)
    assert describe(Envelope().wrap(data))["codec"] == "identity"


def test_compression_can_be_disabled() -> None:
    assert describe(Envelope(compression_level=0).wrap(b"a" * 5000))["codec"] == "identity"


@pytest.mark.parametrize("position", [0, 5, 10, 30, HEADER_SIZE, -1])
def test_any_flipped_byte_is_detected(position: int) -> None:
    wrapped = bytearray(Envelope().wrap(b"hello world" * 300))
    wrapped[position] ^= 0x40
    with pytest.raises((CorruptObjectError, UnsupportedFormatError)):
        unwrap(bytes(wrapped))


@pytest.mark.parametrize("keep", [0, 3, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 10])
def test_truncation_is_detected(keep: int) -> None:
    wrapped = Envelope().wrap(b"hello world" * 300)
    with pytest.raises(CorruptObjectError, match=r"truncated|header"):
        unwrap(wrapped[:keep])


def test_unknown_format_version_is_refused_with_upgrade_hint() -> None:
    wrapped = bytearray(Envelope().wrap(b"payload"))
    wrapped[4] = 99
    with pytest.raises(UnsupportedFormatError, match=r"version 99.*[Uu]pgrade"):
        unwrap(bytes(wrapped), what="checkpoint 3")


def test_error_messages_name_the_object() -> None:
    with pytest.raises(CorruptObjectError, match="checkpoint 7 of 'run'"):
        unwrap(b"garbage" * 10, what="checkpoint 7 of 'run'")
