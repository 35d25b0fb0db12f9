"""An agent's snapshot: taking it at a quiet point, and putting the agent back from it."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from durably._codeobjects import rebind_functions, snapshot_globals
from durably._journal import Frame, RestoredAgent, SnapshotDoc, user_input_number
from durably.errors import DurablyWarning, SerializationError

if TYPE_CHECKING:
    from durably._runtime import AgentTask

__all__ = ["SNAPSHOT_BYTES_PER_OPERATION", "restore_task", "snapshot_of"]

SNAPSHOT_BYTES_PER_OPERATION = 4096
"""At a quiet point, a snapshot is due once ``snapshot_every`` operations were journaled
since the agent's latest one *and* one per this many bytes that snapshot took to encode
(see :meth:`~durably._runtime.AgentTask.snapshot_interval`)."""


def snapshot_of(task: AgentTask) -> tuple[SnapshotDoc, dict[str, Any], dict[str, Any]]:
    """(snapshot document, state, locals) of an agent at a quiet point, for the codec."""
    frame = task.frames[0] if task.frames else None
    open_llm = []
    if frame is not None and frame.llm_index is not None:
        entry = task.journal.open_llm.get(frame.llm_index)
        if entry is not None:
            open_llm.append(entry)
    doc = SnapshotDoc(
        agent=task.agent_id,
        agent_class=task.agent_class.__name__,
        index=task.journal.index,
        phase=task.phase,
        frame=frame.to_doc() if frame is not None else None,
        open_llm=open_llm,
        inbox=list(task.mailbox.inbox),
        consumed=sorted(task.mailbox.consumed),
        transcript=task.journal.transcript,
        llm_log=task.journal.llm_log,
        llm_counts=task.journal.llm_counts,
        result=task.result,
        returned=task.begin_returned,
        inputs=task.execution.io.consumed,
        serving=task.serving,
    )
    state = task.agent.state.to_dict()
    local_vars = task.visible_locals(frame) if frame is not None else {}
    return doc, state, local_vars


def restore_task(
    task: AgentTask,
    restored: RestoredAgent,
    state: dict[str, Any],
    local_vars: dict[str, Any] | None,
) -> None:
    """Put an agent back as its last snapshot and later journal left it (before it runs):
    the frame it resumes in, its mailbox, its journal to replay, its share of the budgets."""
    snap = restored.snapshot
    task.journal.load(restored)
    task.mailbox.restore(snap.inbox, snap.consumed)
    task.phase = snap.phase
    task.agent.state.to_dict().update(state)
    task.result = snap.result
    task.begin_returned = snap.returned
    task.serving = snap.serving
    calls, tokens = restored.budget_used()
    task.execution.calls_used += calls
    task.execution.tokens_used += tokens
    # The user's inputs are one sequence for all agents: whatever any agent consumed
    # before the crash is consumed, whichever agent replays first.
    io = task.execution.io
    io.consumed = max(
        io.consumed,
        snap.inputs,
        *(
            number + 1
            for entry in task.journal.replay.values()
            if entry.kind == "yield" and (number := user_input_number(entry.result)) is not None
        ),
    )
    namespace = task.new_namespace(local_vars or {})
    if snap.frame is not None:
        task.resume_frame = Frame.from_doc(
            snap.frame,
            namespace,
            default_number=task.journal.llm_counts.get(snap.frame["playbook"], 1) - 1,
        )
    # Functions LLM code defined, wherever the frame, its loop's sequence or the state
    # holds them.
    loop = task.resume_frame.loop if task.resume_frame is not None else None
    rebind_functions(namespace, list(local_vars or ()), task.agent.state.to_dict(), loop)


def snapshot_deferred(task: AgentTask, problem: SerializationError) -> None:
    """A snapshot of ``task``'s agent waits (``on_unserializable = "replay"``): ``problem``
    says which frame variable it could not hold. Warns once per variable: the agent's
    operations are journaled as always, and a resume replays them from its latest
    snapshot, so it stays exact, only longer."""
    if problem.path in task.deferred:
        return
    task.deferred.add(problem.path)
    warnings.warn(
        f"{problem}: agent {task.agent_id} is not snapshotted while it holds this value "
        "(a resume replays its operations from its latest snapshot; "
        'on_unserializable = "error" fails the run instead)',
        DurablyWarning,
        stacklevel=3,
    )


@contextmanager
def frame_globals(task: AgentTask) -> Iterator[None]:
    """While ``task``'s agent is snapshotted: the functions the snapshot can hold are
    those whose globals are the namespace of the frame it holds, in which a restore
    re-creates them (none when it holds no frame; see ``snapshot_globals``)."""
    token = snapshot_globals.set(task.frames[0].namespace if task.frames else {})
    try:
        yield
    finally:
        snapshot_globals.reset(token)
