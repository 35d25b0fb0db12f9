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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from durably._executor import (
    ControlFlow,
    EndTurn,
    PlaybookReturn,
    ProgramExit,
    StreamingPythonExecutor,
)
from durably._journal import (
    DeltaDoc,
    Entry,
    Frame,
    LLMAppend,
    LLMEntry,
    LLMRecord,
    Message,
    RestoredAgent,
    SnapshotDoc,
    TranscriptItem,
    digest,
    usage_tokens,
)
from durably.errors import (
    DivergenceError,
    DurablyError,
    IncompleteExecutionError,
    SerializationError,
)

if TYPE_CHECKING:
    from durably.agent import Agent, AgentHandle, PlaybookSpec
    from durably.checkpoint import CheckpointManager

from durably.llm import (
    Finish,
    IncompleteResponseError,
    LLMBudgetExceededError,
    LLMError,
    LLMLimits,
    NoCodeError,
)

log = logging.getLogger("durably.runtime")

PROCESS_MESSAGES = "ProcessMessages"


class AgentTask:
    """Runs one agent: its call stack, journal, inbox, and the durable operations."""

    def __init__(self, execution: Execution, agent_id: str, agent_class: type[Agent]) -> None:
        self.execution = execution
        self.agent_id = agent_id
        self.agent_class = agent_class
        self.agent: Agent = agent_class(self)
        self.frames: list[Frame] = []
        self.index = 0
        self.replay: dict[int, Entry] = {}
        self.replay_llm: dict[int, LLMEntry] = {}
        self.replay_logs: dict[int, LLMRecord] = {}
        self.open_llm: dict[int, LLMEntry] = {}
        self.llm_appends: dict[int, list[Any]] = {}
        self.snapshot_seq: int | None = None
        self.ops_since_snapshot = 0
        self.inbox: list[Message] = []
        self.consumed: set[str] = set()
        self.seen: set[str] = set()
        self.inbox_changed = asyncio.Event()
        self.transcript: list[TranscriptItem] = []
        self.llm_log: list[LLMRecord] = []
        self.unwritten_log: list[LLMRecord] = []
        """LLM calls that ended since the last write; deltas carry them for ``show``."""
        self.llm_counts: dict[str, int] = {}
        self.phase = "start"
        self.serving: Message | None = None
        """The request the bottom frame serves (phase ``serve``)."""
        self.begin_returned = False
        self.finished = False
        """The agent ran ``Yield("exit")``: its task is over."""
        self.result: Any = None
        self.waiting: Callable[[Message], bool] | None = None
        self.waiting_for = ""
        """What the agent waits for, while it does (``inbox``, ``yield:1001``, ...)."""
        self.standalone = False
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

    def standalone_frame(self) -> Frame:
        """The frame the seed API's executor runs in (no LLM client involved)."""
        if not self.frames:
            frame = Frame("Main", self.new_namespace())
            frame.calls = 1
            frame.llm_index = self._next_index()
            entry = LLMEntry(frame.llm_index, "standalone", "Main", [])
            self.open_llm[entry.index] = entry
            self.frames.append(frame)
        return self.frames[-1]

    async def standalone_text(self, frame: Frame, chunk: str) -> None:
        assert frame.llm_index is not None
        if self.snapshot_seq is None:
            await self.snapshot()
        entry = self.open_llm[frame.llm_index]
        entry.append(chunk)
        self.llm_appends.setdefault(entry.index, []).append(chunk)

    @property
    def call_stack(self) -> list[str]:
        return [frame.stack_label for frame in self.frames]

    @property
    def has_begin(self) -> bool:
        return any(spec.begin for spec in self.agent_class.playbooks.values())

    # ------------------------------------------------------------------ journal

    def _next_index(self) -> int:
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
        """
        self._check_running()
        index = self._next_index()
        key = digest([kind, args])
        recorded = self.replay.pop(index, None)
        if recorded is not None:
            if recorded.kind != kind or recorded.key != key:
                raise self._divergence(index, kind, recorded.kind)
            # Counted as when it was committed: snapshots then come at the same points as
            # in a run that never crashed (and `show` says the same about it).
            self.ops_since_snapshot += 1
            if apply is not None:
                apply(recorded.result)
            if recorded.span > 1:
                self._skip_span(index, recorded)
            if recorded.effects and ("state" in recorded.effects
                                     or "unset" in recorded.effects):
                self._apply_effects({k: v for k, v in recorded.effects.items()
                                     if k in ("state", "unset")})
            if recorded.error is not None:
                raise _rebuild_error(recorded.error)
            return recorded.result
        self._check_live(index, kind)
        try:
            result = await live()
        except (ControlFlow, DurablyError, asyncio.CancelledError):
            raise
        except Exception as exc:
            if not journal_errors:
                raise
            entry = Entry(index, kind, key, error=[type(exc).__name__, str(exc)],
                          span=self.index - index,
                          effects=_merge_effects(effects, effects_after, None))
            await self.commit(entry)
            raise
        entry = Entry(index, kind, key, result=result, span=self.index - index,
                      effects=_merge_effects(effects, effects_after, result))
        if apply is not None:
            apply(result)
        await self.commit(entry)
        return result

    def _check_running(self) -> None:
        """Once the program has ended nothing more happens: the agents' tasks are being
        cancelled, and a ``finally:`` block of LLM code unwinding must not run (and
        journal) a durable operation after the end."""
        if self.execution.outcome is not None:
            raise asyncio.CancelledError("the program has ended")

    def _divergence(self, index: int, asked: str, recorded: str) -> DivergenceError:
        frame = self.frames[-1] if self.frames else None
        where = ""
        if frame is not None and frame.current is not None:
            text = self.open_llm.get(frame.llm_index or -1)
            if text is not None:
                where = f" in statement {text.text[frame.current[0]:frame.current[1]]!r}"
        return DivergenceError(
            f"agent {self.agent_id}: replay diverged at operation {index}{where}: the journal "
            f"recorded {recorded!r} but the code now asks for {asked!r} (or with other "
            "arguments). The program, its inputs or the LLM code changed, or the code between "
            "awaits is not deterministic."
        )

    def _check_live(self, index: int, kind: str) -> None:
        if self.replay and min(self.replay) < index:
            missing = min(self.replay)
            raise DivergenceError(
                f"agent {self.agent_id}: replay skipped journaled operation {missing} "
                f"({self.replay[missing].kind!r}) and asked for {kind!r} instead")

    def _skip_span(self, index: int, recorded: Entry) -> None:
        """A journaled tool call also covers the operations it awaited (a tool may run an
        LLM playbook, call another agent, say things): the tool is not run again, so
        re-apply what those operations did to this agent and move past them."""
        for inner in range(index + 1, index + recorded.span):
            entry = self.replay.pop(inner, None)
            if entry is not None:
                self.ops_since_snapshot += 1
                if entry.effects:  # the state: the tool's own entry has it all, in order
                    self._apply_effects({k: v for k, v in entry.effects.items()
                                         if k not in ("state", "unset")})
                if entry.kind == "receive" and isinstance(entry.result, list):
                    self._consume({doc["id"] for doc in entry.result})
            llm = self.replay_llm.pop(inner, None)
            if llm is not None:  # an LLM call of a playbook the tool ran
                self.llm_counts[llm.playbook] = self.llm_counts.get(llm.playbook, 0) + 1
                item = self.replay_logs.pop(inner, None)
                if item is not None:
                    self.llm_log.append(item)
        self.index = index + recorded.span

    def _consume(self, ids: set[str]) -> None:
        """Messages ``ids`` were taken from the inbox."""
        self.inbox = [m for m in self.inbox if m.id not in ids]
        self.consumed |= ids
        self.seen |= ids

    def _apply_effects(self, effects: Mapping[str, Any]) -> None:
        for name, value in effects.get("state", {}).items():
            setattr(self.agent.state, name, value)
        for name in effects.get("unset", []):
            self.agent.state.to_dict().pop(name, None)
        for item in effects.get("transcript", []):
            self.transcript.append(item)
        for doc in effects.get("messages", []):
            self.execution.deliver(Message.from_doc(doc))

    async def commit(self, entry: Entry) -> None:
        """Make a completed operation durable (with the LLM text received so far)."""
        self.ops_since_snapshot += 1
        await self.execution.write_delta(self, [entry])

    def take_llm_appends(self) -> list[LLMAppend]:
        """The LLM text that arrived since the last checkpoint, for the next delta."""
        appends = [entry.append_doc("".join(chunks))
                   for index, chunks in self.llm_appends.items()
                   if (entry := self.open_llm.get(index)) is not None]
        self.llm_appends.clear()
        return appends

    # ----------------------------------------------------------- quiet points

    @property
    def quiet(self) -> bool:
        """Nothing of the agent is suspended but its bottom frame, between statements: no
        nested frame, and no Python playbook (tool) running -- a tool is a Python frame
        that no snapshot can hold, even when the LLM playbook it awaits is the only frame
        on the stack (a public tool served at the bottom)."""
        return len(self.frames) <= 1 and not self.tools_running

    async def statement_done(self, frame: Frame) -> None:
        # The seed API shows `checkpoint.namespace` after every statement that awaited.
        every = 1 if self.standalone else self.execution.manager.config.snapshot_every
        if self.quiet and self.ops_since_snapshot >= every:
            await self.snapshot()

    async def snapshot(self) -> None:
        await self.execution.write_snapshot(self)
        self.ops_since_snapshot = 0

    def snapshot_doc(self) -> tuple[SnapshotDoc, dict[str, Any], dict[str, Any]]:
        """(snapshot document, state, locals) for the codec."""
        frame = self.frames[0] if self.frames else None
        open_llm = []
        if frame is not None and frame.llm_index is not None:
            entry = self.open_llm.get(frame.llm_index)
            if entry is not None:
                open_llm.append(entry)
        doc = SnapshotDoc(
            agent=self.agent_id, agent_class=self.agent_class.__name__, index=self.index,
            phase=self.phase, frame=frame.to_doc() if frame is not None else None,
            open_llm=open_llm, inbox=list(self.inbox), consumed=sorted(self.consumed),
            transcript=self.transcript, llm_log=self.llm_log, llm_counts=self.llm_counts,
            result=self.result, returned=self.begin_returned,
            inputs=self.execution.io.consumed, serving=self.serving)
        state = self.agent.state.to_dict()
        local_vars = self.visible_locals(frame) if frame is not None else {}
        return doc, state, local_vars

    def restore(self, restored: RestoredAgent, state: dict[str, Any],
                local_vars: dict[str, Any] | None) -> None:
        snap = restored.snapshot
        self.snapshot_seq = restored.seq
        self.index = snap.index
        self.phase = snap.phase
        self.agent.state.to_dict().update(state)
        self.inbox = list(snap.inbox)
        self.consumed = set(snap.consumed)
        self.seen = self.consumed | {m.id for m in self.inbox}
        self.transcript = list(snap.transcript)
        self.llm_log = list(snap.llm_log)
        self.llm_counts = dict(snap.llm_counts)
        self.result = snap.result
        self.begin_returned = snap.returned
        self.serving = snap.serving
        self.replay = dict(restored.entries)
        self.replay_llm = dict(restored.llm)
        self.replay_logs = dict(restored.logs)
        calls, tokens = restored.budget_used()
        self.execution.calls_used += calls
        self.execution.tokens_used += tokens
        # The user's inputs are one sequence for all agents: whatever any agent consumed
        # before the crash is consumed, whichever agent replays first.
        io = self.execution.io
        io.consumed = max(io.consumed, snap.inputs, *(
            entry.result["n"] + 1 for entry in self.replay.values()
            if entry.kind == "yield" and isinstance(entry.result, dict) and "n" in entry.result))
        if snap.frame is not None:
            frame = Frame.from_doc(snap.frame, self.new_namespace(local_vars or {}),
                                   default_number=self.llm_counts.get(snap.frame["playbook"],
                                                                      1) - 1)
            _rebind_functions(frame.namespace)
            self._resume_frame = frame
            if self.standalone:
                self.frames = [frame]
                if frame.llm_index is not None and frame.llm_index in self.replay_llm:
                    self.open_llm[frame.llm_index] = self.replay_llm.pop(frame.llm_index)

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
            index = self.index

            async def live() -> dict[str, Any]:
                execution.io.say(self.agent_class.__name__, self.agent_id, text)
                return {"agent": self.agent_class.__name__, "id": self.agent_id, "text": text,
                        "index": index, "after": execution.manager.next_seq}

            await self.op("say", ["user", text], live, apply=self.transcript.append,
                          effects_after=lambda item: {"transcript": [item]})
            return
        message = Message(f"{self.agent_id}:{self.index}", self.agent_id, receiver, text)
        await self.op("say", [receiver, text], _none, apply=self._sender(message),
                      effects={"messages": [message.to_doc()]})

    def _sender(self, message: Message) -> Callable[[Any], None]:
        def deliver(_: Any) -> None:
            self.execution.deliver(message)

        return deliver

    def _response_ends(self) -> None:
        """The statement running now ends the current LLM response (a Return, a Yield for
        the next call or for exit): what follows it in the stream will never run, so the
        response counts as received -- and the next checkpoint says so."""
        if not self.frames or self.frames[-1].llm_index is None:
            return
        entry = self.open_llm.get(self.frames[-1].llm_index)
        if entry is not None and not entry.done:
            entry.done = True
            self.llm_appends.setdefault(entry.index, [])

    async def op_yield(self, target: Any) -> Any:
        if target in ("call",):
            self._response_ends()
            await self.op("yield", "call", _none)
            raise EndTurn()
        if target in ("exit",):
            self._response_ends()
            await self.op("yield", "exit", _none)
            raise ProgramExit()
        if target is None or target == "user" or target == "human":
            io = self.execution.io

            async def ask() -> dict[str, Any]:
                number = io.consumed
                text = await io.ask(self.agent_class.__name__, self.agent_id)
                return {"n": number, "text": text}

            def consumed(answer: dict[str, Any]) -> None:
                io.consumed = max(io.consumed, answer["n"] + 1)

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
            while True:
                matching = choose(self.inbox)
                if matching:
                    return [m.to_doc() for m in matching]
                self.waiting, self.waiting_for = accept, kind
                self.inbox_changed.clear()
                self.execution.agent_waiting()
                try:
                    await self.inbox_changed.wait()
                finally:
                    self.waiting = None

        def apply(docs: list[dict[str, Any]]) -> None:
            self._consume({doc["id"] for doc in docs})

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
        self._response_ends()
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
        request_id = f"{self.agent_id}:{self.index}"
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
            return await self.run_llm_playbook(spec, self._bind(spec, args, kwargs))
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
        key = f"{self.execution.manager.execution_id}:{self.agent_id}:{self.index}"

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

    # ---------------------------------------------------------- the LLM loop

    async def run_llm_playbook(self, spec: PlaybookSpec | None, args: dict[str, Any],
                               *, frame: Frame | None = None, name: str | None = None) -> Any:
        """Run an LLM playbook to its end: call the LLM, run its code, repeat."""
        resuming = frame is not None and frame.llm_index is not None
        if frame is None:
            frame = Frame(name or (spec.name if spec else PROCESS_MESSAGES),
                          self.new_namespace(args))
        self.frames.append(frame)
        try:
            while True:
                if resuming:
                    resuming = False
                    stream = self._continue_llm(frame)
                else:
                    if self.quiet and self.ops_since_snapshot and not self.standalone:
                        await self.snapshot()
                    stream = self._start_llm(frame)
                executor = StreamingPythonExecutor(self.agent, frame)
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
            self.frames.pop()

    async def _execute(self, frame: Frame, stream: AsyncIterator[str],
                       executor: StreamingPythonExecutor) -> None:
        """Run a response's code as it streams in. Once the code ended (a ``Return``, a
        ``Yield``, an error, the closing fence), the rest of a request in flight is read
        for the provider's :class:`Finish` (its usage); it runs nothing."""
        try:
            async for chunk in stream:
                await executor._feed(chunk)
                if executor.stopped:
                    break
            await executor.finish()
        except ControlFlow:
            await self._drain(frame, stream)
            raise
        await self._drain(frame, stream)

    async def _drain(self, frame: Frame, stream: AsyncIterator[str]) -> None:
        entry = self.open_llm.get(frame.llm_index) if frame.llm_index is not None else None
        if entry is not None:
            entry.draining = True  # no new request just for the tail
        try:
            async for _ in stream:
                pass
        except LLMError as exc:  # the code had ended: what it ran stands
            log.warning("agent %s: the LLM response for %s ended badly after its code "
                        "(%s)", self.agent_id, frame.playbook, exc)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _response_received(self, frame: Frame) -> None:
        """A response that ended without a durable operation at its end (an error in the
        LLM code, trailing statements that awaited nothing): make it durable now, so that a
        crash before the next checkpoint cannot make the LLM be asked for it again."""
        if frame.llm_index is None or self.standalone:
            return
        entry = self.open_llm.get(frame.llm_index)
        if entry is None:
            return
        if not entry.done:
            entry.done = True
            self.llm_appends.setdefault(entry.index, [])
        if entry.index in self.llm_appends:
            await self.execution.write_delta(self, [])

    def _end_call(self, frame: Frame, executor: StreamingPythonExecutor, *,
                  no_code: bool = False) -> None:
        """A response ended: log it, and add it and the next instruction to the frame's
        conversation. A response that ran no code gets a corrective note instead; the
        next live call fails with :class:`NoCodeError` after two in a row."""
        entry = self.open_llm.pop(frame.llm_index, None) if frame.llm_index is not None else None
        response = executor.response
        if entry is not None:
            item: LLMRecord = {"agent": self.agent_class.__name__, "id": self.agent_id,
                               "playbook": frame.playbook, "index": entry.index,
                               "after": entry.after, "prompt": entry.prompt,
                               "response": response}
            if entry.usage is not None:
                item["usage"] = entry.usage
            self.llm_log.append(item)
            self.unwritten_log.append(item)
        note = f"{frame.stack_label} was executed - continue execution."
        frame.no_code = frame.no_code + 1 if no_code else 0
        if no_code:
            frame.error = None  # prose does not parse: that is not news to the model
            note = (f"Your answer ran no code. Answer with exactly one fenced ```python code "
                    f"block that continues playbook {frame.playbook}.")
        if frame.error:
            note = f"Error: {frame.error}\n{note}"
        frame.history.append({"role": "assistant", "content": response})
        frame.history.append({"role": "user", "content": note})
        frame.error = None
        frame.executed = 0
        frame.offset = 0
        frame.llm_index = None

    async def _start_llm(self, frame: Frame) -> AsyncIterator[str]:
        from durably._prompts import build_prompt

        self._check_running()
        prompt = build_prompt(self, frame)
        if self.index not in self.replay_llm:
            self._check_budgets(frame)
        index = self._next_index()
        key = digest(prompt)
        frame.calls += 1
        frame.llm_index = index
        frame.executed = 0
        frame.offset = 0
        count_key = frame.playbook
        number = self.llm_counts.get(count_key, 0)
        self.llm_counts[count_key] = number + 1
        frame.number = number
        recorded = self.replay_llm.pop(index, None)
        if recorded is not None:
            if recorded.key != key:
                raise DivergenceError(
                    f"agent {self.agent_id}: replay diverged at LLM call {index} of "
                    f"{frame.playbook}: the prompt differs from the journaled one (the program "
                    "or the code between awaits changed)")
            entry = recorded
        else:
            self._check_live(index, "llm")
            self.execution.calls_used += 1
            entry = LLMEntry(index, key, frame.playbook, prompt,
                             after=self.execution.manager.next_seq)
        self.open_llm[index] = entry
        async for chunk in self._stream(frame, entry, number):
            yield chunk

    def _check_budgets(self, frame: Frame) -> None:
        """Before a live LLM call: the ``[llm]`` budgets and the no-code rule."""
        execution = self.execution
        limits = execution.limits
        if frame.no_code >= 2:
            if not execution.retrying:
                raise NoCodeError(
                    f"agent {self.agent_id}: the LLM answered playbook {frame.playbook} "
                    f"{frame.no_code} times in a row without code, once after a corrective "
                    "note; check the model (--llm) and resume the execution")
            frame.no_code = 0  # a resume after this failure: the user changed something
        if limits.max_calls and execution.calls_used >= limits.max_calls:
            raise LLMBudgetExceededError("max_calls", limits.max_calls, execution.calls_used,
                                         "LLM calls of this execution")
        per_run = limits.max_calls_per_playbook_run
        if per_run and frame.calls >= per_run:
            raise LLMBudgetExceededError(
                "max_calls_per_playbook_run", per_run, frame.calls,
                f"agent {self.agent_id} ran playbook {frame.playbook} without it returning")
        if limits.max_tokens and execution.tokens_used >= limits.max_tokens:
            raise LLMBudgetExceededError("max_tokens", limits.max_tokens, execution.tokens_used,
                                         "tokens of this execution, as providers reported")

    async def _continue_llm(self, frame: Frame) -> AsyncIterator[str]:
        assert frame.llm_index is not None
        entry = self.replay_llm.pop(frame.llm_index, None) or self.open_llm.get(frame.llm_index)
        if entry is None:
            raise DurablyError(f"agent {self.agent_id}: the journal lost LLM call "
                               f"{frame.llm_index} of {frame.playbook}")
        self.open_llm[entry.index] = entry
        async for chunk in self._stream(frame, entry, frame.number):
            yield chunk

    async def _stream(self, frame: Frame, entry: LLMEntry, number: int) -> AsyncIterator[str]:
        if entry.text:
            yield entry.text
        if entry.done:
            return
        client = self.execution.llm
        agent_class = self.agent_class.__name__
        execution = self.execution
        execution.llm_calls_live += 1
        execution.llm_streaming = True
        started = execution.clock()
        continued = 0
        requested = False
        finish: Finish | None = None
        try:
            while not entry.draining:
                requested = True
                try:
                    async for chunk in client.stream(entry.prompt, agent=agent_class,
                                                     playbook=frame.playbook, call=number,
                                                     prefix=entry.text):
                        if isinstance(chunk, Finish):
                            finish = chunk
                            self._finished(entry, finish, started, continued)
                            continue
                        if finish is not None:
                            raise LLMError(f"the LLM client {client.spec!r} sent text after "
                                           "the end of the response")
                        if not chunk:
                            continue
                        entry.append(chunk)
                        self.llm_appends.setdefault(entry.index, []).append(chunk)
                        yield chunk
                    break
                except IncompleteResponseError as exc:
                    # What arrived is journaled; the rest is asked for from there.
                    if (not exc.retryable or entry.draining
                            or continued >= execution.limits.max_continuations):
                        if self.llm_appends.get(entry.index) and not entry.draining:
                            # Keep what arrived: a resume continues it, never asks anew.
                            await execution.write_delta(self, [])
                        raise
                    continued += 1
                    log.warning("agent %s: the LLM response for %s was cut off (%s); "
                                "continuing it (%d of %d)", self.agent_id, frame.playbook, exc,
                                continued, execution.limits.max_continuations)
        finally:
            execution.llm_streaming = False
        if not requested:
            return  # replayed up to where its code ended: nothing more is needed
        if finish is None:  # a client that does not report the end: taken at its word
            self._finished(entry, Finish(reason=""), started, continued)
            entry.usage = {**(entry.usage or {}), "finish": None}
        entry.done = True
        self.llm_appends.setdefault(entry.index, [])

    def _finished(self, entry: LLMEntry, finish: Finish, started: float,
                  continued: int) -> None:
        """The provider said the response is complete: record what it cost."""
        entry.usage = {"model": finish.model, "prompt_tokens": finish.prompt_tokens,
                       "completion_tokens": finish.completion_tokens,
                       "finish": finish.reason,
                       "latency_ms": round((self.execution.clock() - started) * 1000, 1),
                       "continuations": continued}
        self.execution.tokens_used += usage_tokens(entry.usage)

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
            if self.snapshot_seq is None:
                await self.snapshot()
            self.phase = "begin" if begin is not None else "idle"
        if self.phase == "begin" and begin is not None:
            value = await self.run_llm_playbook(begin, {}, frame=frame)
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
            await self.run_llm_playbook(None, {}, frame=frame)
        elif frame is not None:
            raise DurablyError(
                f"agent {self.agent_id}: its snapshot holds a frame of {frame.playbook} but "
                f"does not say what the frame works for (phase {self.phase!r}); a snapshot "
                "written by an older durably while the agent served another agent's request "
                "cannot be resumed exactly: fork the execution at an earlier LLM call")
        while True:
            self.phase = "idle"
            if self.ops_since_snapshot:
                await self.snapshot()  # idle is a quiet point: keep the resume base recent
            messages = await self.receive(_is_work, "inbox", select=_next_work)
            if messages[0].kind == "request":
                await self._serve(messages[0])
            else:
                self.phase = "messages"
                rendered = [{"from": m.sender, "text": m.text, "id": m.id} for m in messages]
                await self.run_llm_playbook(None, {"messages": rendered}, name=PROCESS_MESSAGES)

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
                value = await self.run_llm_playbook(spec, {}, frame=frame)
            else:
                value = await self.call_playbook(spec, tuple(payload.get("args", [])),
                                                 dict(payload.get("kwargs", {})))
        except ControlFlow:
            raise
        except DurablyError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        reply = Message(f"{self.agent_id}:{self.index}", self.agent_id, request.sender, "",
                        kind="reply",
                        payload={"request": request.id, "value": value, "error": error})
        await self.op("reply", request.id, _none, apply=self._sender(reply),
                      effects={"messages": [reply.to_doc()]})
        if bottom:
            self.phase, self.serving = "idle", None


