"""What an execution's journal says happened, read back for people: the failures Python
tools journaled, the user's answers, and the LLM statement each agent had reached.

Inert like all inspection: nothing the store names is imported or run.
"""

from __future__ import annotations

from typing import Any

from durably._journal import DeltaDoc, SnapshotDoc, doc_type
from durably.checkpoint import CheckpointManager
from durably.errors import NotFoundError

__all__ = ["JournalReader", "journal_events", "reached_statement", "waiting_for_input"]


def _first_line(source: str) -> str:
    line = source.strip().splitlines()[0] if source.strip() else ""
    return line if len(line) <= 100 else line[:97] + "..."


def reached_statement(text: str, executed: int | None = None) -> str | None:
    """The statement a response's text has reached: the ``executed``-th one, or the last
    complete one."""
    from durably._statements import StatementSplitter, StatementSyntaxError

    splitter = StatementSplitter()
    try:
        statements = splitter.feed(text)
    except StatementSyntaxError:
        return None
    if executed is not None:
        statements = statements[: max(executed, 0)]
    return _first_line(statements[-1].source) if statements else None


class JournalReader:
    """What history says about each checkpoint: its agent's class, what it records, and
    the statement its agent's current LLM response had reached (inert: documents only)."""

    def __init__(self) -> None:
        self.classes: dict[str, str] = {}
        self.texts: dict[tuple[str, int], str] = {}
        self.records: dict[tuple[str, int], str] = {}
        self.playbooks: dict[tuple[str, int], str] = {}
        self.current: dict[str, int] = {}

    def read(self, doc: dict[str, Any]) -> tuple[str | None, tuple[str, ...], str | None]:
        kind = doc_type(doc)
        agent = doc.get("agent")
        if kind == "final":
            return None, (f"final ({doc.get('status', '?')})",), None
        if kind == "snapshot":
            snap = SnapshotDoc.from_doc(doc)
            self.classes[snap.agent] = snap.agent_class
            statement = None
            frame = snap.frame or {}
            for entry in snap.open_llm:
                self.texts[(snap.agent, entry.index)] = entry.text
                self.playbooks[(snap.agent, entry.index)] = entry.playbook
            for record in snap.llm_log:
                self.records[(snap.agent, record["index"])] = record["response"]
            index = frame.get("llm_index")
            if index is not None and (snap.agent, index) in self.texts:
                self.current[snap.agent] = index
                statement = reached_statement(
                    self.texts[(snap.agent, index)], frame.get("executed")
                )
            return snap.agent_class, (f"snapshot ({snap.phase})",), statement
        if kind != "delta":
            return self.classes.get(str(agent)), (str(kind),), None
        delta = DeltaDoc.from_doc(doc)
        ops: list[str] = [entry.kind for entry in delta.entries]
        for append in delta.llm:
            key = (delta.agent, append.index)
            self.texts[key] = self.texts.get(key, "") + append.text
            self.playbooks[key] = append.playbook
            self.current[delta.agent] = append.index
            ops.append(f"llm:{append.playbook}{' done' if append.done else ''}")
        for record in delta.log:
            self.texts.setdefault((delta.agent, record["index"]), record["response"])
            self.records[(delta.agent, record["index"])] = record["response"]
            self.playbooks.setdefault((delta.agent, record["index"]), record["playbook"])
        index = self.current.get(delta.agent)
        statement = None
        if index is not None and (delta.entries or delta.llm):
            statement = reached_statement(self.texts.get((delta.agent, index), ""))
        return self.classes.get(delta.agent), tuple(ops), statement


