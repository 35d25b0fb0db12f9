"""The checkpoint documents (see :mod:`durably._journal` for the format): snapshots,
deltas and final records, their format version, and what an agent's snapshot and later
deltas say together (:class:`RestoredAgent`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from durably._journal._records import (
    Entry,
    LLMAppend,
    LLMEntry,
    LLMRecord,
    Message,
    TranscriptItem,
    usage_tokens,
)
from durably.errors import UnsupportedFormatError

__all__ = [
    "FIRST_AGENT_ID",
    "FORMAT",
    "DeltaDoc",
    "FinalDoc",
    "RestoredAgent",
    "SnapshotDoc",
    "doc_type",
    "llm_progress",
    "upgrade",
]

FIRST_AGENT_ID = 1000
"""The id of an execution's first agent (``next_agent_id`` before any was created); the
next ones count up from it."""
FORMAT = 3
"""The newest format of the documents this durably reads and writes (see
:mod:`durably._journal`): a snapshot inside a stepped loop is format 2 (3 if the loop
goes through ``enumerate``), every other document format 1."""
LOOP_FORMAT = 2
"""The format that added :attr:`Frame.loop <durably._journal.Frame.loop>`."""
ENUMERATE_FORMAT = 3
"""The format that added :attr:`LoopPosition.start <durably._journal.LoopPosition.start>`."""


def upgrade(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """``doc`` in the current format (formats 2 and 3 only add optional keys to
    format 1).

    Raises:
        UnsupportedFormatError: The document was written in a newer format.
    """
    version = doc.get("v", 1)
    if version not in (1, LOOP_FORMAT, ENUMERATE_FORMAT):
        raise UnsupportedFormatError(
            f"checkpoint document format {version!r} is not supported (this durably reads "
            f"formats 1 to {FORMAT}); upgrade durably"
        )
    return doc


def doc_type(doc: Mapping[str, Any]) -> str:
    """``"snapshot"``, ``"delta"`` or ``"final"``."""
    return str(upgrade(doc).get("type", ""))


# ---------------------------------------------------------------------- documents


@dataclass
class SnapshotDoc:
    """One agent at a quiet point (see the module docstring)."""

    agent: str
    agent_class: str
    index: int
    phase: str
    frame: dict[str, Any] | None
    """The bottom frame's :meth:`Frame.to_doc` (its namespace is the ``locals`` root)."""
    open_llm: list[LLMEntry]
    inbox: list[Message]
    consumed: list[str]
    transcript: list[TranscriptItem]
    llm_log: list[LLMRecord]
    llm_counts: dict[str, int]
    result: Any
    returned: bool
    inputs: int
    serving: Message | None = None

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": "snapshot",
            "agent": self.agent,
            "class": self.agent_class,
            "index": self.index,
            "phase": self.phase,
            "frame": self.frame,
            "open_llm": [entry.to_doc() for entry in self.open_llm],
            "inbox": [m.to_doc() for m in self.inbox],
            "consumed": self.consumed,
            "transcript": self.transcript,
            "llm_log": self.llm_log,
            "llm_counts": self.llm_counts,
            "result": self.result,
            "returned": self.returned,
            "inputs": self.inputs,
        }
        if self.serving is not None:
            doc["serving"] = self.serving.to_doc()
        loop = None if self.frame is None else self.frame.get("loop")
        if loop is not None:
            # An older durably would resume the loop from its start (format 2), or over
            # the sequence's items instead of their enumeration (format 3).
            doc["v"] = ENUMERATE_FORMAT if "start" in loop else LOOP_FORMAT
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> SnapshotDoc:
        doc = upgrade(doc)
        serving = doc.get("serving")
        return cls(
            agent=doc["agent"],
            agent_class=doc.get("class", ""),
            index=doc["index"],
            phase=doc["phase"],
            frame=doc.get("frame"),
            open_llm=[LLMEntry.from_doc(d) for d in doc.get("open_llm", [])],
            inbox=[Message.from_doc(d) for d in doc.get("inbox", [])],
            consumed=list(doc.get("consumed", [])),
            transcript=list(doc.get("transcript", [])),
            llm_log=list(doc.get("llm_log", [])),
            llm_counts=dict(doc.get("llm_counts", {})),
            result=doc.get("result"),
            returned=doc.get("returned", False),
            inputs=doc.get("inputs", 0),
            serving=Message.from_doc(serving) if serving is not None else None,
        )


