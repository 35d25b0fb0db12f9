"""The numbered clauses of ``docs/spec/conformance.md``, as data.

Tests cite a clause with ``@pytest.mark.durably_clause(n)`` and name it in their
name (``test_c07_...``) so that ``-k c07`` selects one clause.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CLAUSES", "Clause"]


@dataclass(frozen=True, slots=True)
class Clause:
    """One clause of the conformance specification."""

    number: int
    title: str
    capability: str | None = None
    """The :class:`durably.storage.Capability` value the whole clause needs, if any."""

    @property
    def tag(self) -> str:
        """``"C7"``."""
        return f"C{self.number}"


CLAUSES: dict[int, Clause] = {
    clause.number: clause
    for clause in (
        Clause(1, "Load returns what was saved"),
        Clause(2, "Save is durable and immediately visible"),
        Clause(3, "The latest checkpoint is the one with the highest seq"),
        Clause(4, "Listing checkpoints: ascending seq, paged"),
        Clause(5, 'Write mode "create"'),
        Clause(6, 'Write mode "overwrite"'),
        Clause(7, "Write mode ExpectedVersion"),
        Clause(8, "Concurrent conditional writers: exactly one wins"),
        Clause(9, "Fencing: a superseded lease writes nothing"),
        Clause(10, "Deleting a checkpoint"),
        Clause(11, "Pruning never breaks resume"),
        Clause(12, "Hostile execution ids are rejected"),
        Clause(13, "Listing executions: ascending id, paged"),
        Clause(14, "Corruption is detected, never returned"),
        Clause(15, "Claiming a lease"),
        Clause(16, "Renewing a lease"),
        Clause(17, "Blobs: content-addressed, idempotent, verified"),
        Clause(18, "Executions are isolated from each other"),
        Clause(19, "Metadata round-trips exactly"),
        Clause(20, "Bytes round-trip exactly, whatever their size"),
        Clause(21, "Persistence across provider instances", "persistent"),
        Clause(22, "Sharing between live provider instances", "shared"),
        Clause(23, "Releasing and reading leases"),
        Clause(24, "Deleting an execution removes everything"),
        Clause(25, "Listing and deleting blobs"),
        Clause(26, "Provider class and lifecycle"),
        Clause(27, "Concurrent use of one instance"),
        Clause(28, "Construction from a URL and registration"),
        Clause(29, "Taking over a dead owner's lease", "takeover"),
        Clause(30, "Owner locks", "owner_lock"),
    )
}
