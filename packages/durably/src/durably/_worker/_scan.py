"""Finding work by scanning: the executions that are unfinished and that no live owner holds.

Providers that declare :attr:`~durably.storage.Capability.OPEN_INDEX` list only their open
executions (stale entries of finished ones are dropped with ``forget_if_finished``); with
the others every execution is listed, and one seen finished at its current
``updated_at`` is not read again (:class:`ScanState`). Providers that hand out claims
(``CLAIM_NEXT``) are not scanned: see :mod:`durably._worker._supervisor`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from durably._liveness import inspect_owner
from durably.errors import (
    CorruptObjectError,
    DurablyError,
    NotFoundError,
    UnsupportedFormatError,
)
from durably.storage import META_STATUS, Capability, CheckpointProvider

__all__ = ["DAMAGE", "FINISHED", "ScanState", "find_resumable"]

log = logging.getLogger("durably.worker")

DAMAGE = (CorruptObjectError, UnsupportedFormatError)
"""What makes an execution *damaged*: it is reported and skipped (no attempt is counted;
see :data:`durably.worker.DAMAGED_RECHECK`)."""
FINISHED = ("completed", "failed")


@dataclass
class ScanState:
    """What a scanning worker remembers between polls.

    Attributes:
        finished: Executions seen finished (or damaged), by the ``updated_at`` they had
            then: not read again until they change.
        damaged: Damaged executions, with the error (reported once).
    """

    finished: dict[str, float] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)


async def find_resumable(
    provider: CheckpointProvider,
    *,
    limit: int = 100,
    state: ScanState | None = None,
    on_damaged: Callable[[str, BaseException], None] | None = None,
    skip: Callable[[str], bool] | None = None,
) -> list[str]:
    """Executions that are not finished and that no live owner holds a lease on (a scan).

    With :attr:`~durably.storage.Capability.OPEN_INDEX` only the open executions are
    listed (and stale entries dropped); otherwise every execution is listed.

    Args:
        provider: The store.
        limit: Return at most this many.
        state: Remembered between calls: finished and damaged executions are then read
            once, not at every call (only while their ``updated_at`` stays the same).
        on_damaged: Called once per damaged execution (its checkpoints cannot be read);
            damaged executions are skipped, never returned and never raised.
        skip: Executions the caller does not want (not read, not returned).
    """
    state = state if state is not None else ScanState()
    now = time.time()
    found: list[str] = []
    indexed = Capability.OPEN_INDEX in provider.capabilities
    source = provider.iter_open_executions() if indexed else provider.iter_executions()
    async for execution in source:
        execution_id = execution.execution_id
        if skip is not None and skip(execution_id):
            continue
        stamp = execution.updated_at
        if stamp is not None and state.finished.get(execution_id) == stamp:
            continue
        try:
            latest = await provider.load_latest_checkpoint(execution_id)
            if latest is None:
                if indexed:
                    await _forget(provider, execution_id)
                continue
            if latest.metadata.get(META_STATUS) in FINISHED:
                if indexed:
                    await _forget(provider, execution_id)
                elif stamp is not None:
                    state.finished[execution_id] = stamp
                continue
            lease = await provider.get_lease(execution_id)
            if lease is not None and lease.expires_at > now and not lease.released:
                # A live lease: still resumable at once if its owner is provably dead.
                owner = await inspect_owner(provider, execution_id, lease=lease)
                if owner.liveness != "dead" or Capability.TAKEOVER not in provider.capabilities:
                    continue
        except DAMAGE as exc:
            if execution_id not in state.damaged:
                state.damaged[execution_id] = str(exc)
                if on_damaged is not None:
                    on_damaged(execution_id, exc)
            if stamp is not None:
                state.finished[execution_id] = stamp
            continue
        except NotFoundError:
            continue  # deleted while we looked
        found.append(execution_id)
        if len(found) >= limit:
            break
    return found


async def _forget(provider: CheckpointProvider, execution_id: str) -> None:
    """Drop a stale open-index entry; a failure only means it is looked at again."""
    try:
        await provider.forget_if_finished(execution_id)
    except DurablyError as exc:
        log.debug("could not drop the stale open-index entry of %s: %s", execution_id, exc)
