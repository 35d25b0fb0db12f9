"""The conformance suite, run against the memory provider.

This is the boilerplate of docs/guides/writing-a-provider.md: subclass ProviderSuite,
give it a ``make_provider`` fixture (a callable building new instances on one store)
and a ``backdoor`` fixture (raw access to that store).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from durably_conformance import Backdoor, ProviderSuite
from durably_memory import MemoryProvider, MemoryStore, StoredObject


class MemoryBackdoor:
    """Raw access to a MemoryStore: the dictionaries behind the provider."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def _checkpoint(self, execution_id: str, seq: int) -> StoredObject:
        return self.store.checkpoints[execution_id][seq]

    def _replace(self, execution_id: str, seq: int, raw: bytes) -> None:
        found = self._checkpoint(execution_id, seq)
        self.store.checkpoints[execution_id][seq] = dataclasses.replace(found, stored=raw)

    async def read_checkpoint(self, execution_id: str, seq: int) -> bytes:
        return self._checkpoint(execution_id, seq).stored

    async def write_checkpoint(self, execution_id: str, seq: int, raw: bytes) -> None:
        self._replace(execution_id, seq, raw)

    async def corrupt_checkpoint(self, execution_id: str, seq: int) -> None:
        self._replace(execution_id, seq, _flip_middle(self._checkpoint(execution_id, seq).stored))

    async def truncate_checkpoint(self, execution_id: str, seq: int) -> None:
        stored = self._checkpoint(execution_id, seq).stored
        self._replace(execution_id, seq, stored[: len(stored) // 2])

    async def corrupt_blob(self, execution_id: str, digest: str) -> None:
        blobs = self.store.blobs[execution_id]
        damaged = _flip_middle(blobs[digest].stored)
        blobs[digest] = dataclasses.replace(blobs[digest], stored=damaged)

    async def locations(self) -> list[str]:
        return [
            *(
                f"checkpoints/{e}/{seq}"
                for e, seqs in self.store.checkpoints.items()
                for seq in seqs
            ),
            *(f"blobs/{e}/{digest}" for e, blobs in self.store.blobs.items() for digest in blobs),
            *(f"leases/{e}" for e in self.store.leases),
            *(f"open/{e}" for e in self.store.open),
        ]

    async def add_open_entry(self, execution_id: str) -> None:
        """Leave an open-index entry, as a crash before the index update would (C31)."""
        self.store.open.add(execution_id)


def _flip_middle(stored: bytes) -> bytes:
    middle = len(stored) // 2
    return stored[:middle] + bytes([stored[middle] ^ 0xFF]) + stored[middle + 1 :]


class TestMemoryProvider(ProviderSuite):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()

    @pytest.fixture
    def make_provider(self, store: MemoryStore) -> Callable[[], MemoryProvider]:
        return lambda: MemoryProvider(store)

    @pytest.fixture
    def backdoor(self, store: MemoryStore) -> Backdoor:
        return MemoryBackdoor(store)

    @pytest.fixture
    def store_url(self) -> str:
        return "memory://conformance"
