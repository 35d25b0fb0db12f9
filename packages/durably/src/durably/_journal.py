"""The checkpoint document format: the one module that knows its keys.

An execution's checkpoints are documents (encoded by :mod:`durably._codec`, wrapped by
:mod:`durably._envelope`). Each one is written by one agent, or by the execution at its
end, and is one of three types:

* **snapshot** (:class:`SnapshotDoc`): everything about one agent at a quiet point -- its
  op index, phase, bottom frame (:class:`Frame`, whose namespace is stored beside the
  document as the ``locals`` root, the agent's state as the ``state`` root), the LLM
  response its bottom frame is reading (:class:`LLMEntry`), its inbox
  (:class:`Message`), the messages it consumed, its transcript and LLM-call records, the
  request it serves, and how many user inputs were consumed.
* **delta** (:class:`DeltaDoc`): what one agent did since its last checkpoint -- the
  operations it completed (:class:`Entry`), the LLM text that arrived
  (:class:`LLMAppend`), the LLM calls that ended (:class:`LLMRecord`).
* **final** (:class:`FinalDoc`): the execution ended ``completed`` or ``failed``.

The checkpoint manager adds the execution-wide keys to every document (``manifest``:
each agent's latest snapshot; ``next_agent_id``; ``header`` on snapshots and finals).

Keys are short (they are written at every ``await``). Readers take what they know and
default what is absent, so that adding a key never breaks an older checkpoint.

**Versions and migration.** Documents carry no version of their own while their format
is :data:`FORMAT` 1; a later format writes ``"v": N``. A reader accepts documents without
``"v"`` (format 1) and refuses a newer one with :class:`~durably.errors.UnsupportedFormatError`.
The rule for a change: a new optional key keeps the format (readers default it); a key
whose meaning changes, or a required new key, bumps :data:`FORMAT` and adds a migration
here, in :func:`upgrade`, from every older format to the new one -- so that checkpoints
written by an older durably can always be resumed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any, TypedDict

from durably.errors import UnsupportedFormatError

__all__ = [
    "FORMAT",
    "DeltaDoc",
    "Entry",
    "FinalDoc",
    "Frame",
    "LLMAppend",
    "LLMEntry",
    "LLMRecord",
    "Message",
    "RestoredAgent",
    "SnapshotDoc",
    "TranscriptItem",
    "digest",
    "doc_type",
    "llm_progress",
    "stack_label",
    "upgrade",
    "usage_tokens",
    "user_input",
    "user_input_number",
]

FORMAT = 1
"""The format of the documents this durably writes (see the module docstring)."""


def upgrade(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """``doc`` in the current format.

    Raises:
        UnsupportedFormatError: The document was written in a newer format.
    """
    version = doc.get("v", 1)
    if version != FORMAT:
        raise UnsupportedFormatError(
            f"checkpoint document format {version!r} is not supported (this durably reads "
            f"format {FORMAT}); upgrade durably"
        )
    return doc


def doc_type(doc: Mapping[str, Any]) -> str:
    """``"snapshot"``, ``"delta"`` or ``"final"``."""
    return str(upgrade(doc).get("type", ""))


def digest(value: Any) -> str:
    """A short, stable digest of an operation's arguments (for divergence checks).

    It must not change when a value goes through a checkpoint: a set is digested by its
    sorted elements, not by its iteration order (which a restored set of strings need
    not keep).
    """
    text = json.dumps(value, sort_keys=True, default=_canonical, ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return [
            type(value).__name__,
            sorted(
                json.dumps(v, sort_keys=True, default=_canonical, ensure_ascii=False) for v in value
            ),
        ]
    return repr(value)


def usage_tokens(usage: Mapping[str, Any] | None) -> int:
    """Prompt plus completion tokens of a journaled usage record (0 if unreported)."""
    if not usage:
        return 0
    return int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)


def stack_label(playbook: str, step: str | None) -> str:
    """How a frame shows in a call stack: ``Main:03`` for step ``Main:03:YLD``."""
    if step:
        parts = step.split(":")
        return ":".join(parts[:2]) if len(parts) >= 2 else step
    return playbook


# ---------------------------------------------------------------------- records


def user_input(number: int, text: str) -> dict[str, Any]:
    """The journaled result of a ``Yield("user")``: the input's number and its text."""
    return {"n": number, "text": text}