def _is_work(message: Message) -> bool:
    return message.kind in ("message", "request")


def _next_work(inbox: list[Message]) -> list[Message]:
    """What an idle agent takes from its inbox at once: the oldest request alone, or the
    plain messages that arrived before the next request (one ``ProcessMessages`` run)."""
    work = [m for m in inbox if _is_work(m)]
    if not work:
        return []
    if work[0].kind == "request":
        return work[:1]
    batch = []
    for message in work:
        if message.kind == "request":
            break
        batch.append(message)
    return batch


async def _none() -> None:
    return None


def _merge_effects(static: dict[str, Any] | None,
                   after: Callable[[Any], dict[str, Any] | None] | None,
                   result: Any) -> dict[str, Any] | None:
    extra = after(result) if after is not None else None
    if not extra:
        return static
    merged = dict(static or {})
    merged.update(extra)
    return merged


_BUILTIN_ERRORS = {
    name: obj for name, obj in vars(builtins).items()
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


def _rebind_functions(namespace: dict[str, Any]) -> None:
    """Re-create the functions LLM code defined, from their source, in their namespace."""
    import linecache
    import textwrap

    from durably.checkpoint import FunctionSource

    for name, value in list(namespace.items()):
        if isinstance(value, FunctionSource):
            previous = namespace.get(value.name)
            source = textwrap.dedent(value.source)
            filename = f"<llm restored {name}>"
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            try:
                exec(compile(source, filename, "exec"), namespace)
            except Exception as exc:
                raise SerializationError(f"{name!r}", f"cannot re-create function: {exc}") from exc
            if value.name == "<lambda>":
                continue  # the statement assigned it to `name` again
            namespace[name] = namespace[value.name]
            if isinstance(namespace[name], type):
                namespace[name].__durably_source__ = filename
            if value.name != name and previous is not None:
                namespace[value.name] = previous


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

    # ------------------------------------------------------------------ agents

    def create_agent(self, cls: type[Agent], agent_id: str | None = None) -> AgentTask:
        if agent_id is None:
            agent_id = str(self.next_agent_id)
        self.next_agent_id = max(self.next_agent_id, int(agent_id) + 1)
        task = AgentTask(self, agent_id, cls)
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
            if task.finished:
                continue
            accept = task.waiting
            if accept is None or any(accept(m) for m in task.inbox):
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
        if message.id in task.seen:
            return
        task.seen.add(message.id)
        task.inbox.append(message)
        task.inbox_changed.set()

    # ----------------------------------------------------------- checkpoints

    async def write_delta(self, task: AgentTask, entries: list[Entry]) -> None:
        delta = DeltaDoc(task.agent_id, entries, task.take_llm_appends(), task.unwritten_log)
        task.unwritten_log = []
        seq = await self.manager.write(self, task, delta.to_doc(), kind="delta")
        for entry in entries:
            entry.seq = seq
        for llm_entry in task.open_llm.values():
            if llm_entry.seq is None:
                llm_entry.seq = seq

    async def write_snapshot(self, task: AgentTask) -> None:
        doc, state, local_vars = task.snapshot_doc()
        task.llm_appends.clear()
        task.unwritten_log = []
        seq = await self.manager.write(self, task, doc.to_doc(), kind="snapshot", state=state,
                                       local_vars=local_vars)
        task.snapshot_seq = seq
        for entry in task.open_llm.values():
            if entry.seq is None:
                entry.seq = seq

    def manifest(self) -> dict[str, int]:
        return {agent_id: task.snapshot_seq for agent_id, task in self.agents.items()
                if task.snapshot_seq is not None}

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
