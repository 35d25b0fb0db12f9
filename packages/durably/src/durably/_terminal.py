"""The command line's hooks into a running execution: :class:`Terminal`.

What a person at a terminal sees while a program runs -- the prompt, the answers given
with ``--input``, the status line, the tool failures -- is wired here, outside the
runtime: :func:`attach` connects the hooks before the execution runs and
:class:`TerminalIO` asks and echoes through them. Re-exported by :mod:`durably.runner`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from durably._execution import Execution, UserIO

__all__ = ["Terminal", "TerminalIO", "attach"]


@dataclass
class Terminal:
    """How a command line talks with the person at the terminal while a program runs (all
    optional): the ``durably`` command's live status and prompt.

    Attributes:
        ask: Awaited for the user's answer when the given inputs ran out (interactive
            runs), with the asking agent's class and id, instead of ``input("> ")``.
        heard: Called with (agent class, agent id, text) when a given ``--input`` answer
            is consumed live (not on replay), so that the transcript shows it.
        watch: Called once with the :class:`Execution` before it runs (a status line
            reads its counters).
        tool_failed: Called when a Python tool raised and its failure was journaled (live,
            not on replay), with ``{"agent", "id", "playbook", "operation", "type",
            "message", "statement"}`` -- what ``durably show`` lists as tool errors.
    """

    ask: Callable[[str, str], Awaitable[str]] | None = None
    heard: Callable[[str, str, str], None] | None = None
    watch: Callable[[Any], None] | None = None
    tool_failed: Callable[[dict[str, Any]], None] | None = None


def attach(execution: Execution, terminal: Terminal | None) -> None:
    """Connect a :class:`Terminal` to the execution before it runs: its status line
    (``watch``) and the tool failures it journals live (``tool_failed``).

    A tool failure is seen where it is journaled: the execution's ``write_delta`` (wrapped
    on this instance only) gets the journal entries about to become durable, and an entry
    with an ``error`` is a tool that raised. Replay writes no delta, so a resumed
    execution shows only the failures of its own run.
    """
    if terminal is None:
        return
    if terminal.watch is not None:
        terminal.watch(execution)
    failed = terminal.tool_failed
    if failed is None:
        return
    write_delta = execution.write_delta

    async def write_and_tell(task: Any, entries: list[Any], announce: Any = None) -> None:
        # Told as the checkpoint is stored (see CheckpointManager.write's announce), as an
        # agent's words are: a crash right after the checkpoint is durable loses no line
        # (the resumed run replays the failure silently), and no other agent's
        # checkpoint falls between telling and storing.
        tell = [entry for entry in entries if getattr(entry, "error", None) is not None]
        if not tell:
            await write_delta(task, entries, announce)
            return

        def told() -> None:
            if announce is not None:
                announce()
            _tell(task, tell)

        await write_delta(task, entries, told)

    def _tell(task: Any, entries: list[Any]) -> None:
        for entry in entries:
            if getattr(entry, "error", None) is None:
                continue
            error = [*entry.error, "", ""]
            frame = task.frames[-1] if task.frames else None
            lines = _statement(task, frame).strip().splitlines()
            with contextlib.suppress(Exception):  # what the terminal does is not the run's
                failed(
                    {
                        "agent": task.agent_class.__name__,
                        "id": task.agent_id,
                        "playbook": frame.playbook if frame is not None else None,
                        "operation": entry.kind,
                        "type": str(error[0]),
                        "message": str(error[1]),
                        "statement": lines[0] if lines else None,
                    }
                )

    execution.write_delta = write_and_tell  # type: ignore[method-assign]


def _statement(task: Any, frame: Any) -> str:
    """The statement of the LLM response ``frame`` is running (that called the tool)."""
    if frame is None or frame.current is None or frame.llm_index is None:
        return ""
    entry = task.journal.open_llm.get(frame.llm_index)
    return "" if entry is None else str(entry.text[frame.current[0] : frame.current[1]])


class TerminalIO(UserIO):
    """A :class:`UserIO` that asks and echoes through a :class:`Terminal`."""

    def __init__(
        self, inputs: list[str], *, interactive: bool, echo: Any, terminal: Terminal | None
    ) -> None:
        super().__init__(inputs, interactive=interactive, echo=echo)
        self.terminal = terminal or Terminal()
        self.execution: Execution | None = None

    async def ask(self, agent: str, agent_id: str) -> str:
        if self.consumed < len(self.inputs):
            text = self.inputs[self.consumed]
            if self.terminal.heard is not None:
                self.terminal.heard(agent, agent_id, text)
            return text
        await self._waiting(agent_id)
        if self.interactive and self.terminal.ask is not None:
            return await self.terminal.ask(agent, agent_id)
        return await super().ask(agent, agent_id)

    async def _waiting(self, agent_id: str) -> None:
        """No given answer is left: make the LLM text that arrived durable (a delta with
        no journal entry, as the runtime writes for text it must keep), so that the store
        shows the agent at its ``Yield("user")`` -- ``durably ls`` says ``waiting for
        input`` (see :func:`durably._events.waiting_for_input`)."""
        task = self.execution.agents.get(agent_id) if self.execution is not None else None
        if task is not None:
            await task.write_delta([])
