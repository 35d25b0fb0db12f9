"""The seed API's agents: one agent whose LLM text its caller feeds in.

:meth:`durably.checkpoint.CheckpointManager.attach` makes a :class:`StandaloneTask`; a
:class:`~durably._executor.StreamingPythonExecutor` built on its agent runs the code the
caller passes with ``add_chunk``, journaling the text as one open LLM response, and
snapshots after every statement that awaited (so that ``checkpoint.namespace`` shows every
step). No LLM client is involved: the runtime never asks for a response on its own.
"""

from __future__ import annotations

from typing import Any, ClassVar

from durably._journal import Frame, LLMEntry, RestoredAgent
from durably._llmloop import PlaybookLoop
from durably._runtime import AgentTask

__all__ = ["StandaloneTask"]


class _FedLoop(PlaybookLoop):
    """The caller feeds the response: no snapshot before a call, and a response becomes
    durable with the caller's own checkpoints."""

    async def before_call(self) -> None:
        return None

    async def _response_received(self, frame: Frame) -> None:
        return None


class StandaloneTask(AgentTask):
    """An agent of the seed API."""

    loop_class: ClassVar[type[PlaybookLoop]] = _FedLoop
    standalone: ClassVar[bool] = True

    @property
    def snapshot_every(self) -> int:
        return 1

    def standalone_frame(self) -> Frame:
        """The frame the seed API's executor runs in (its response is an open LLM entry)."""
        if not self.frames:
            frame = Frame("Main", self.new_namespace())
            frame.calls = 1
            frame.llm_index = self.journal.next_index()
            entry = LLMEntry(frame.llm_index, "standalone", "Main", [])
            self.journal.open_llm[entry.index] = entry
            self.frames.append(frame)
        return self.frames[-1]

    async def standalone_text(self, frame: Frame, chunk: str) -> None:
        """The caller fed ``chunk`` of the response: journal it (the first one after a
        snapshot, so that the agent exists in the store)."""
        assert frame.llm_index is not None
        if self.journal.snapshot_seq is None:
            await self.snapshot()
        self.journal.received(self.journal.open_llm[frame.llm_index], chunk)

    def restore(self, restored: RestoredAgent, state: dict[str, Any],
                local_vars: dict[str, Any] | None) -> None:
        super().restore(restored, state, local_vars)
        frame = self._resume_frame
        if frame is not None:
            self.frames = [frame]
            replay_llm = self.journal.replay_llm
            if frame.llm_index is not None and frame.llm_index in replay_llm:
                self.journal.open_llm[frame.llm_index] = replay_llm.pop(frame.llm_index)