def user_input_number(result: Any) -> int | None:
    """The input number a journaled ``Yield("user")`` result consumed (None: not one)."""
    if isinstance(result, dict) and isinstance(result.get("n"), int):
        return int(result["n"])
    return None


class TranscriptItem(TypedDict):
    """One line an agent said to the user (in snapshots and in a ``say``'s effects)."""

    agent: str
    id: str
    text: str
    index: int
    """The agent's op index of the ``Say``."""
    after: int
    """How many checkpoints were durable when it was said (orders agents' lines)."""


class _LLMRecordBase(TypedDict):
    agent: str
    id: str
    playbook: str
    index: int
    after: int
    prompt: list[dict[str, str]]
    response: str


class LLMRecord(_LLMRecordBase, total=False):
    """One LLM call that ended (for ``show``): in snapshots and deltas."""

    usage: dict[str, Any]
    """What the provider reported: model, tokens, finish reason, latency, continuations."""


# ---------------------------------------------------------------------- journal


@dataclass
class Entry:
    """One journaled operation of an agent.

    Attributes:
        index: The agent's op index.
        kind: The operation (``"say"``, ``"yield"``, ``"tool:Name"``, ...).
        key: The digest of its arguments.
        result: What it returned.
        error: ``[exception type, message]`` of a journaled failure (tools).
        seq: The checkpoint it was written in (not stored).
        span: How many op indexes it covers (a tool covers the operations it awaited).
        effects: What it did, as data: ``transcript`` (:class:`TranscriptItem`),
            ``messages`` (:class:`Message` documents), ``state`` / ``unset``.
    """

    index: int
    kind: str
    key: str
    result: Any = None
    error: list[str] | None = None
    seq: int | None = None
    span: int = 1
    effects: dict[str, Any] | None = None

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"i": self.index, "k": self.kind, "d": self.key, "r": self.result}
        if self.error is not None:
            doc["e"] = self.error
        if self.span != 1:
            doc["n"] = self.span
        if self.effects:
            doc["x"] = self.effects
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], seq: int | None) -> Entry:
        return cls(
            doc["i"],
            doc["k"],
            doc["d"],
            doc.get("r"),
            doc.get("e"),
            seq,
            doc.get("n", 1),
            doc.get("x"),
        )

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The message documents this operation sent."""
        return list((self.effects or {}).get("messages", []))

    @property
    def transcript(self) -> list[TranscriptItem]:
        """The lines this operation said to the user."""
        return list((self.effects or {}).get("transcript", []))


@dataclass
class LLMEntry:
    """A (possibly still streaming) LLM response, journaled as it arrives."""

    index: int
    key: str
    playbook: str
    prompt: list[dict[str, str]]
    initial: InitVar[str] = ""
    done: bool = False
    seq: int | None = None
    after: int = 0
    """How many checkpoints of the execution were durable when the call started: orders
    LLM calls of different agents the same way in a resumed run as in the original."""
    usage: dict[str, Any] | None = None
    """What the provider reported when it finished the response (model, tokens, latency)."""
    draining: bool = field(default=False, repr=False)
    """The code of the response ended: the rest is read only from a request in flight."""
    _parts: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self, initial: str) -> None:
        if initial:
            self._parts.append(initial)

    @property
    def text(self) -> str:
        """The response received so far (chunks are joined lazily: appending stays O(1))."""
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def append(self, chunk: str) -> None:
        self._parts.append(chunk)

    def to_doc(self) -> dict[str, Any]:
        doc = {
            "i": self.index,
            "d": self.key,
            "p": self.playbook,
            "m": self.prompt,
            "t": self.text,
            "f": self.done,
            "s": self.after,
        }
        if self.usage is not None:
            doc["u"] = self.usage
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> LLMEntry:
        return cls(
            doc["i"],
            doc["d"],
            doc["p"],
            doc["m"],
            doc.get("t", ""),
            doc.get("f", False),
            after=doc.get("s", 0),
            usage=doc.get("u"),
        )

    def append_doc(self, text: str) -> LLMAppend:
        """The delta record of ``text`` having arrived (the prompt only in the first one)."""
        first = self.seq is None
        return LLMAppend(
            self.index,
            self.key,
            self.playbook,
            text,
            self.done,
            self.usage if self.done else None,
            self.prompt if first else None,
            self.after if first else None,
        )


@dataclass
class LLMAppend:
    """LLM text that arrived since an agent's last checkpoint (one per call, in a delta).

    Attributes:
        index: The call's op index.
        key: The call's prompt digest.
        playbook: The playbook that made the call.
        text: The text that arrived.
        done: The response is complete.
        usage: The provider's report, once done.
        prompt: The prompt, in the first record of a call only.
        after: The checkpoints durable when the call started (first record only).
    """

    index: int
    key: str
    playbook: str
    text: str
    done: bool
    usage: dict[str, Any] | None = None
    prompt: list[dict[str, str]] | None = None
    after: int | None = None

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "i": self.index,
            "d": self.key,
            "p": self.playbook,
            "a": self.text,
            "f": self.done,
        }
        if self.usage is not None:
            doc["u"] = self.usage
        if self.prompt is not None:
            doc["m"] = self.prompt
            doc["s"] = self.after
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> LLMAppend:
        return cls(
            doc["i"],
            doc["d"],
            doc["p"],
            doc.get("a", ""),
            doc.get("f", False),
            doc.get("u"),
            doc.get("m"),
            doc.get("s"),
        )


@dataclass
class Message:
    """A message between agents (or a request to run a public playbook)."""

    id: str
    sender: str
    receiver: str
    text: str
    kind: str = "message"
    payload: Any = None

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "from": self.sender,
            "to": self.receiver,
            "text": self.text,
            "kind": self.kind,
            "payload": self.payload,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Message:
        return cls(
            doc["id"],
            doc["from"],
            doc["to"],
            doc["text"],
            doc.get("kind", "message"),
            doc.get("payload"),
        )


@dataclass
class Frame:
    """One call-stack frame of an LLM playbook (its namespace is stored separately)."""

    playbook: str
    namespace: dict[str, Any]
    calls: int = 0
    """LLM calls this frame has made (the current one included once it started)."""
    llm_index: int | None = None
    """Op index of the frame's current LLM call."""
    number: int = 0
    """How many LLM calls of this playbook the agent made before the current one (the
    client's ``call``): not always the latest, when a playbook runs nested in itself."""
    executed: int = 0
    """Statements of the current response already executed."""
    offset: int = 0
    """Offset in the response just past the last executed statement."""
    current: tuple[int, int] | None = None
    step: str | None = None
    error: str | None = None
    no_code: int = 0
    """Responses in a row that ran no code (see :meth:`PlaybookLoop._end_call`)."""
    history: list[dict[str, str]] = field(default_factory=list)
    """The conversation after the playbook's instruction: assistant and user messages,
    alternating, ending with a user message once a response ended."""

    def to_doc(self) -> dict[str, Any]:
        return {
            "playbook": self.playbook,
            "calls": self.calls,
            "llm_index": self.llm_index,
            "number": self.number,
            "executed": self.executed,
            "offset": self.offset,
            "step": self.step,
            "error": self.error,
            "no_code": self.no_code,
            "history": self.history,
        }

    @classmethod
    def from_doc(
        cls, doc: Mapping[str, Any], namespace: dict[str, Any], *, default_number: int
    ) -> Frame:
        return cls(
            doc["playbook"],
            namespace,
            calls=doc["calls"],
            llm_index=doc["llm_index"],
            number=doc.get("number", default_number),
            executed=doc["executed"],
            offset=doc.get("offset", 0),
            step=doc["step"],
            error=doc["error"],
            no_code=doc.get("no_code", 0),
            history=list(doc["history"]),
        )

    @property
    def stack_label(self) -> str:
        """``Main:03`` from step ``Main:03:YLD``; the playbook name before any step."""
        return stack_label(self.playbook, self.step)


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
