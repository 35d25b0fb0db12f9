"""One run of a program: its agents, its store, its LLM and its user.

:class:`Execution` starts each agent's task, routes messages between agents, decides when
the program is over (every agent waits for a message nobody can send any more), and
writes agents' checkpoints through the :class:`~durably.checkpoint.CheckpointManager`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from durably._executor import ProgramExit
from durably._journal import FIRST_AGENT_ID, DeltaDoc, Entry, Message
from durably._runtime import AgentTask
from durably._snapshots import frame_globals, snapshot_deferred
from durably.errors import DivergenceError, DurablyError, IncompleteExecutionError
from durably.llm import LLMLimits

if TYPE_CHECKING:
    from durably.agent import Agent
    from durably.checkpoint import CheckpointManager

__all__ = ["Execution", "UserIO"]


class UserIO:
    """Where agents' words to the user go, and where the user's answers come from."""

    def __init__(
        self,
        inputs: list[str] | None = None,
        *,
        interactive: bool = False,
        echo: Callable[[str], None] | None = print,
    ) -> None:
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
            'answers with --input (one per Yield("user")) or run in a terminal'
        )


class Execution:
    """One run of a program: its agents, its store, its LLM and its user."""

    def __init__(
        self,
        manager: CheckpointManager,
        *,
        program: Any = None,
        llm: Any = None,
        io: UserIO | None = None,
        limits: LLMLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
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
        self.next_agent_id = FIRST_AGENT_ID
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

    def create_agent(
        self,
        cls: type[Agent],
        agent_id: str | None = None,
        *,
        task_class: type[AgentTask] | None = None,
    ) -> AgentTask:
        if agent_id is None:
            # The lowest id no agent has: after a resume, the id of an agent whose
            # creation was not durable yet (while a later one's was) is given again, as
            # the run before the crash gave it. (The stored next_agent_id can be past
            # it: another agent's checkpoint may carry it before the creation snapshot.)
            number = FIRST_AGENT_ID
            while str(number) in self.agents:
                number += 1
            agent_id = str(number)
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

    def begin_agents(self) -> list[AgentTask]:
        """The agents the program starts with, one per class with a begin playbook,
        numbered from :data:`~durably._journal.FIRST_AGENT_ID` in the program's order --
        those a resume does not know yet included: an agent writes its first snapshot
        before it does anything, so one the store does not hold had done nothing when
        the process died (and had that same id), and it starts over.

        Raises:
            DivergenceError: The store holds another class's agent under such an id.
        """
        classes = self.program.begin_classes if self.program is not None else ()
        tasks = []
        for number, cls in enumerate(classes, FIRST_AGENT_ID):
            task = self.agents.get(str(number))
            if task is None:
                other = next((t for t in self.agents.values() if t.agent_class is cls), None)
                if other is not None:  # a history an older durably resumed
                    raise DivergenceError(
                        f"the store holds the {cls.__name__} as agent {other.agent_id}, "
                        f"but the program starts its {cls.__name__} as agent {number}: the "
                        "history was resumed without that agent's begin playbook"
                    )
                task = self.create_agent(cls, str(number))
            elif task.agent_class is not cls:
                raise DivergenceError(
                    f"agent {number} is a {task.agent_class.__name__} in the store, but "
                    f"the program starts a {cls.__name__} with that id: it changed since "
                    "the execution started"
                )
            tasks.append(task)
        return tasks

    def ensure_agent(self, agent_id: str, cls: type[Agent]) -> None:
        if agent_id not in self.agents:
            task = self.create_agent(cls, agent_id)
            self._start(task)

    def _start(self, task: AgentTask) -> None:
        if self.done is not None and task.agent_id not in self.tasks:
            self.tasks[task.agent_id] = asyncio.get_running_loop().create_task(
                self._guard(task), name=f"agent-{task.agent_id}"
            )

    async def _guard(self, task: AgentTask) -> None:
        try:
            await task.run()
        except ProgramExit:
            self.exiting = True
            task.finished = True
            self.agent_waiting()
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if self.outcome is not None or (current is not None and current.cancelling()):
                raise  # the program ended, or its run is being stopped
            # Nothing asked this agent to stop: the program raised it, or a call it
            # awaited ended cancelled by itself. The program failed, as with any other
            # exception (without this, no outcome: the run would wait forever).
            self._finish("failed", exc)
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

    async def write_delta(
        self, task: AgentTask, entries: list[Entry], announce: Callable[[], None] | None = None
    ) -> None:
        journal = task.journal
        delta = DeltaDoc(task.agent_id, entries, journal.take_llm_appends(), journal.unwritten_log)
        journal.unwritten_log = []
        seq = await self.manager.write(
            self, task.agent_id, delta.to_doc(), kind="delta", announce=announce
        )
        for entry in entries:
            entry.seq = seq
        journal.written(seq, snapshot=False)

    async def write_snapshot(self, task: AgentTask, *, unless_repeated: bool = False) -> bool:
        """Write a snapshot of ``task``'s agent; with ``unless_repeated``, not when it
        would repeat the agent's latest snapshot (nothing journaled since, and the same
        content: see :meth:`CheckpointManager.repeats_snapshot`). Under
        ``on_unserializable = "replay"``, not while a frame variable cannot be stored and
        the agent has a snapshot already (a resume replays from that one). False only
        then: the snapshot was deferred."""
        with frame_globals(task):  # the functions it can hold: its frame's
            doc, state, local_vars = task.snapshot_doc()
            frame = task.frames[0].playbook if task.frames else "agent"
            journal = task.journal
            if journal.snapshot_seq is not None:
                problem = self.manager.unstorable(local_vars, frame)
                if problem is not None:
                    snapshot_deferred(task, problem)
                    return False
            body = doc.to_doc()
            if (
                unless_repeated
                and journal.ops_since_snapshot == 0
                and self.manager.repeats_snapshot(
                    self, task.agent_id, body, state=state, local_vars=local_vars, frame=frame
                )
            ):
                return True
            journal.forget_pending()  # in the snapshot
            seq = await self.manager.write(
                self,
                task.agent_id,
                body,
                kind="snapshot",
                state=state,
                local_vars=local_vars,
                frame=frame,
            )
            task.journal.written(seq, snapshot=True)
            return True

    def manifest(self) -> dict[str, int]:
        return {
            agent_id: task.journal.snapshot_seq
            for agent_id, task in self.agents.items()
            if task.journal.snapshot_seq is not None
        }

    # ------------------------------------------------------------------- run

    async def run(self, *, resume: bool = False) -> tuple[str, Any]:
        """Run (or resume) every agent until the program ends."""
        self.done = asyncio.Event()
        if not resume:
            self.begin_agents()
        for task in list(self.agents.values()):
            self._start(task)
        try:
            await self.done.wait()
            # Who ended at a quiet point (before cancelling unwinds every stack): only they
            # may get a final snapshot.
            self.settled = {
                agent_id
                for agent_id, task in self.agents.items()
                if not task.frames and not task.tools_running
            }
            assert self.outcome is not None
            if self.outcome[0] == "completed":  # checked before the tasks unwind
                from durably._invariants import check_complete

                problems = check_complete(self)
                if problems:
                    self.outcome = (
                        "failed",
                        IncompleteExecutionError(
                            "the execution ended but cannot be complete: "
                            + "; ".join(problems)
                            + ". Nothing was recorded as completed; the checkpoint history is "
                            "kept for `durably resume` and `durably fork`"
                        ),
                    )
        finally:
            for t in self.tasks.values():
                t.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        assert self.outcome is not None
        return self.outcome
