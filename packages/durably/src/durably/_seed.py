"""The seed API: one agent whose LLM text its caller feeds in, checkpointed as it runs.

::

    manager = CheckpointManager("run-1", FilesystemCheckpointProvider("./store"))
    agent = manager.attach(Assistant)
    executor = StreamingPythonExecutor(agent)
    await executor.add_chunk(text)          # runs every statement the text completes
    ...
    # in a new process, after a crash:
    coordinator = RecoveryCoordinator(manager)
    if await coordinator.can_recover():
        agent = manager.attach(Assistant)
        executor = await StreamingPythonExecutor.resume_from_checkpoint(agent, checkpoint)

:meth:`CheckpointManager.attach` makes a :class:`StandaloneTask`: its executor journals
the text it is fed as one open LLM response and snapshots after every statement that
awaited (so that ``checkpoint.namespace`` shows every step). No LLM client is involved.
Everything else (``durably run``, workers) runs programs through :mod:`durably.runner`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from durably import checkpoint as _checkpoint
from durably._execution import Execution, UserIO
from durably._executor import StreamingPythonExecutor as _Executor
from durably._inspect import Checkpoint, checkpoint_view
from durably._journal import Frame, LLMEntry, RestoredAgent
from durably._llmloop import PlaybookLoop
from durably._resume import restore_agents
from durably._runtime import AgentTask
from durably._statements import Statement
from durably.agent import Agent
from durably.errors import DurablyError, NotFoundError
from durably.storage import META_STATUS

__all__ = ["CheckpointManager", "RecoveryCoordinator", "StandaloneTask", "StreamingPythonExecutor"]


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

    def snapshot_interval(self) -> int:
        """A snapshot after every statement that awaited: the seed API shows
        ``checkpoint.namespace`` there."""
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

    def restore(
        self, restored: RestoredAgent, state: dict[str, Any], local_vars: dict[str, Any] | None
    ) -> None:
        super().restore(restored, state, local_vars)
        frame = self.resume_frame
        if frame is not None:
            self.frames = [frame]
            replay_llm = self.journal.replay_llm
            if frame.llm_index is not None and frame.llm_index in replay_llm:
                self.journal.open_llm[frame.llm_index] = replay_llm.pop(frame.llm_index)


class CheckpointManager(_checkpoint.CheckpointManager):
    """Writes and reads the checkpoints of one execution, with the seed API's methods.

    Args:
        execution_id: The execution.
        provider: Where checkpoints live (any :class:`~durably.storage.CheckpointProvider`).
        config: Limits, retention and codec settings (default: :func:`durably.load_config`
            defaults, without reading files).
        hooks: The plugin facade (default: the process-wide one).
    """

    def attach(
        self, agent_class: type[Agent], *, inputs: list[str] | None = None, echo: Any = print
    ) -> Agent:
        """A standalone agent whose executor checkpoints through this manager.

        Args:
            agent_class: The agent's class (an :class:`~durably.Agent` subclass).
            inputs: Answers its ``Yield("user")`` gets, in order.
            echo: Called with each line it says to the user.
        """
        execution = Execution(self, io=UserIO(inputs, echo=echo))
        return execution.create_agent(agent_class, task_class=StandaloneTask).agent

    async def get_latest_checkpoint(self) -> Checkpoint | None:
        """The latest checkpoint in human terms, or None if the execution has none."""
        loaded = await self.load_execution()
        if loaded is None:
            return None
        return checkpoint_view(self.execution_id, loaded)


class RecoveryCoordinator:
    """Restores agents from an execution's checkpoints."""

    def __init__(self, manager: CheckpointManager) -> None:
        self.manager = manager

    async def can_recover(self) -> bool:
        """Whether the execution has a checkpoint to resume from and is not finished."""
        latest = await self.manager.provider.load_latest_checkpoint(self.manager.execution_id)
        return latest is not None and latest.metadata.get(META_STATUS) not in (
            "completed",
            "failed",
        )

    async def recover_execution_state(self, agent: Agent) -> Checkpoint:
        """Restore ``agent`` (a standalone agent of this manager) from the latest checkpoint."""
        checkpoint = await self.manager.get_latest_checkpoint()
        if checkpoint is None:
            raise NotFoundError(f"execution {self.manager.execution_id!r} has no checkpoint")
        await restore_agents(self.manager, agent._task.execution)
        return checkpoint


