"""The LLM calls of an agent's frames, journaled as they stream.

A call takes the next op index of the agent and is journaled as an open
:class:`~durably._journal.LLMEntry`: every chunk is recorded for the next checkpoint as it
arrives (:meth:`~durably._replay.Journal.received`). On replay the journaled text is
given back first; a response that was cut off -- by the provider (a retryable
:class:`~durably.llm.IncompleteResponseError`) or by a crash -- is continued from where it
stopped (the client gets the text so far as ``prefix``), never asked for anew. A response
is complete only when the client says so (:class:`~durably.llm.Finish`, with its usage);
the ``[llm]`` budgets are checked before every live call.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from durably._journal import Frame, LLMEntry, digest, usage_tokens
from durably.errors import DivergenceError, DurablyError
from durably.llm import (
    Finish,
    IncompleteResponseError,
    LLMBudgetExceededError,
    LLMError,
    NoCodeError,
)

if TYPE_CHECKING:
    from durably._runtime import AgentTask

__all__ = ["LLMCalls"]

log = logging.getLogger("durably.runtime")


class LLMCalls:
    """Starts, continues and streams the LLM calls of one agent's frames."""

    def __init__(self, task: AgentTask) -> None:
        self.task = task
        self.journal = task.journal

    async def start(self, frame: Frame) -> AsyncIterator[str]:
        """Make ``frame``'s next LLM call, or replay it from the journal: the response's
        text as it arrives.

        The call takes the next op index; the prompt's digest must match a journaled
        call (else :class:`~durably.errors.DivergenceError`). A live call is checked
        against the budgets first and journaled as an open :class:`LLMEntry`.
        """
        from durably._prompts import build_prompt

        self.task.check_running()
        prompt = build_prompt(self.task, frame)
        if self.journal.index not in self.journal.replay_llm:
            self._check_budgets(frame)
        index = self.journal.next_index()
        key = digest(prompt)
        frame.calls += 1
        frame.llm_index = index
        frame.executed = 0
        frame.offset = 0
        count_key = frame.playbook
        number = self.journal.llm_counts.get(count_key, 0)
        self.journal.llm_counts[count_key] = number + 1
        frame.number = number
        recorded = self.journal.replay_llm.pop(index, None)
        if recorded is not None:
            if recorded.key != key:
                raise DivergenceError(
                    f"agent {self.task.agent_id}: replay diverged at LLM call {index} of "
                    f"{frame.playbook}: the prompt differs from the journaled one (the program "
                    "or the code between awaits changed)"
                )
            entry = recorded
        else:
            self.journal.check_live(index, "llm")
            self.task.execution.calls_used += 1
            entry = LLMEntry(
                index, key, frame.playbook, prompt, after=self.task.execution.manager.next_seq
            )
        self.journal.open_llm[index] = entry
        async for chunk in self._stream(frame, entry, number):
            yield chunk

    def _check_budgets(self, frame: Frame) -> None:
        """Before a live LLM call: the ``[llm]`` budgets and the no-code rule."""
        execution = self.task.execution
        limits = execution.limits
        if frame.no_code >= 2:
            if not execution.retrying:
                raise NoCodeError(
                    f"agent {self.task.agent_id}: the LLM answered playbook {frame.playbook} "
                    f"{frame.no_code} times in a row without code, once after a corrective "
                    "note; check the model (--llm) and resume the execution"
                )
            frame.no_code = 0  # a resume after this failure: the user changed something
        if limits.max_calls and execution.calls_used >= limits.max_calls:
            raise LLMBudgetExceededError(
                "max_calls", limits.max_calls, execution.calls_used, "LLM calls of this execution"
            )
        per_run = limits.max_calls_per_playbook_run
        if per_run and frame.calls >= per_run:
            raise LLMBudgetExceededError(
                "max_calls_per_playbook_run",
                per_run,
                frame.calls,
                f"agent {self.task.agent_id} ran playbook {frame.playbook} without it returning",
            )
        if limits.max_tokens and execution.tokens_used >= limits.max_tokens:
            raise LLMBudgetExceededError(
                "max_tokens",
                limits.max_tokens,
                execution.tokens_used,
                "tokens of this execution, as providers reported",
            )

    async def resume(self, frame: Frame) -> AsyncIterator[str]:
        """Continue the LLM call a restored ``frame`` was reading: its journaled text, then
        (if the response was not complete) the rest, asked for from where it stopped."""
        assert frame.llm_index is not None
        entry = self.journal.replay_llm.pop(frame.llm_index, None) or self.journal.open_llm.get(
            frame.llm_index
        )
        if entry is None:
            raise DurablyError(
                f"agent {self.task.agent_id}: the journal lost LLM call "
                f"{frame.llm_index} of {frame.playbook}"
            )
        self.journal.open_llm[entry.index] = entry
        async for chunk in self._stream(frame, entry, frame.number):
            yield chunk

    async def _stream(self, frame: Frame, entry: LLMEntry, number: int) -> AsyncIterator[str]:
        if entry.text:
            yield entry.text
        if entry.done:
            return
        client = self.task.execution.llm
        agent_class = self.task.agent_class.__name__
        execution = self.task.execution
        execution.llm_calls_live += 1
        execution.llm_streaming = True
        started = execution.clock()
        continued = 0
        requested = False
        finish: Finish | None = None
        try:
            while not entry.draining:
                requested = True
                finish = None
                received = len(entry.text)
                try:
                    async for chunk in client.stream(
                        entry.prompt,
                        agent=agent_class,
                        playbook=frame.playbook,
                        call=number,
                        prefix=entry.text,
                    ):
                        if isinstance(chunk, Finish):
                            finish = chunk
                            self._finished(entry, finish, started, continued)
                            continue
                        if finish is not None:
                            raise LLMError(
                                f"the LLM client {client.spec!r} sent text after "
                                "the end of the response"
                            )
                        if not chunk:
                            continue
                        self.journal.received(entry, chunk)
                        yield chunk
                    if (
                        finish is not None
                        and not entry.draining  # the code ended: nothing is missing
                        and len(entry.text) > received
                        and cut_in_code(entry.text)
                    ):
                        # "complete", yet in the middle of a line of its code block: servers
                        # that cut a response at their token limit have been seen to say
                        # "stop" (`x = 15` of `x = 1500`). A continuation that adds nothing
                        # more is the model saying that it is complete.
                        raise IncompleteResponseError(
                            f"the response ended in the middle of a line of its code block "
                            f"although the provider reported it complete ({finish.reason!r})"
                        )
                    break
                except IncompleteResponseError as exc:
                    # What arrived is journaled; the rest is asked for from there.
                    if (
                        not exc.retryable
                        or entry.draining
                        or continued >= execution.limits.max_continuations
                    ):
                        if self.journal.llm_appends.get(entry.index) and not entry.draining:
                            # Keep what arrived: a resume continues it, never asks anew.
                            await self.task.write_delta([])
                        raise
                    continued += 1
                    log.warning(
                        "agent %s: the LLM response for %s was cut off (%s); "
                        "continuing it (%d of %d)",
                        self.task.agent_id,
                        frame.playbook,
                        exc,
                        continued,
                        execution.limits.max_continuations,
                    )
        finally:
            execution.llm_streaming = False
        if not requested:
            return  # replayed up to where its code ended: nothing more is needed
        if finish is None:  # a client that does not report the end: taken at its word
            self._finished(entry, Finish(reason=""), started, continued)
            entry.usage = {**(entry.usage or {}), "finish": None}
        self.journal.response_done(entry)

    def _finished(self, entry: LLMEntry, finish: Finish, started: float, continued: int) -> None:
        """The provider said the response is complete: record what it cost.

        A response continued after a request that did finish (see :func:`cut_in_code`)
        counts the last request only, as one continued after a cut-off stream does (whose
        cut-off request never reported): the budget spent is the journaled usage, the
        same in a resumed run, which never saw the earlier request's report."""
        earlier = usage_tokens(entry.usage)
        entry.usage = {
            "model": finish.model,
            "prompt_tokens": finish.prompt_tokens,
            "completion_tokens": finish.completion_tokens,
            "finish": finish.reason,
            "latency_ms": round((self.task.execution.clock() - started) * 1000, 1),
            "continuations": continued,
        }
        self.task.execution.tokens_used += usage_tokens(entry.usage) - earlier


def cut_in_code(text: str) -> bool:
    """Whether ``text`` opened a code fence on its first non-blank line, no later line
    closes it, and its last line is not complete (no newline after it).

    A model that leaves out the closing fence usually ends its last line; a server that
    cuts a response at a token limit usually cuts a line. A fence line inside a string
    of the code counts as closing: this errs on the side of taking the response as it
    is, as before this check.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.endswith("\n"):
        return False
    opened = False
    for line in text.split("\n"):
        stripped = line.strip()
        if not opened:
            if not stripped:
                continue
            if not stripped.startswith("```"):
                return False
            opened = True
        elif stripped.startswith("```") and not stripped.strip("`"):
            return False
    return opened
