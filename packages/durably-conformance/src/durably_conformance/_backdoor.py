"""The :class:`Backdoor` protocol: raw access to a store, bypassing its provider."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Backdoor"]


@runtime_checkable
class Backdoor(Protocol):
    """Reads and writes a store's raw objects without going through the provider.

    A provider's test module implements it (usually in a few lines: open the file,
    call the bucket, run the SQL) and returns one from its ``backdoor`` fixture. The
    suite uses it to damage stored objects the way disks, networks and operators do,
    and to see what the provider really wrote. Every method is async and may assume
    the store is not being written to while it runs.

    "Stored bytes" are what the provider received from the core (the checksummed
    envelope), without any framing the provider adds around them.
    """

    async def read_checkpoint(self, execution_id: str, seq: int) -> bytes:
        """Return the stored bytes of an existing checkpoint."""
        ...

    async def write_checkpoint(self, execution_id: str, seq: int, raw: bytes) -> None:
        """Replace the stored bytes of an EXISTING checkpoint with ``raw``, in place.

        Keep whatever the provider needs to find the object and hand ``raw`` to the
        core as if it had been stored normally: its key, its row, its metadata, and
        for a provider that frames records, a freshly computed frame (length, frame
        checksum). The point is a corruption that the provider's own framing cannot
        notice, so that only the core's envelope checksum stands between it and the
        caller.
        """
        ...

    async def corrupt_checkpoint(self, execution_id: str, seq: int) -> None:
        """Damage an existing checkpoint the way bit rot would.

        Flip (XOR with 0xFF) one byte in the middle of the stored object, with no
        re-framing. The checkpoints the suite damages are several KiB long, so the
        middle byte is payload, not header.
        """
        ...

    async def truncate_checkpoint(self, execution_id: str, seq: int) -> None:
        """Cut an existing checkpoint short (keep its first half), as a torn write would."""
        ...

    async def corrupt_blob(self, execution_id: str, digest: str) -> None:
        """Flip one byte in the middle of an existing blob, with no re-framing."""
        ...

    async def locations(self) -> list[str]:
        """Every raw location the store holds now, in any order.

        A location is whatever names one stored thing: a file path relative to the
        store's root, an object key, ``"table/primary key"`` for a row. Include
        everything the provider wrote for executions (checkpoints, blobs, leases,
        indexes, markers); an empty, never-used store has none. Directories that
        merely exist may be left out.
        """
        ...