class StreamingPythonExecutor(_Executor):
    """Runs the response its caller feeds in, for a standalone agent.

    Each statement runs as soon as it is complete (see the runtime's executor); every
    statement that awaited is followed by a snapshot.
    """

    def __init__(self, agent: Agent, frame: Frame | None = None) -> None:
        task = agent._task
        if not isinstance(task, StandaloneTask):
            raise DurablyError(
                "the seed API's executor runs a standalone agent only: make "
                "the agent with CheckpointManager.attach"
            )
        super().__init__(agent, frame if frame is not None else task.standalone_frame())
        self.standalone = task
        self._pending_text: str | None = None

    @property
    def namespace(self) -> dict[str, Any]:
        """The frame's variables (without the names durably injects, such as ``self``)."""
        return self.task.visible_locals(self.frame)

    @property
    def llm_response(self) -> str:
        """The response text received so far (after a resume: what was durable). A caller
        streaming a response itself continues from ``len(executor.llm_response)``."""
        return self.splitter.text

    def set_llm_response(self, text: str) -> None:
        """Record the complete response text without running it.

        Statements run on :meth:`add_chunk` / :meth:`finish`; use this when the whole
        response is known up front.
        """
        self._pending_text = text

    async def add_chunk(self, chunk: str) -> list[Statement]:
        """Feed a chunk of the response; run every statement it completes.

        Returns:
            The statements that ran (or were skipped as already executed).
        """
        if self.frame.llm_index is not None:
            await self.standalone.standalone_text(self.frame, chunk)
        return await self._feed(chunk)

    async def finish(self) -> list[Statement]:
        """End of the response: run the statements still pending."""
        if self._stopped:
            return []
        done: list[Statement] = []
        pending = self._pending_text
        if pending:
            self._pending_text = None
            done += await self.add_chunk(pending)
        return done + await super().finish()

    @classmethod
    async def resume_from_checkpoint(cls, agent: Agent, checkpoint: Any) -> StreamingPythonExecutor:
        """Restore ``agent`` from ``checkpoint`` and return an executor that continues
        its response: statements already executed are skipped, awaits already
        completed are answered from the journal, and later chunks run live.

        ``checkpoint`` must be the execution's latest checkpoint: continuing from an
        older one in place would write a second future after it. Fork the execution
        instead (:func:`durably.fork`) to resume from an earlier point.
        """
        task = agent._task
        if not isinstance(task, StandaloneTask):
            raise DurablyError(
                "resume_from_checkpoint resumes a standalone agent only "
                "(made by CheckpointManager.attach); resume executions with "
                "durably.resume"
            )
        if task.journal.snapshot_seq is None:
            manager = task.execution.manager
            loaded = await manager.load_execution()
            if loaded is None:
                raise NotFoundError(f"execution {manager.execution_id!r} has no checkpoint")
            seq = getattr(checkpoint, "seq", loaded.latest_seq)
            if seq != loaded.latest_seq:
                raise DurablyError(
                    f"checkpoint {seq} is not the latest of {manager.execution_id!r} "
                    f"({loaded.latest_seq}); fork the execution to resume from an earlier "
                    "point"
                )
            await restore_agents(manager, task.execution, loaded=loaded)
        frame = task.frames[0] if task.frames else task.standalone_frame()
        executor = cls(agent, frame)
        assert frame.llm_index is not None
        entry = task.journal.open_llm.get(frame.llm_index)
        text = entry.text if entry is not None else ""
        if text:
            await executor._feed(text)
        return executor