@dataclass
class DeltaDoc:
    """What one agent did since its last checkpoint (see the module docstring)."""

    agent: str
    entries: list[Entry]
    llm: list[LLMAppend]
    log: list[LLMRecord] = field(default_factory=list)

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": "delta",
            "agent": self.agent,
            "entries": [e.to_doc() for e in self.entries],
            "llm": [a.to_doc() for a in self.llm],
        }
        if self.log:
            doc["log"] = self.log
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], seq: int | None = None) -> DeltaDoc:
        doc = upgrade(doc)
        return cls(
            doc.get("agent", ""),
            [Entry.from_doc(d, seq) for d in doc.get("entries", [])],
            [LLMAppend.from_doc(d) for d in doc.get("llm", [])],
            list(doc.get("log", [])),
        )


@dataclass
class FinalDoc:
    """The execution ended."""

    status: str
    result: Any

    def to_doc(self) -> dict[str, Any]:
        return {"type": "final", "status": self.status, "result": self.result}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> FinalDoc:
        doc = upgrade(doc)
        return cls(doc["status"], doc.get("result"))


def llm_progress(doc: Mapping[str, Any]) -> list[tuple[int, int, bool]]:
    """``(op index, checkpoints durable when it started, done)`` of each LLM call a
    snapshot or delta document records text of (others: none)."""
    doc = upgrade(doc)
    kind = doc.get("type")
    if kind == "snapshot":
        return [(e.index, e.after, e.done) for e in SnapshotDoc.from_doc(doc).open_llm]
    if kind == "delta":
        return [(a.index, a.after or 0, a.done) for a in DeltaDoc.from_doc(doc).llm]
    return []


class RestoredAgent:
    """What an agent's last snapshot plus its later deltas say (what replay uses).

    Attributes:
        snapshot: The snapshot.
        seq: Its checkpoint.
        entries: Journaled operations after it, by op index.
        llm: LLM responses after it (and the one open in it), by op index.
        logs: The records of LLM calls that ended after it, by op index.
    """

    def __init__(self, snapshot: SnapshotDoc, seq: int) -> None:
        self.snapshot = snapshot
        self.seq = seq
        self.entries: dict[int, Entry] = {}
        self.llm: dict[int, LLMEntry] = {}
        self.logs: dict[int, LLMRecord] = {}
        for entry in snapshot.open_llm:
            entry.seq = seq
            self.llm[entry.index] = entry

    def add_delta(self, delta: DeltaDoc, seq: int) -> None:
        """Add a delta the agent wrote after the snapshot (in order)."""
        for entry in delta.entries:
            entry.seq = seq
            self.entries[entry.index] = entry
        for append in delta.llm:
            known = self.llm.get(append.index)
            if known is None:
                known = LLMEntry(
                    append.index,
                    append.key,
                    append.playbook,
                    append.prompt or [],
                    seq=seq,
                    after=append.after or 0,
                )
                self.llm[append.index] = known
            known.append(append.text)
            known.done = known.done or append.done
            if append.usage is not None:
                known.usage = append.usage
        for item in delta.log:
            self.logs[item["index"]] = item

    def budget_used(self) -> tuple[int, int]:
        """``(LLM calls, tokens)`` the journal holds for this agent: what a resumed
        execution has already spent of its ``[llm]`` budgets."""
        snap = self.snapshot
        before = {entry.index for entry in snap.open_llm}
        calls = sum(snap.llm_counts.values()) + len(set(self.llm) - before)
        records = [*snap.llm_log, *self.logs.values()]
        logged = {item["index"] for item in records if item.get("id") == snap.agent}
        tokens = sum(usage_tokens(item.get("usage")) for item in records)
        # A response whose end the provider reported durably, before its call record
        # was written (that goes with a later checkpoint).
        tokens += sum(
            usage_tokens(entry.usage) for index, entry in self.llm.items() if index not in logged
        )
        return calls, tokens
