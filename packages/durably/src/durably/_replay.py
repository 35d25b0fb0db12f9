"""An agent's journal at run time: numbering its operations, replaying them, recording them.

Every awaited durable operation of an agent gets the next *op index*. :meth:`Journal.op`
answers an operation from the journal when the agent replays (after checking that the
same operation is asked for) or runs it and records it. The journal also holds what the
agent's snapshots and deltas carry about its past: the LLM responses (open and replayed),
the text that arrived since the last checkpoint, the transcript and the LLM-call records.
The documents themselves are built by :mod:`durably._journal`.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from durably._executor import ControlFlow
from durably._journal import (
    Entry,
    LLMAppend,
    LLMEntry,
    LLMRecord,
    RestoredAgent,
    TranscriptItem,
    digest,
)
from durably.errors import DivergenceError, DurablyError

__all__ = ["Journal", "JournalHost"]


class JournalHost(Protocol):
    """What the journal needs from the agent it belongs to."""

    agent_id: str

    def apply_effects(self, effects: Mapping[str, Any]) -> None:
        """Re-apply an operation's journaled effects (state, transcript, messages)."""

    def consume(self, ids: set[str]) -> None:
        """Messages ``ids`` were taken from the mailbox."""

    async def write_delta(
        self, entries: list[Entry], announce: Callable[[], None] | None = None
    ) -> None:
        """Make ``entries`` (and the LLM text received) durable; ``announce`` is called
        just before their checkpoint is stored, after every earlier one."""

    def current_statement(self) -> str | None:
        """The LLM statement running now (for divergence errors), if any."""


