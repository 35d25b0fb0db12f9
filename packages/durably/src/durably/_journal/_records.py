"""The records checkpoint documents hold (see :mod:`durably._journal` for the format).

Journaled operations (:class:`Entry`), LLM responses as they stream (:class:`LLMEntry`,
:class:`LLMAppend`), messages between agents (:class:`Message`), call-stack frames
(:class:`Frame`), the transcript and LLM-call records, a user's input; and the digests
and labels computed from them.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder as _json_encoder
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any, TypedDict

from durably.errors import CorruptObjectError

__all__ = [
    "Entry",
    "Frame",
    "LLMAppend",
    "LLMEntry",
    "LLMRecord",
    "LoopPosition",
    "Message",
    "TranscriptItem",
    "digest",
    "stack_label",
    "usage_tokens",
    "user_input",
    "user_input_number",
]


def digest(value: Any) -> str:
    """A short, stable digest of an operation's arguments (for divergence checks).

    It must not change when a value goes through a checkpoint: a set is digested by its
    sorted elements, not by its iteration order (which a restored set of strings need
    not keep).
    """
    text = _plain_text(value)
    if text is None:
        try:
            text = _DIGEST_JSON.encode(value)  # json.dumps(value, sort_keys=True, ...)
        except (TypeError, ValueError):  # keys JSON cannot hold or sort, a cycle
            text = _DIGEST_JSON.encode(_keyed(value, set()))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _keyed(value: Any, seen: set[int]) -> Any:
    """``value`` with every dict whose keys JSON cannot hold or sort (``(1, 2)``, ``1``
    beside ``"b"``) written as ``["dict", [[key text, value], ...]]`` sorted by key text,
    and a cycle as ``"..."``: what :func:`digest` encodes where plain JSON failed (so no
    digest of a value that JSON could encode changes)."""
    if isinstance(value, (list, tuple, dict)):
        if id(value) in seen:
            return "..."
        seen.add(id(value))
        try:
            if isinstance(value, dict):
                pairs = [
                    [_DIGEST_JSON.encode(_keyed(key, seen)), _keyed(item, seen)]
                    for key, item in value.items()
                ]
                return ["dict", sorted(pairs, key=lambda pair: pair[0])]
            return [_keyed(item, seen) for item in value]
        finally:
            seen.discard(id(value))
    return value


def _plain_text(value: Any) -> str | None:
    """What :data:`_DIGEST_JSON` makes of a list of str and lists of str (most
    operations' ``[kind, args]``), built without the encoder's Python layers; None for
    anything else."""
    if type(value) is not list:
        return None
    parts = []
    for item in value:
        if type(item) is str:
            parts.append(_json_str(item))
        elif type(item) is list and all(type(x) is str for x in item):
            parts.append("[" + ", ".join(map(_json_str, item)) + "]")
        else:
            return None
    return "[" + ", ".join(parts) + "]"


def _canonical(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return [
            type(value).__name__,
            sorted(
                json.dumps(v, sort_keys=True, default=_canonical, ensure_ascii=False) for v in value
            ),
        ]
    return repr(value)


_DIGEST_JSON = json.JSONEncoder(sort_keys=True, default=_canonical, ensure_ascii=False)
_json_str = _json_encoder.encode_basestring  # how _DIGEST_JSON writes a str (not ASCII-only)


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
class LoopPosition:
    """Where a top-level loop that durably runs an iteration at a time stands between
    two iterations (see :mod:`durably._loops`): the statement, the index of the next
    item, and the sequence a ``for`` loop goes through (stored beside the frame's
    namespace, in the same document: a list the namespace also holds stays one object)."""

    statement: int
    next: int
    """The next item's index (a ``while`` loop: the iterations that ran)."""
    sequence: list[Any] | tuple[Any, ...] | str | range | None
    """None for a ``while`` loop, whose position is all in the namespace."""
    start: int | None = None
    """A loop over ``enumerate(sequence, start)``: item ``i`` is ``(start + i,
    sequence[i])``. None for a loop over the sequence itself."""

    def to_doc(self) -> dict[str, Any]:
        sequence: Any = self.sequence
        if type(sequence) is range:
            sequence = {"range": [sequence.start, sequence.stop, sequence.step]}
        doc = {"statement": self.statement, "next": self.next, "seq": sequence}
        if self.start is not None:
            doc["start"] = self.start
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> LoopPosition:
        """Raises:
        CorruptObjectError: Not a loop position this durably writes."""
        sequence: Any = doc.get("seq")
        statement, position, start = doc.get("statement"), doc.get("next"), doc.get("start")
        if type(sequence) is dict and set(sequence) == {"range"}:
            bounds = sequence["range"]
            if type(bounds) is list and len(bounds) == 3 and all(type(b) is int for b in bounds):
                sequence = range(*bounds)
        if (
            type(sequence) not in (list, tuple, str, range, type(None))
            or type(statement) is not int
            or type(position) is not int
            or position < 0  # past the end is legitimate: a body may shrink its list
            or (start is not None and (type(start) is not int or sequence is None))
        ):
            raise CorruptObjectError(
                f"a snapshot's loop position is damaged: statement {statement!r}, next item "
                f"{position!r} of a {type(sequence).__name__}"
                + ("" if start is None else f" enumerated from {start!r}")
            )
        return cls(statement, position, sequence, start)


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
    loop: LoopPosition | None = None
    """Set between two iterations of the statement ``executed`` when it is a loop that
    durably steps through (:mod:`durably._loops`): where a resume goes on inside it."""

    def to_doc(self) -> dict[str, Any]:
        doc = {
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
        if self.loop is not None:
            doc["loop"] = self.loop.to_doc()
        return doc

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
            loop=LoopPosition.from_doc(doc["loop"]) if doc.get("loop") is not None else None,
        )

    @property
    def stack_label(self) -> str:
        """``Main:03`` from step ``Main:03:YLD``; the playbook name before any step."""
        return stack_label(self.playbook, self.step)
