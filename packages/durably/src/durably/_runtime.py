"""The durable runtime: agents' tasks, the journal, snapshots, replay and the LLM loop.

The model (see ``docs/design/resume-model.md``):

* Every awaited durable operation of an agent (Say, Yield, Step, Return, an LLM call,
  a tool call, agent creation, a message) gets the next *op index* of that agent. When
  it completes, its journal entry is written in a checkpoint (with the LLM text that
  arrived since the last one) **before** the code after the ``await`` runs.
* At *quiet points* -- between two top-level statements of the agent's bottom frame,
  between two LLM calls of it, or while it is idle -- the agent may write a *snapshot*:
  its state, the bottom frame's namespace and position, its inbox, and the next op index.
* Resume restores each agent from its last snapshot and re-executes from there. Every
  operation whose journal entry exists returns its recorded result (after checking that
  the same operation is asked for: same kind and argument digest), the code between
  awaits recomputes everything else -- nested frames, loop variables, branches -- and
  when the journal runs out execution is live again.
* Each agent is the only writer of its own state; a call to another agent's playbook is a
  request message that the callee runs on its own call stack.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from durably._executor import EndTurn, PlaybookReturn, ProgramExit
from durably._journal import (
    Entry,
    Frame,
    Message,
    RestoredAgent,
    SnapshotDoc,
    user_input,
    user_input_number,
)
from durably._llmloop import PlaybookLoop
from durably._mailbox import Mailbox
from durably._messaging import wait_for
from durably._replay import Journal
from durably._serving import run_phases, serve_request
from durably._snapshots import SNAPSHOT_BYTES_PER_OPERATION, restore_task, snapshot_of
from durably._tools import bind_arguments, call_tool
from durably.errors import ConcurrentAwaitError, DurablyError

if TYPE_CHECKING:
    from durably._execution import Execution
    from durably.agent import Agent, AgentHandle, PlaybookSpec


class AgentTask:
    """Runs one agent: its call stack, its durable operations, and the requests it serves.

    Its parts: :attr:`journal` (:class:`~durably._replay.Journal`: op numbering, replay,
    what checkpoints carry), :attr:`mailbox` (:class:`~durably._mailbox.Mailbox`) and
    :attr:`loop` (:class:`~durably._llmloop.PlaybookLoop`: LLM playbooks).
    """

    loop_class: ClassVar[type[PlaybookLoop]] = PlaybookLoop

    def __init__(self, execution: Execution, agent_id: str, agent_class: type[Agent]) -> None:
        self.execution = execution
        self.agent_id = agent_id
        self.agent_class = agent_class
        self.agent: Agent = agent_class(self)
        self.frames: list[Frame] = []
        self.journal = Journal(self)
        self.mailbox = Mailbox()
        self.loop = self.loop_class(self)
        self.phase = "start"
        self.serving: Message | None = None
        """The request the bottom frame serves (phase ``serve``)."""
        self.begin_returned = False
        self.finished = False
        """The agent ran ``Yield("exit")``: its task is over."""
        self.result: Any = None
        self.idempotency_key: str | None = None
        self.tools_running = 0
        """Python playbooks running live on this agent's stack (see :attr:`quiet`)."""
        self.resume_frame: Frame | None = None
        """The bottom frame a restore put back, taken by :meth:`run` (or the seed API)."""
        self._injected: dict[str, Any] = {}
        self.deferred: set[str] = set()
        """Frame variables that made a snapshot wait (each warned about once)."""

    # ------------------------------------------------------------------ frames

    def new_namespace(self, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        injected = {"self": self.agent, **self.execution.program_names}
        self._injected = injected
        namespace: dict[str, Any] = {"__builtins__": builtins, "__name__": "__durably__"}
        namespace.update(injected)
        if values:
            namespace.update(values)
        return namespace

    def visible_locals(self, frame: Frame) -> dict[str, Any]:
        hidden = self._injected
        return {
            name: value
            for name, value in frame.namespace.items()
            if not (name.startswith("__") and name.endswith("__"))
            and not (name in hidden and hidden[name] is value)
        }

    @property
    def call_stack(self) -> list[str]:
        return [frame.stack_label for frame in self.frames]

    @property
    def has_begin(self) -> bool:
        return any(spec.begin for spec in self.agent_class.playbooks.values())

    # ------------------------------------------------------------------ journal

    async def op(
        self, kind: str, args: Any, live: Callable[[], Awaitable[Any]], **options: Any
    ) -> Any:
        """Run a durable operation of this agent (see :meth:`Journal.op`); nothing runs
        once the program has ended."""
        self.check_running()
        return await self.journal.op(kind, args, live, **options)

    def check_running(self) -> None:
        """Before a durable operation or an LLM call of this agent: see
        :func:`_check_running`."""
        _check_running(self)

    # JournalHost

    def apply_effects(self, effects: Mapping[str, Any]) -> None:
        for name, value in effects.get("state", {}).items():
            setattr(self.agent.state, name, value)
        for name in effects.get("unset", []):
            self.agent.state.to_dict().pop(name, None)
        for item in effects.get("transcript", []):
            self.journal.transcript.append(item)
        for doc in effects.get("messages", []):
            self.execution.deliver(Message.from_doc(doc))

    def consume(self, ids: set[str]) -> None:
        self.mailbox.consume(ids)

    async def write_delta(
        self, entries: list[Entry], announce: Callable[[], None] | None = None
    ) -> None:
        await self.execution.write_delta(self, entries, announce)

    def current_statement(self) -> str | None:
        frame = self.frames[-1] if self.frames else None
        if frame is None or frame.current is None:
            return None
        if frame.llm_index is None:
            return None
        entry = self.journal.open_llm.get(frame.llm_index)
        return entry.text[frame.current[0] : frame.current[1]] if entry is not None else None

    # ----------------------------------------------------------- quiet points

    @property
    def quiet(self) -> bool:
        """Nothing of the agent is suspended but its bottom frame, between statements: no
        nested frame, and no Python playbook (tool) running -- a tool is a Python frame
        that no snapshot can hold, even when the LLM playbook it awaits is the only frame
        on the stack (a public tool served at the bottom)."""
        return len(self.frames) <= 1 and not self.tools_running

    def snapshot_interval(self) -> int:
        """Operations journaled before a quiet point takes a snapshot: ``snapshot_every``,
        and one per :data:`SNAPSHOT_BYTES_PER_OPERATION` bytes the agent's latest snapshot
        took to encode. A snapshot encodes the whole namespace, so this bounds the work
        of re-encoding a large one to ~4 KiB per operation, while replay stays bounded by
        the same number of operations."""
        manager = self.execution.manager
        return max(
            manager.config.snapshot_every,
            manager.snapshot_bytes(self.agent_id) // SNAPSHOT_BYTES_PER_OPERATION,
        )

    @property
    def snapshot_due(self) -> bool:
        """At a quiet point: whether a snapshot is due there (the agent's only frame is
        between two statements, or two iterations of a loop the executor steps through,
        and a snapshot interval of operations was journaled since the latest one -- and
        the agent no longer replays: see :meth:`snapshot`)."""
        return (
            self.quiet
            and self.journal.ops_since_snapshot >= self.snapshot_interval()
            and not self.journal.replaying
        )

    async def quiet_point(self, frame: Frame) -> None:
        """``frame`` is between two statements: snapshot the agent if one is due."""
        if self.snapshot_due:
            await self.snapshot()

    async def snapshot(self, *, unless_repeated: bool = False) -> None:
        """Snapshot the agent -- unless it still has journaled operations to replay: they
        are in deltas older than the snapshot would be, so a resume from it would never
        see them and would run them again. (A run that never crashed took no snapshot in
        that stretch, or the resume would have started from it; only a cadence that
        depends on this process -- the snapshot interval, before its first snapshot --
        can ask for one there.)"""
        if self.journal.replaying:
            return
        if await self.execution.write_snapshot(self, unless_repeated=unless_repeated):
            self.journal.ops_since_snapshot = 0
        # Deferred (a frame variable no snapshot can hold): the count goes on, so every
        # quiet point tries again -- as the run before a crash did, which is where a
        # resume snapshots then.

    def snapshot_doc(self) -> tuple[SnapshotDoc, dict[str, Any], dict[str, Any]]:
        """(snapshot document, state, locals) for the codec."""
        return snapshot_of(self)

    def restore(
        self, restored: RestoredAgent, state: dict[str, Any], local_vars: dict[str, Any] | None
    ) -> None:
        """The agent as its last snapshot and later journal left it (before it runs)."""
        restore_task(self, restored, state, local_vars)

    # ------------------------------------------------------------- operations

    async def op_step(self, step: str) -> None:
        frame = self.frames[-1] if self.frames else None

        def apply(_: Any) -> None:
            if frame is not None:
                frame.step = step
            progress = self.execution.progress
            if progress is not None:
                progress(self.agent_class.__name__, self.agent_id, self.call_stack)

        await self.op("step", step, _none, apply=apply)

    async def op_trigger(self, name: str) -> None:
        await self.op("trigger", name, _none)

    async def op_say(self, target: Any, text: str) -> None:
        receiver = self.execution.resolve_target(target)
        if receiver == "user":
            execution = self.execution
            index = self.journal.index

            async def live() -> dict[str, Any]:
                return {
                    "agent": self.agent_class.__name__,
                    "id": self.agent_id,
                    "text": text,
                    "index": index,
                    "after": execution.manager.next_seq,
                }

            await self.op(
                "say",
                ["user", text],
                live,
                apply=self.journal.transcript.append,
                effects_after=lambda item: {"transcript": [item]},
                # shown as its checkpoint is stored, not before: in a run of several
                # agents another agent's checkpoint (a crash point) could fall between
                announce=lambda _: execution.io.say(self.agent_class.__name__, self.agent_id, text),
            )
            return
        message = Message(f"{self.agent_id}:{self.journal.index}", self.agent_id, receiver, text)
        await self.op(
            "say",
            [receiver, text],
            _none,
            apply=self.delivers(message),
            effects={"messages": [message.to_doc()]},
        )

    def delivers(self, message: Message) -> Callable[[Any], None]:
        """The ``apply`` of an operation that sends ``message``: it is delivered live and
        again on replay (the receiver's mailbox drops a duplicate)."""

        def deliver(_: Any) -> None:
            self.execution.deliver(message)

        return deliver

    async def op_yield(self, target: Any) -> Any:
        if target in ("call",):
            await self.loop.response_ends()
            await self.op("yield", "call", _none)
            raise EndTurn()
        if target in ("exit",):
            await self.loop.response_ends()
            await self.op("yield", "exit", _none)
            raise ProgramExit()
        if target is None or target == "user" or target == "human":
            io = self.execution.io

            async def ask() -> dict[str, Any]:
                number = io.consumed
                text = await io.ask(self.agent_class.__name__, self.agent_id)
                return user_input(number, text)

            def consumed(answer: dict[str, Any]) -> None:
                number = user_input_number(answer)
                if number is not None:
                    io.consumed = max(io.consumed, number + 1)

            answer = await self.op("yield", "user", ask, apply=consumed)
            return answer["text"]
        sender = self.execution.resolve_target(target)
        messages = await wait_for(
            self, lambda m: m.sender == sender and m.kind == "message", f"yield:{sender}"
        )
        return "\n".join(m.text for m in messages) if messages else None

    async def op_return(self, value: Any) -> None:
        await self.loop.response_ends()
        await self.op("return", None, _none)
        raise PlaybookReturn(value)

    async def op_get_or_create(self, cls: type[Agent]) -> AgentHandle:
        from durably.agent import AgentHandle

        execution = self.execution

        async def live() -> str:
            return (await execution.find_or_create(cls)).agent_id

        def apply(agent_id: str) -> None:
            execution.ensure_agent(agent_id, cls)

        agent_id = await self.op("create", cls.__name__, live, apply=apply)
        return AgentHandle(agent_id, cls.__name__, self)

    async def op_call_remote(
        self, handle: AgentHandle, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        target = self.execution.agents.get(handle.id)
        if target is None:
            raise DurablyError(f"no agent {handle.id}")
        spec = target.agent_class.playbooks.get(name)
        if spec is None or not spec.public:
            raise AttributeError(f"{handle!r} has no public playbook {name!r}")
        request_id = f"{self.agent_id}:{self.journal.index}"
        request = Message(
            request_id,
            self.agent_id,
            handle.id,
            name,
            kind="request",
            payload={"args": list(args), "kwargs": kwargs},
        )
        await self.op(
            "call",
            [handle.id, name, list(args), kwargs],
            _none,
            apply=self.delivers(request),
            effects={"messages": [request.to_doc()]},
        )
        replies = await wait_for(
            self,
            lambda m: m.kind == "reply" and m.payload.get("request") == request_id,
            f"reply:{request_id}",
        )
        reply = replies[0].payload
        if reply.get("error"):
            raise RuntimeError(reply["error"])
        return reply.get("value")

    async def call_playbook(
        self, spec: PlaybookSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if spec.llm:
            return await self.loop.run_llm_playbook(
                spec, bind_arguments(self.agent, spec, args, kwargs)
            )
        return await call_tool(self, spec, args, kwargs)

    # ------------------------------------------------------------- the agent

    async def run(self) -> Any:
        """The agent's task: its begin playbook, then its message loop, phase by phase
        (see :mod:`durably._serving`)."""
        try:
            await run_phases(self)
        except ProgramExit:
            self.phase = "exit"  # a resumed run exits again at once
            self.frames.clear()
            raise

    async def serve(self, request: Message, *, frame: Frame | None = None) -> None:
        """Run the public playbook ``request`` asks for on this agent's stack and reply
        (see :func:`~durably._serving.serve_request`); ``frame``: the bottom frame a
        snapshot taken while serving it put back."""
        await serve_request(self, request, frame=frame)


async def _none() -> None:
    return None


__all__ = ["AgentTask"]


def _check_running(task: AgentTask) -> None:
    """Once the program has ended nothing more happens: the agents' tasks are being
    cancelled, and a ``finally:`` block of LLM code unwinding must not run (and journal)
    a durable operation after the end. And an operation is run only in the agent's own
    asyncio task (:class:`ConcurrentAwaitError`): its operations are journaled one at a
    time, in the order they are asked for."""
    if task.execution.outcome is not None:
        raise asyncio.CancelledError("the program has ended")
    own = task.execution.tasks.get(task.agent_id)
    if own is not None and asyncio.current_task() is not own:
        raise ConcurrentAwaitError(
            f"agent {task.agent_class.__name__}({task.agent_id}): a durable operation "
            "(Say, Yield, a playbook, a call to another agent) was awaited in a task of "
            "its own (asyncio.gather or create_task); an agent's operations "
            "are journaled one at a time: await them one after another"
        )