class Journal:
    """One agent's journal.

    Attributes:
        index: The next op index.
        replay: Journaled operations not replayed yet, by op index.
        replay_llm: Journaled LLM responses not replayed yet, by op index.
        replay_logs: Their records (for ``show``).
        open_llm: LLM responses being read now, by op index.
        llm_appends: Text received per open response since the last checkpoint.
        snapshot_seq: The agent's latest snapshot.
        ops_since_snapshot: Operations since then (snapshot cadence).
        transcript: What the agent said to the user.
        llm_log: The records of its LLM calls that ended.
        unwritten_log: Those not written in a checkpoint yet.
        llm_counts: LLM calls made per playbook.
    """

    def __init__(self, host: JournalHost) -> None:
        self.host = host
        self.index = 0
        self.replay: dict[int, Entry] = {}
        self.replay_llm: dict[int, LLMEntry] = {}
        self.replay_logs: dict[int, LLMRecord] = {}
        self.open_llm: dict[int, LLMEntry] = {}
        self.llm_appends: dict[int, list[str]] = {}
        self.snapshot_seq: int | None = None
        self.ops_since_snapshot = 0
        self.transcript: list[TranscriptItem] = []
        self.llm_log: list[LLMRecord] = []
        self.unwritten_log: list[LLMRecord] = []
        self.llm_counts: dict[str, int] = {}

    @property
    def replaying(self) -> bool:
        """Whether journaled operations or LLM responses are still to be replayed."""
        return bool(self.replay or self.replay_llm)

    def next_index(self) -> int:
        index = self.index
        self.index += 1
        return index

    async def op(
        self,
        kind: str,
        args: Any,
        live: Callable[[], Awaitable[Any]],
        *,
        apply: Callable[[Any], None] | None = None,
        journal_errors: bool = False,
        effects: dict[str, Any] | None = None,
        effects_after: Callable[[Any], dict[str, Any] | None] | None = None,
        announce: Callable[[Any], None] | None = None,
    ) -> Any:
        """Run a durable operation: answer it from the journal, or run it and journal it.

        Args:
            kind: The operation's name (``"say"``, ``"yield"``, ``"tool:CookingTime"``).
            args: Its arguments; their digest is checked on replay.
            live: Performs the operation (only when not replaying).
            apply: The operation's effect on in-memory state, given its result; applied
                both live and on replay, so that replay rebuilds the same state.
            journal_errors: Record an exception ``live`` raises and raise it again on
                replay (tools); otherwise exceptions propagate unjournaled.
            effects: What ``apply`` does, as data (``{"transcript": [...], "messages":
                [...]}``), journaled so that it can be re-applied where the code is not
                re-run (inside a journaled tool call) and re-delivered on restore.
            effects_after: Computes more effects from the result after ``live`` ran (a
                tool's changes to the agent's state, a transcript line).
            announce: Shows the result to the user (a ``Say`` to the user), live only:
                called as the operation's checkpoint is stored, after every earlier
                checkpoint of the execution, so that no crash point falls between the
                user seeing it and its record being durable (a crash during that very
                write shows it once more after resume; it is never lost). Not called
                on replay: the resumed run does not show it again.

        Raises:
            DivergenceError: The journal recorded another operation at this index.
        """
        index = self.next_index()
        key = digest([kind, args])
        recorded = self.replay.pop(index, None)
        if recorded is not None:
            if recorded.kind != kind or recorded.key != key:
                raise self._divergence(index, kind, recorded.kind)
            # Counted as when it was committed, for the snapshot cadence once replay ends
            # (no snapshot is taken while it lasts: see AgentTask.snapshot).
            self.ops_since_snapshot += 1
            if apply is not None:
                apply(recorded.result)
            if recorded.span > 1:
                self._skip_span(index, recorded)
            if recorded.effects and ("state" in recorded.effects or "unset" in recorded.effects):
                self.host.apply_effects(
                    {k: v for k, v in recorded.effects.items() if k in ("state", "unset")}
                )
            if recorded.error is not None:
                raise _rebuild_error(recorded.error)
            return recorded.result
        self.check_live(index, kind)
        try:
            result = await live()
        except (ControlFlow, DurablyError, asyncio.CancelledError):
            raise
        except Exception as exc:
            if not journal_errors:
                raise
            entry = Entry(
                index,
                kind,
                key,
                error=[type(exc).__name__, str(exc)],
                span=self.index - index,
                effects=_merge_effects(effects, effects_after, None),
            )
            await self.commit(entry)
            raise
        entry = Entry(
            index,
            kind,
            key,
            result=result,
            span=self.index - index,
            effects=_merge_effects(effects, effects_after, result),
        )
        if apply is not None:
            apply(result)
        await self.commit(entry, None if announce is None else lambda: announce(result))
        return result

    async def commit(self, entry: Entry, announce: Callable[[], None] | None = None) -> None:
        """Make a completed operation durable (with the LLM text received so far)."""
        self.ops_since_snapshot += 1
        await self.host.write_delta([entry], announce)

    def _divergence(self, index: int, asked: str, recorded: str) -> DivergenceError:
        statement = self.host.current_statement()
        where = f" in statement {statement!r}" if statement is not None else ""
        return DivergenceError(
            f"agent {self.host.agent_id}: replay diverged at operation {index}{where}: the "
            f"journal recorded {recorded!r} but the code now asks for {asked!r} (or with "
            "other arguments). The program, its inputs or the LLM code changed, or the code "
            "between awaits is not deterministic."
        )

    def check_live(self, index: int, kind: str) -> None:
        """Raise if the agent goes live while an earlier journaled operation was skipped."""
        if self.replay and min(self.replay) < index:
            missing = min(self.replay)
            raise DivergenceError(
                f"agent {self.host.agent_id}: replay skipped journaled operation {missing} "
                f"({self.replay[missing].kind!r}) and asked for {kind!r} instead"
            )

    def _skip_span(self, index: int, recorded: Entry) -> None:
        """A journaled tool call also covers the operations it awaited (a tool may run an
        LLM playbook, call another agent, say things): the tool is not run again, so
        re-apply what those operations did to this agent and move past them."""
        for inner in range(index + 1, index + recorded.span):
            entry = self.replay.pop(inner, None)
            if entry is not None:
                self.ops_since_snapshot += 1
                if entry.effects:  # the state: the tool's own entry has it all, in order
                    self.host.apply_effects(
                        {k: v for k, v in entry.effects.items() if k not in ("state", "unset")}
                    )
                if entry.kind == "receive" and isinstance(entry.result, list):
                    self.host.consume({doc["id"] for doc in entry.result})
            llm = self.replay_llm.pop(inner, None)
            if llm is not None:  # an LLM call of a playbook the tool ran
                self.llm_counts[llm.playbook] = self.llm_counts.get(llm.playbook, 0) + 1
                item = self.replay_logs.pop(inner, None)
                if item is not None:
                    self.llm_log.append(item)
        self.index = index + recorded.span

    # ------------------------------------------------------------ LLM text

    def received(self, entry: LLMEntry, chunk: str) -> None:
        """``chunk`` of an open response arrived: the next checkpoint carries it."""
        entry.append(chunk)
        self.llm_appends.setdefault(entry.index, []).append(chunk)

    def response_done(self, entry: LLMEntry) -> None:
        """The response is complete (or its code ended): the next checkpoint says so."""
        entry.done = True
        self.llm_appends.setdefault(entry.index, [])

    def take_llm_appends(self) -> list[LLMAppend]:
        """The LLM text that arrived since the last checkpoint, for the next delta."""
        if not self.llm_appends:
            return []
        appends = [
            entry.append_doc("".join(chunks))
            for index, chunks in self.llm_appends.items()
            if (entry := self.open_llm.get(index)) is not None
        ]
        self.llm_appends.clear()
        return appends

    def forget_pending(self) -> None:
        """What was pending for the next checkpoint is in a snapshot being written."""
        self.llm_appends.clear()
        self.unwritten_log = []

    def written(self, seq: int, *, snapshot: bool) -> None:
        """A checkpoint of the agent was written (``seq``)."""
        if snapshot:
            self.snapshot_seq = seq
        for entry in self.open_llm.values():
            if entry.seq is None:
                entry.seq = seq

    def log_call(self, record: LLMRecord) -> None:
        """An LLM call ended (its record goes in the next checkpoint)."""
        self.llm_log.append(record)
        self.unwritten_log.append(record)

    # ------------------------------------------------------------ restore

    def load(self, restored: RestoredAgent) -> None:
        """The journal as the agent's last snapshot and later deltas left it."""
        snap = restored.snapshot
        self.snapshot_seq = restored.seq
        self.index = snap.index
        self.transcript = list(snap.transcript)
        self.llm_log = list(snap.llm_log)
        self.llm_counts = dict(snap.llm_counts)
        self.replay = dict(restored.entries)
        self.replay_llm = dict(restored.llm)
        self.replay_logs = dict(restored.logs)


def _merge_effects(
    static: dict[str, Any] | None, after: Callable[[Any], dict[str, Any] | None] | None, result: Any
) -> dict[str, Any] | None:
    extra = after(result) if after is not None else None
    if not extra:
        return static
    merged = dict(static or {})
    merged.update(extra)
    return merged


_BUILTIN_ERRORS = {
    name: obj
    for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, Exception)
}


def _rebuild_error(error: list[str]) -> Exception:
    name, message = error[0], error[1]
    cls = _BUILTIN_ERRORS.get(name)
    if cls is not None:
        try:
            rebuilt: Exception = cls(message)
            return rebuilt
        except Exception:
            pass
    return RuntimeError(f"{name}: {message}")
