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
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from durably._codeobjects import rebind_functions
from durably._executor import ControlFlow, EndTurn, PlaybookReturn, ProgramExit
from durably._journal import (
    DeltaDoc,
    Entry,
    Frame,
    Message,
    RestoredAgent,
    SnapshotDoc,
    user_input,
    user_input_number,
)
from durably._llmloop import PROCESS_MESSAGES, PlaybookLoop
from durably._mailbox import Mailbox, is_work, next_work
from durably._replay import Journal
from durably.errors import DurablyError, IncompleteExecutionError
from durably.llm import LLMLimits

if TYPE_CHECKING:
    from durably.agent import Agent, AgentHandle, PlaybookSpec
    from durably.checkpoint import CheckpointManager

log = logging.getLogger("durably.runtime")



class AgentTask:
    """Runs one agent: its call stack, its durable operations, and the requests it serves.

    Its parts: :attr:`journal` (:class:`~durably._replay.Journal`: op numbering, replay,
    what checkpoints carry), :attr:`mailbox` (:class:`~durably._mailbox.Mailbox`) and
    :attr:`loop` (:class:`~durably._llmloop.PlaybookLoop`: LLM playbooks).
    """

    loop_class: ClassVar[type[PlaybookLoop]] = PlaybookLoop
    standalone: ClassVar[bool] = False
    """The seed API's agents (:mod:`durably._seed`) are fed LLM text by their caller."""

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
        self._resume_frame: Frame | None = None
        self._injected: dict[str, Any] = {}

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
            name: value for name, value in frame.namespace.items()
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

    async def op(self, kind: str, args: Any, live: Callable[[], Awaitable[Any]],
                 **options: Any) -> Any:
        """Run a durable operation of this agent (see :meth:`Journal.op`); nothing runs
        once the program has ended."""
        self.check_running()
        return await self.journal.op(kind, args, live, **options)

    def check_running(self) -> None:
        """Once the program has ended nothing more happens: the agents' tasks are being
        cancelled, and a ``finally:`` block of LLM code unwinding must not run (and
        journal) a durable operation after the end."""
        if self.execution.outcome is not None:
            raise asyncio.CancelledError("the program has ended")

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

    async def write_delta(self, entries: list[Entry]) -> None:
        await self.execution.write_delta(self, entries)

    def current_statement(self) -> str | None:
        frame = self.frames[-1] if self.frames else None
        if frame is None or frame.current is None:
            return None
        entry = self.journal.open_llm.get(frame.llm_index or -1)
        return entry.text[frame.current[0]:frame.current[1]] if entry is not None else None

    # ----------------------------------------------------------- quiet points

    @property
    def quiet(self) -> bool:
        """Nothing of the agent is suspended but its bottom frame, between statements: no
        nested frame, and no Python playbook (tool) running -- a tool is a Python frame
        that no snapshot can hold, even when the LLM playbook it awaits is the only frame
        on the stack (a public tool served at the bottom)."""
        return len(self.frames) <= 1 and not self.tools_running

    @property
    def snapshot_every(self) -> int:
        """Operations between two snapshots at quiet points."""
        return self.execution.manager.config.snapshot_every

    async def statement_done(self, frame: Frame) -> None:
        # The seed API shows `checkpoint.namespace` after every statement that awaited.
        if self.quiet and self.journal.ops_since_snapshot >= self.snapshot_every:
            await self.snapshot()

    async def snapshot(self) -> None:
        await self.execution.write_snapshot(self)
        self.journal.ops_since_snapshot = 0

    def snapshot_doc(self) -> tuple[SnapshotDoc, dict[str, Any], dict[str, Any]]:
        """(snapshot document, state, locals) for the codec."""
        frame = self.frames[0] if self.frames else None
        open_llm = []
        if frame is not None and frame.llm_index is not None:
            entry = self.journal.open_llm.get(frame.llm_index)
            if entry is not None:
                open_llm.append(entry)
        doc = SnapshotDoc(
            agent=self.agent_id, agent_class=self.agent_class.__name__,
            index=self.journal.index, phase=self.phase,
            frame=frame.to_doc() if frame is not None else None, open_llm=open_llm,
            inbox=list(self.mailbox.inbox), consumed=sorted(self.mailbox.consumed),
            transcript=self.journal.transcript, llm_log=self.journal.llm_log,
            llm_counts=self.journal.llm_counts,
            result=self.result, returned=self.begin_returned,
            inputs=self.execution.io.consumed, serving=self.serving)
        state = self.agent.state.to_dict()
        local_vars = self.visible_locals(frame) if frame is not None else {}
        return doc, state, local_vars

    def restore(self, restored: RestoredAgent, state: dict[str, Any],
                local_vars: dict[str, Any] | None) -> None:
        snap = restored.snapshot
        self.journal.load(restored)
        self.mailbox.restore(snap.inbox, snap.consumed)
        self.phase = snap.phase
        self.agent.state.to_dict().update(state)
        self.result = snap.result
        self.begin_returned = snap.returned
        self.serving = snap.serving
        calls, tokens = restored.budget_used()
        self.execution.calls_used += calls
        self.execution.tokens_used += tokens
        # The user's inputs are one sequence for all agents: whatever any agent consumed
        # before the crash is consumed, whichever agent replays first.
        io = self.execution.io
        io.consumed = max(io.consumed, snap.inputs, *(
            number + 1 for entry in self.journal.replay.values()
            if entry.kind == "yield"
            and (number := user_input_number(entry.result)) is not None))
        if snap.frame is not None:
            frame = Frame.from_doc(snap.frame, self.new_namespace(local_vars or {}),
                                   default_number=self.journal.llm_counts.get(
                                       snap.frame["playbook"], 1) - 1)
            rebind_functions(frame.namespace)
            self._resume_frame = frame

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
                execution.io.say(self.agent_class.__name__, self.agent_id, text)
                return {"agent": self.agent_class.__name__, "id": self.agent_id, "text": text,
                        "index": index, "after": execution.manager.next_seq}

            await self.op("say", ["user", text], live, apply=self.journal.transcript.append,
                          effects_after=lambda item: {"transcript": [item]})
            return
        message = Message(f"{self.agent_id}:{self.journal.index}", self.agent_id, receiver, text)
        await self.op("say", [receiver, text], _none, apply=self._sender(message),
                      effects={"messages": [message.to_doc()]})

    def _sender(self, message: Message) -> Callable[[Any], None]:
        def deliver(_: Any) -> None:
            self.execution.deliver(message)

        return deliver

    async def op_yield(self, target: Any) -> Any:
        if target in ("call",):
            self.loop.response_ends()
            await self.op("yield", "call", _none)
            raise EndTurn()
        if target in ("exit",):
            self.loop.response_ends()
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
        messages = await self.wait_for(lambda m: m.sender == sender and m.kind == "message",
                                       f"yield:{sender}")
        return "\n".join(m.text for m in messages) if messages else None

    async def receive(self, accept: Callable[[Message], bool], kind: str, *,
                      select: Callable[[list[Message]], list[Message]] | None = None,
                      ) -> list[Message]:
        """Wait for messages accepted by ``accept``; journaled with their ids.

        ``select`` picks which of the accepted messages to take at once (default: all).
        """

        def take_all(inbox: list[Message]) -> list[Message]:
            return [m for m in inbox if accept(m)]

        choose = select or take_all

        async def live() -> list[dict[str, Any]]:
            taken = await self.mailbox.wait(choose, accept, kind, self.execution.agent_waiting)
            return [m.to_doc() for m in taken]

        def apply(docs: list[dict[str, Any]]) -> None:
            self.mailbox.consume({doc["id"] for doc in docs})

        docs = await self.op("receive", kind, live, apply=apply)
        return [Message.from_doc(doc) for doc in docs]

    async def wait_for(self, accept: Callable[[Message], bool], kind: str) -> list[Message]:
        """Wait for messages accepted by ``accept``, serving the requests that arrive
        meanwhile: an agent waiting for another agent can be called back by it (or by a
        third one) without a deadlock."""

        def select(inbox: list[Message]) -> list[Message]:
            wanted = [m for m in inbox if accept(m)]
            if wanted:
                return wanted
            return next(([m] for m in inbox if m.kind == "request"), [])

        while True:
            taken = await self.receive(lambda m: accept(m) or m.kind == "request", kind,
                                       select=select)
            if taken[0].kind == "request" and not accept(taken[0]):
                await self._serve(taken[0])
                continue
            return taken

    async def op_return(self, value: Any) -> None:
        self.loop.response_ends()
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

    async def op_call_remote(self, handle: AgentHandle, name: str, args: tuple[Any, ...],
                             kwargs: dict[str, Any]) -> Any:
        target = self.execution.agents.get(handle.id)
        if target is None:
            raise DurablyError(f"no agent {handle.id}")
        spec = target.agent_class.playbooks.get(name)
        if spec is None or not spec.public:
            raise AttributeError(f"{handle!r} has no public playbook {name!r}")
        request_id = f"{self.agent_id}:{self.journal.index}"
        request = Message(request_id, self.agent_id, handle.id, name, kind="request",
                          payload={"args": list(args), "kwargs": kwargs})
        await self.op("call", [handle.id, name, list(args), kwargs], _none,
                      apply=self._sender(request), effects={"messages": [request.to_doc()]})
        replies = await self.wait_for(
            lambda m: m.kind == "reply" and m.payload.get("request") == request_id,
            f"reply:{request_id}")
        reply = replies[0].payload
        if reply.get("error"):
            raise RuntimeError(reply["error"])
        return reply.get("value")

    async def call_playbook(self, spec: PlaybookSpec, args: tuple[Any, ...],
                            kwargs: dict[str, Any]) -> Any:
        if spec.llm:
            return await self.loop.run_llm_playbook(spec, self._bind(spec, args, kwargs))
        return await self._call_tool(spec, args, kwargs)

    def _bind(self, spec: PlaybookSpec, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> dict[str, Any]:
        import inspect

        assert spec.func is not None
        bound = inspect.signature(spec.func).bind(self.agent, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.pop(next(iter(values)))
        return values

    async def _call_tool(self, spec: PlaybookSpec, args: tuple[Any, ...],
                         kwargs: dict[str, Any]) -> Any:
        assert spec.func is not None
        func = spec.func
        codec = self.execution.manager.codec
        before: dict[str, bytes] = {}
        key = f"{self.execution.manager.execution_id}:{self.agent_id}:{self.journal.index}"

        async def live() -> Any:
            # Only a live call can change the state behind the journal's back (replay
            # re-applies the journaled changes), so only a live call pays for the diff.
            before.update((name, codec.encode_value(value))
                          for name, value in self.agent.state.to_dict().items())
            previous, self.idempotency_key = self.idempotency_key, key
            self.tools_running += 1
            try:
                return await func(self.agent, *args, **kwargs)
            finally:
                self.idempotency_key = previous
                self.tools_running -= 1

        def changed_state(_: Any) -> dict[str, Any] | None:
            """The state a live tool changed (in the order the variables now have) and the
            variables it deleted, journaled so that replay re-applies them."""
            state = self.agent.state.to_dict()
            changed = {name: value for name, value in state.items()
                       if before.get(name) != codec.encode_value(value)}
            unset = [name for name in before if name not in state]
            effects: dict[str, Any] = {}
            if changed:
                effects["state"] = changed
            if unset:
                effects["unset"] = unset
            return effects or None

        return await self.op(f"tool:{spec.name}", [list(args), kwargs], live,
                             journal_errors=True, effects_after=changed_state)

    # ------------------------------------------------------------- the agent

    async def run(self) -> Any:
        """The agent's task: its begin playbook, then its message loop.

        What the bottom frame is doing is the agent's *phase*, kept in every snapshot so
        that a resumed frame ends the way it would have: ``begin`` (its value is the
        agent's result), ``serve`` (its value is the reply to :attr:`serving`) or
        ``messages`` (a ``ProcessMessages`` run); ``idle`` between them.
        """
        try:
            await self._run()
        except ProgramExit:
            self.phase = "exit"  # a resumed run exits again at once
            self.frames.clear()
            raise

    async def _run(self) -> None:
        begin = next((s for s in self.agent_class.playbooks.values() if s.begin), None)
        frame, self._resume_frame = self._resume_frame, None
        if self.phase == "exit":
            raise ProgramExit()
        if self.phase == "start":
            if self.journal.snapshot_seq is None:
                await self.snapshot()
            self.phase = "begin" if begin is not None else "idle"
        if self.phase == "begin" and begin is not None:
            value = await self.loop.run_llm_playbook(begin, {}, frame=frame)
            self._begin_done(value)
        elif self.phase == "serve":
            if self.serving is None:
                raise DurablyError(f"agent {self.agent_id}: the snapshot says it serves a "
                                   "request but does not say which (corrupt checkpoint?)")
            await self._serve(self.serving, frame=frame)
        elif self.phase == "messages":
            if frame is None:
                raise DurablyError(f"agent {self.agent_id}: the snapshot says it processes "
                                   "messages but has no frame (corrupt checkpoint?)")
            await self.loop.run_llm_playbook(None, {}, frame=frame)
        elif frame is not None:
            raise DurablyError(
                f"agent {self.agent_id}: its snapshot holds a frame of {frame.playbook} but "
                f"does not say what the frame works for (phase {self.phase!r}); a snapshot "
                "written by an older durably while the agent served another agent's request "
                "cannot be resumed exactly: fork the execution at an earlier LLM call")
        while True:
            self.phase = "idle"
            if self.journal.ops_since_snapshot:
                await self.snapshot()  # idle is a quiet point: keep the resume base recent
            messages = await self.receive(is_work, "inbox", select=next_work)
            if messages[0].kind == "request":
                await self._serve(messages[0])
            else:
                self.phase = "messages"
                rendered = [{"from": m.sender, "text": m.text, "id": m.id} for m in messages]
                await self.loop.run_llm_playbook(None, {"messages": rendered},
                                                 name=PROCESS_MESSAGES)

    def _begin_done(self, value: Any) -> None:
        self.result = value
        self.begin_returned = True
        self.execution.agent_waiting()  # the program may be over

    async def _serve(self, request: Message, *, frame: Frame | None = None) -> None:
        """Run the public playbook ``request`` asks for on this agent's stack and reply.

        At the bottom of the stack (phase ``serve``) the request is recorded in
        snapshots, so that a frame resumed from one still sends the reply.
        """
        bottom = not self.frames
        if bottom:
            self.phase, self.serving = "serve", request
        spec = self.agent_class.playbooks.get(request.text)
        error = None
        value = None
        try:
            if spec is None or not spec.public:
                raise AttributeError(f"{self.agent_class.__name__} has no public playbook "
                                     f"{request.text!r}")
            payload = request.payload or {}
            if frame is not None:
                value = await self.loop.run_llm_playbook(spec, {}, frame=frame)
            else:
                value = await self.call_playbook(spec, tuple(payload.get("args", [])),
                                                 dict(payload.get("kwargs", {})))
        except ControlFlow:
            raise
        except DurablyError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        reply = Message(f"{self.agent_id}:{self.journal.index}", self.agent_id, request.sender, "",
                        kind="reply",
                        payload={"request": request.id, "value": value, "error": error})
        await self.op("reply", request.id, _none, apply=self._sender(reply),
                      effects={"messages": [reply.to_doc()]})
        if bottom:
            self.phase, self.serving = "idle", None


async def _none() -> None:
    return None


class UserIO:
    """Where agents' words to the user go, and where the user's answers come from."""

    def __init__(self, inputs: list[str] | None = None, *, interactive: bool = False,
                 echo: Callable[[str], None] | None = print) -> None:
        self.inputs = list(inputs or [])
        self.consumed = 0
        self.interactive = interactive
        self.echo = echo

    def say(self, agent: str, agent_id: str, text: str) -> None:
        if self.echo is not None:
            self.echo(f"{agent}: {text}")

    async def ask(self, agent: str, agent_id: str) -> str:
        if self.consumed < len(self.inputs):
            return self.inputs[self.consumed]
        if self.interactive:
            answer = await asyncio.to_thread(input, "> ")
            return answer
        raise DurablyError(
            f"{agent}({agent_id}) waits for the user's input, but no input is left: pass "
            "answers with --input (one per Yield(\"user\")) or run in a terminal")


class Execution:
    """One run of a program: its agents, its store, its LLM and its user."""

    def __init__(self, manager: CheckpointManager, *, program: Any = None, llm: Any = None,
                 io: UserIO | None = None, limits: LLMLimits | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.manager = manager
        self.clock = clock
        """Seconds, for the latency journaled with each LLM call (tests that compare the
        bytes of two runs' checkpoints pass a constant clock)."""
        self.program = program
        self.llm = llm
        self.limits = limits or LLMLimits()
        self.calls_used = 0
        """LLM calls this execution made, counting those of its journal (for budgets)."""
        self.tokens_used = 0
        """Tokens its LLM calls used, as providers reported them (for budgets)."""
        self.retrying = False
        """A resume of an execution that failed: a no-code failure is forgiven once."""
        self.io = io or UserIO()
        self.agents: dict[str, AgentTask] = {}
        self.next_agent_id = 1000
        self.program_names: dict[str, Any] = dict(program.names) if program is not None else {}
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.done: asyncio.Event | None = None
        """Set by :meth:`run`; agents start as tasks only once the execution runs."""
        self.outcome: tuple[str, Any] | None = None
        self.progress: Callable[[str, str, list[str]], None] | None = None
        """Called with (agent class, agent id, call stack) when an agent takes a step."""
        self.llm_calls_live = 0
        self.llm_streaming = False
        self.header: dict[str, Any] = {}
        self.exiting = False
        """An agent ran ``Yield("exit")``: the program ends when the others are idle."""
        self.settled: set[str] = set()
        """Agents with nothing suspended when the program ended (idle or exited)."""
        faults = getattr(manager, "faults", None)
        if faults is not None:  # DURABLY_CRASH_IN_LLM_CALL watches the LLM calls
            faults.llm_probe = lambda: (self.llm_calls_live, self.llm_streaming)

    # ------------------------------------------------------------------ agents

    def create_agent(self, cls: type[Agent], agent_id: str | None = None, *,
                     task_class: type[AgentTask] | None = None) -> AgentTask:
        if agent_id is None:
            agent_id = str(self.next_agent_id)
        self.next_agent_id = max(self.next_agent_id, int(agent_id) + 1)
        task = (task_class or AgentTask)(self, agent_id, cls)
        self.agents[agent_id] = task
        return task

    async def find_or_create(self, cls: type[Agent]) -> AgentTask:
        """The agent of class ``cls``; a new one is snapshotted before anyone can see it,
        so that every later checkpoint's manifest (and so every resume) knows it."""
        for task in self.agents.values():
            if task.agent_class is cls:
                return task
        task = self.create_agent(cls)
        await task.snapshot()
        self._start(task)
        return task

    def ensure_agent(self, agent_id: str, cls: type[Agent]) -> None:
        if agent_id not in self.agents:
            task = self.create_agent(cls, agent_id)
            self._start(task)

    def _start(self, task: AgentTask) -> None:
        if self.done is not None and task.agent_id not in self.tasks:
            self.tasks[task.agent_id] = asyncio.get_running_loop().create_task(
                self._guard(task), name=f"agent-{task.agent_id}")

    async def _guard(self, task: AgentTask) -> None:
        try:
            await task.run()
        except ProgramExit:
            self.exiting = True
            task.finished = True
            self.agent_waiting()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._finish("failed", exc)

    def begin_result(self) -> Any:
        """The program's result: what the first agent's begin playbook returned."""
        for task in self.agents.values():
            if task.has_begin:
                return task.result
        return None

    def _finish(self, status: str, value: Any) -> None:
        if self.outcome is None:
            self.outcome = (status, value)
        if self.done is not None:
            self.done.set()

    def agent_waiting(self) -> None:
        """Called when an agent blocks on its inbox (or exits): the program ends when every
        agent waits for a message that nobody can send any more.

        ``Yield("exit")`` ends the program the same way: once the other agents have finished
        what they are doing. Stopping them at once would make the end depend on how far
        each got when the exit ran (a scheduling accident); a resumed run could not repeat
        that, and the program's outcome would not be a function of its journal.
        """
        for task in self.agents.values():
            if not task.finished and not task.mailbox.blocked:
                return
        self._finish("completed", self.begin_result())

    @property
    def status_label(self) -> str:
        return "running" if self.outcome is None else self.outcome[0]

    def agent_class_named(self, name: str) -> type[Agent]:
        classes = list(self.program.agent_classes) if self.program is not None else []
        classes += [t.agent_class for t in self.agents.values()]
        for cls in classes:
            if cls.__name__ == name:
                found: type[Agent] = cls
                return found
        raise DurablyError(f"the program has no agent class {name!r} (it changed?)")

    def resolve_target(self, target: Any) -> str:
        from durably.agent import Agent, AgentHandle

        if isinstance(target, AgentHandle):
            return target.id
        if isinstance(target, Agent):
            return target.id
        text = str(target).strip()
        if text.lower() in ("user", "human"):
            return "user"
        if text.lower().startswith("agent "):
            text = text[6:].strip()
        if text in self.agents:
            return text
        for task in self.agents.values():
            if task.agent_class.__name__ == text:
                return task.agent_id
        raise DurablyError(f"unknown message target {target!r}")

    def deliver(self, message: Message) -> None:
        task = self.agents.get(message.receiver)
        if task is None:
            raise DurablyError(f"message to unknown agent {message.receiver}")
        task.mailbox.put(message)

    # ----------------------------------------------------------- checkpoints

    async def write_delta(self, task: AgentTask, entries: list[Entry]) -> None:
        journal = task.journal
        delta = DeltaDoc(task.agent_id, entries, journal.take_llm_appends(),
                         journal.unwritten_log)
        journal.unwritten_log = []
        seq = await self.manager.write(self, task.agent_id, delta.to_doc(), kind="delta")
        for entry in entries:
            entry.seq = seq
        journal.written(seq, snapshot=False)

    async def write_snapshot(self, task: AgentTask) -> None:
        doc, state, local_vars = task.snapshot_doc()
        task.journal.forget_pending()  # in the snapshot
        frame = task.frames[0].playbook if task.frames else "agent"
        seq = await self.manager.write(self, task.agent_id, doc.to_doc(), kind="snapshot",
                                       state=state, local_vars=local_vars, frame=frame)
        task.journal.written(seq, snapshot=True)

    def manifest(self) -> dict[str, int]:
        return {agent_id: task.journal.snapshot_seq for agent_id, task in self.agents.items()
                if task.journal.snapshot_seq is not None}

    # ------------------------------------------------------------------- run

    async def run(self, *, resume: bool = False) -> tuple[str, Any]:
        """Run (or resume) every agent until the program ends."""
        self.done = asyncio.Event()
        if not resume:
            for cls in self.program.agent_classes:
                if any(spec.begin for spec in cls.playbooks.values()):
                    self.create_agent(cls)
        for task in list(self.agents.values()):
            self._start(task)
        try:
            await self.done.wait()
            # Who ended at a quiet point (before cancelling unwinds every stack): only they
            # may get a final snapshot.
            self.settled = {agent_id for agent_id, task in self.agents.items()
                            if not task.frames and not task.tools_running}
            assert self.outcome is not None
            if self.outcome[0] == "completed":  # checked before the tasks unwind
                from durably._invariants import check_complete

                problems = check_complete(self)
                if problems:
                    self.outcome = ("failed", IncompleteExecutionError(
                        "the execution ended but cannot be complete: " + "; ".join(problems)
                        + ". Nothing was recorded as completed; the checkpoint history is "
                        "kept for `durably resume` and `durably fork`"))
        finally:
            for t in self.tasks.values():
                t.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        assert self.outcome is not None
        return self.outcome


__all__ = ["AgentTask", "Execution", "UserIO"]
