"""The LLM loop of an agent: run an LLM playbook by asking the LLM and running its code.

A playbook's frame asks the LLM for code, runs it statement by statement as it streams
in (:class:`~durably._executor.StreamingPythonExecutor`), and asks again until the code
returns. Each call is journaled as it streams (:class:`~durably._llmcalls.LLMCalls`): a
resumed agent replays the journaled text, continues a response that was cut off from
where it stopped, and asks anew only for calls that never started. Once a response's
code ended, the rest of a request in flight is read for the provider's end (its usage)
and the response is made durable; its record and the next instruction go in the frame's
conversation.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from durably._executor import (
    ControlFlow,
    EndTurn,
    PlaybookReturn,
    ProgramExit,
    StreamingPythonExecutor,
)
from durably._journal import Frame, LLMRecord
from durably._llmcalls import LLMCalls
from durably.llm import LLMError

if TYPE_CHECKING:
    from durably._runtime import AgentTask
    from durably.agent import PlaybookSpec

__all__ = ["PROCESS_MESSAGES", "PlaybookLoop"]

log = logging.getLogger("durably.runtime")

PROCESS_MESSAGES = "ProcessMessages"


class PlaybookLoop:
    """Runs the LLM playbooks of one agent (on the agent's call stack)."""

    def __init__(self, task: AgentTask) -> None:
        self.task = task
        self.journal = task.journal
        self.calls = LLMCalls(task)
        self._streams: dict[int, AsyncIterator[str]] = {}
        """The stream each running frame reads its response from, by ``id(frame)``."""

    async def before_call(self) -> None:
        """Before a new LLM call: the agent may be at a quiet point, snapshot it there."""
        if self.task.quiet and self.journal.ops_since_snapshot:
            await self.task.snapshot()

    async def response_ends(self) -> None:
        """The statement running now ends the current LLM response (a Return, a Yield for
        the next call or for exit): what follows it in the stream will never run, so the
        response counts as received -- and the next checkpoint, the ending operation's,
        says so. The rest of a request still in flight is read first, so that the same
        checkpoint holds the provider's end of the response (its usage)."""
        frame = self.task.frames[-1] if self.task.frames else None
        if frame is None or frame.llm_index is None:
            return
        entry = self.journal.open_llm.get(frame.llm_index)
        if entry is None or entry.done:
            return
        stream = self._streams.get(id(frame))
        if stream is not None:
            await self._drain(frame, stream)
        if not entry.done:
            self.journal.response_done(entry)

    async def run_llm_playbook(
        self,
        spec: PlaybookSpec | None,
        args: dict[str, Any],
        *,
        frame: Frame | None = None,
        name: str | None = None,
    ) -> Any:
        """Run an LLM playbook to its end: call the LLM, run its code, repeat."""
        resuming = frame is not None and frame.llm_index is not None
        if frame is None:
            frame = Frame(
                name or (spec.name if spec else PROCESS_MESSAGES), self.task.new_namespace(args)
            )
        self.task.frames.append(frame)
        try:
            while True:
                if resuming:
                    resuming = False
                    stream = self.calls.resume(frame)
                else:
                    await self.before_call()
                    stream = self.calls.start(frame)
                executor = StreamingPythonExecutor(self.task.agent, frame)
                try:
                    await self._execute(frame, stream, executor)
                except PlaybookReturn as done:
                    self._end_call(frame, executor)
                    return done.value
                except ProgramExit:
                    self._end_call(frame, executor)
                    raise
                except EndTurn:
                    pass
                await self._response_received(frame)
                self._end_call(frame, executor, no_code=not executor.ran_code)
        finally:
            self.task.frames.pop()

    async def _execute(
        self, frame: Frame, stream: AsyncIterator[str], executor: StreamingPythonExecutor
    ) -> None:
        """Run a response's code as it streams in. Once the code ended (a ``Return``, a
        ``Yield``, an error, the closing fence), the rest of a request in flight is read
        for the provider's :class:`Finish` (its usage); it runs nothing, and no request
        is made for it (a stream that ends badly after the closing fence takes nothing
        from what ran). What follows the fence still reaches the executor, which only
        records it: the response counts as a replay sees it, all of it at once."""
        self._streams[id(frame)] = stream
        try:
            async for chunk in stream:
                await executor._feed(chunk)
                if executor.stopped:
                    break
                if executor.splitter.code_closed:
                    await self._drain(frame, stream, executor)
                    break
            await executor.finish()
        except ControlFlow:
            await self._drain(frame, stream)
            raise
        finally:
            self._streams.pop(id(frame), None)
        await self._drain(frame, stream)

    async def _drain(
        self,
        frame: Frame,
        stream: AsyncIterator[str],
        executor: StreamingPythonExecutor | None = None,
    ) -> None:
        entry = self.journal.open_llm.get(frame.llm_index) if frame.llm_index is not None else None
        if entry is not None:
            entry.draining = True  # no new request just for the tail
        try:
            async for chunk in stream:
                if executor is not None:
                    await executor._feed(chunk)  # after the fence: recorded, never run
        except LLMError as exc:  # the code had ended: what it ran stands
            log.warning(
                "agent %s: the LLM response for %s ended badly after its code (%s)",
                self.task.agent_id,
                frame.playbook,
                exc,
            )
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _response_received(self, frame: Frame) -> None:
        """A response that ended without a durable operation at its end (an error in the
        LLM code, trailing statements that awaited nothing): make it durable now, so that a
        crash before the next checkpoint cannot make the LLM be asked for it again."""
        if frame.llm_index is None:
            return
        entry = self.journal.open_llm.get(frame.llm_index)
        if entry is None:
            return
        if not entry.done:
            self.journal.response_done(entry)
        if entry.index in self.journal.llm_appends:
            await self.task.write_delta([])

    def _end_call(
        self, frame: Frame, executor: StreamingPythonExecutor, *, no_code: bool = False
    ) -> None:
        """A response ended: log it, and add it and the next instruction to the frame's
        conversation. A response that ran no code gets a corrective note instead; the
        next live call fails with :class:`NoCodeError` after two in a row."""
        entry = (
            self.journal.open_llm.pop(frame.llm_index, None)
            if frame.llm_index is not None
            else None
        )
        response = executor.response
        if entry is not None:
            item: LLMRecord = {
                "agent": self.task.agent_class.__name__,
                "id": self.task.agent_id,
                "playbook": frame.playbook,
                "index": entry.index,
                "after": entry.after,
                "prompt": entry.prompt,
                "response": response,
            }
            if entry.usage is not None:
                item["usage"] = entry.usage
            self.journal.log_call(item)
        note = f"{frame.stack_label} was executed - continue execution."
        frame.no_code = frame.no_code + 1 if no_code else 0
        if no_code:
            frame.error = None  # prose does not parse: that is not news to the model
            note = (
                f"Your answer ran no code. Answer with exactly one fenced ```python code "
                f"block that continues playbook {frame.playbook}."
            )
        if frame.error:
            note = f"Error: {frame.error}\n{note}"
        frame.history.append({"role": "assistant", "content": response})
        frame.history.append({"role": "user", "content": note})
        frame.error = None
        frame.executed = 0
        frame.offset = 0
        frame.llm_index = None
