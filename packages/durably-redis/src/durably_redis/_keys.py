"""The key layout of a store (shared by the provider and the test backdoor).

With the default prefix ``durably``::

    durably:counter                    string  versions and epochs (INCR; never reset)
    durably:executions                 zset    execution ids, all scores 0 (lexical order)
    durably:open                       zset    open executions (OPEN_INDEX), scores 0
    durably:open-ready                 string  the open index is complete (set once)
    durably:x:<id>:seqs                zset    the execution's seqs as 19-digit strings
    durably:x:<id>:c:<seq:019d>        hash    d=stored bytes, v=version, t=created_at, m=metadata
    durably:x:<id>:blobs               zset    the execution's blob digests
    durably:x:<id>:b:<digest>          hash    d=stored bytes, t=created_at
    durably:x:<id>:lease               hash    owner, epoch, expires, released

Execution ids cannot contain ``:`` (``[A-Za-z0-9._-]``), so ``x:run-1:`` and
``x:run-10:`` never overlap, and they contain no glob character, so
``<prefix>:x:<id>:*`` matches exactly one execution's keys.
"""

from __future__ import annotations

import re

SEQ_WIDTH = 19
"""Digits of a sequence number in keys and in the seqs index: 2**63 - 1 has 19, so
zero-padded seqs sort lexically in numeric order (sorted-set scores, doubles, cannot
hold every 63-bit integer exactly)."""
MAX_SEQ = 2**63 - 1
MAX_PAGE = 1000
"""Listings return at most this many items per page."""
DELETE_BATCH = 1000
"""Checkpoints deleted per script call (prune, delete_execution): each call is atomic
and short, so other clients are not held up by a huge execution."""

_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


def glob_escape(text: str) -> str:
    """``text`` with the glob characters of SCAN MATCH patterns escaped."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def seq_member(seq: int) -> str:
    """The sorted-set member (and key suffix) of a sequence number."""
    return f"{seq:0{SEQ_WIDTH}d}"


class Keys:
    """Key names of one store (one key prefix)."""

    __slots__ = ("counter", "executions", "open", "open_ready", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.counter = f"{prefix}:counter"
        self.executions = f"{prefix}:executions"
        self.open = f"{prefix}:open"
        """The open executions: those whose latest checkpoint is not finished (C31)."""
        self.open_ready = f"{prefix}:open-ready"
        """Set once the open index is complete (a store from before it is indexed once)."""

    def base(self, execution_id: str) -> str:
        """The common start of every key of one execution (ends with ``:``)."""
        return f"{self.prefix}:x:{execution_id}:"

    def seqs(self, execution_id: str) -> str:
        return f"{self.prefix}:x:{execution_id}:seqs"

    def checkpoint(self, execution_id: str, seq: int) -> str:
        return f"{self.prefix}:x:{execution_id}:c:{seq_member(seq)}"

    def blobs(self, execution_id: str) -> str:
        return f"{self.prefix}:x:{execution_id}:blobs"

    def blob(self, execution_id: str, digest: str) -> str:
        return f"{self.prefix}:x:{execution_id}:b:{digest}"

    def lease(self, execution_id: str) -> str:
        return f"{self.prefix}:x:{execution_id}:lease"

    def pattern(self) -> str:
        """A SCAN MATCH pattern for every key of the store."""
        return f"{glob_escape(self.prefix)}:*"