async def journal_events(
    manager: CheckpointManager, upto: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The failures journaled by Python tools and the user's answers, in the order they
    were journaled, from the stored checkpoints up to ``upto`` (inert; deduplicated, so
    that a crashed and resumed execution shows exactly what an uninterrupted one shows).

    Returns:
        ``(errors, inputs)``: errors as ``{"agent", "id", "playbook", "operation",
        "type", "message", "statement"}`` (the statement: the first line of the LLM
        code that called the tool); inputs as ``{"agent", "id", "number", "text"}``.
    """
    from durably._journal import user_input_number

    provider = manager.provider
    reader = JournalReader()
    found: dict[tuple[str, int], tuple[int, str, Any]] = {}
    inputs: dict[tuple[str, int], dict[str, Any]] = {}
    async for info in provider.iter_checkpoints(manager.execution_id):
        if upto is not None and info.seq > upto:
            break
        try:
            stored = await provider.load_checkpoint(manager.execution_id, info.seq)
        except NotFoundError:
            continue  # pruned since the listing
        doc = (await manager.decode(stored, unresolved=[]))["doc"]
        reader.read(doc)
        if doc_type(doc) != "delta":
            continue
        delta = DeltaDoc.from_doc(doc, info.seq)
        for entry in delta.entries:
            key = (delta.agent, entry.index)
            if entry.error is not None and key not in found:
                found[key] = (
                    len(found),
                    entry.kind,
                    (entry.error, reader.current.get(delta.agent)),
                )
            number = user_input_number(entry.result) if entry.kind == "yield" else None
            if number is not None and key not in inputs:
                inputs[key] = {
                    "agent": reader.classes.get(delta.agent, "?"),
                    "id": delta.agent,
                    "number": number,
                    "text": str((entry.result or {}).get("text", "")),
                }
    errors = []
    for (agent, _index), (_order, kind, (error, call)) in sorted(
        found.items(), key=lambda item: item[1][0]
    ):
        text = ""
        playbook = None
        if call is not None:
            text = reader.records.get((agent, call)) or reader.texts.get((agent, call), "")
            playbook = reader.playbooks.get((agent, call))
        tool = kind.split(":", 1)[1] if kind.startswith("tool:") else kind
        kind_error = [*error, "", ""]
        errors.append(
            {
                "agent": reader.classes.get(agent, "?"),
                "id": agent,
                "playbook": playbook,
                "operation": kind,
                "type": str(kind_error[0]),
                "message": str(kind_error[1]),
                "statement": _calling(text, tool),
            }
        )
    return errors, list(inputs.values())


def _calling(text: str, name: str) -> str | None:
    """The first line of the last complete statement of ``text`` that calls ``name``
    (else the last complete statement)."""
    from durably._statements import StatementSplitter

    splitter = StatementSplitter()
    try:
        statements = splitter.feed(text)
        statements += splitter.finish()
    except Exception:  # an unparsable or unfinished response: no statement to name
        return None
    calling = [s for s in statements if f"{name}(" in s.source]
    chosen = calling or statements
    return _first_line(chosen[-1].source) if chosen else None


_YIELD_USER = __import__("re").compile(r"\bYield\(\s*(['\"])user\1")


async def waiting_for_input(manager: CheckpointManager) -> dict[str, Any] | None:
    """Whether the unfinished execution stopped (or is stopped now, at a prompt) where an
    agent waits for the user's answer: ``{"agent", "id", "statement"}``, else None.

    What the store tells: when an agent asks for an answer that was not given, the runner
    makes the LLM text that arrived durable first (a delta with no journal entry, as the
    runtime writes for text it must keep), so that the latest checkpoint is that delta and
    the last complete statement of the agent's current response is its
    ``Yield("user")``. Inert: documents only.
    """
    provider = manager.provider
    latest = await provider.load_latest_checkpoint(manager.execution_id)
    if latest is None:
        return None
    doc = (await manager.decode(latest, unresolved=[]))["doc"]
    if doc_type(doc) != "delta" or DeltaDoc.from_doc(doc).entries:
        return None
    agent = str(doc.get("agent", ""))
    reader = JournalReader()
    answered: str | None = None  # the statement of the agent's latest journaled yield
    async for info in provider.iter_checkpoints(manager.execution_id):
        try:
            stored = await provider.load_checkpoint(manager.execution_id, info.seq)
        except NotFoundError:
            continue  # pruned since the listing
        read = (await manager.decode(stored, unresolved=[]))["doc"]
        _, ops, reached = reader.read(read)
        if doc_type(read) == "delta" and read.get("agent") == agent and read.get("entries"):
            answered = reached if "yield" in ops else None
    index = reader.current.get(agent)
    text = reader.texts.get((agent, index), "") if index is not None else ""
    statement = reached_statement(text) if text else None
    if statement is None or not _YIELD_USER.search(statement) or statement == answered:
        return None  # not at a Yield("user"), or at one that was answered (a response
        # that ended after it wrote its text durably too)
    return {"agent": reader.classes.get(agent, "?"), "id": agent, "statement": statement}
