"""A worker hands the lease it claimed (``CLAIM_NEXT``) to the attempt's child, whose
claim takes it over. An attempt that ends before its claim used the lease gives it back:
otherwise nobody could claim the execution until the lease expired."""

from __future__ import annotations

import io
from dataclasses import asdict
from pathlib import Path

import pytest

from durably import open_store
from durably._worker._children import _child_run
from durably.config import DurabilityConfig
from durably.storage import Lease


@pytest.mark.asyncio
async def test_an_attempt_that_never_claims_gives_the_handed_off_lease_back(
    tmp_path: Path,
) -> None:
    config = DurabilityConfig(store=f"file://{tmp_path / 'store'}")
    async with open_store(config=config) as provider:
        # A worker claimed an execution that was deleted (or is damaged) meanwhile: the
        # attempt fails while loading it, before any claim of its own.
        lease = await provider.claim("gone", "worker-host:1:ab", ttl=300.0)
    job = {
        "execution_id": "gone",
        "config": {**asdict(config), "sources": list(config.sources)},
        "handoff": [lease.owner, lease.epoch, lease.expires_at],
    }
    outcome = await _child_run(job, io.BytesIO())
    assert outcome.kind != "completed"
    async with open_store(config=config) as provider:
        current = await provider.get_lease("gone")
        assert isinstance(current, Lease)
        assert current.released, f"the handed-off lease is still held: {current}"
        again = await provider.claim("gone", "someone-else", ttl=10.0)
        assert again.epoch > lease.epoch
