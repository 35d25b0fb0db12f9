"""The metadata keys the core stores with every checkpoint (beside :mod:`durably.storage`'s
``META_STATUS`` and ``META_BASE``): what kind of checkpoint it is, which agent wrote it,
the owner and epoch that wrote it, and the link to the checkpoint before it."""

from __future__ import annotations

__all__ = [
    "CHAIN_START",
    "FORMAT",
    "META_AGENT",
    "META_AGENTS",
    "META_EPOCH",
    "META_KIND",
    "META_OWNER",
    "META_PREV",
    "META_REASON",
    "PRUNE_EVERY",
]

FORMAT = 1
META_KIND = "durably.kind"
META_AGENT = "durably.agent"
META_AGENTS = "durably.agents"
META_OWNER = "durably.owner"
META_EPOCH = "durably.epoch"
META_PREV = "durably.prev"
"""Metadata key: ``sha256:<hex>`` of the previous checkpoint's stored document (a hash
chain: a missing, replaced or reordered checkpoint breaks it); ``start`` on checkpoint 0."""
CHAIN_START = "start"
META_REASON = "durably.reason"
"""Metadata key: why an execution was marked ``failed`` by a worker (shortened)."""
PRUNE_EVERY = 8
"""With ``keep_last``, prune every ``max(keep_last, PRUNE_EVERY)`` checkpoints, not at
every write (a prune lists the execution's checkpoints)."""
