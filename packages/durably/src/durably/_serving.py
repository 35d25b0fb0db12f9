"""An agent's life on its bottom frame: its begin playbook, then its message loop.

What the bottom frame of an agent is doing is the agent's *phase*, kept in every snapshot
so that a resumed frame ends the way it would have:

* ``start``: nothing ran yet (the agent's first snapshot is written before anything);
* ``begin``: its begin playbook runs; the playbook's value is the agent's result;
* ``serve``: a public playbook runs for another agent's request
  (:attr:`~durably._runtime.AgentTask.serving`); its value, or the error it raised, is
  the reply;
* ``messages``: a ``ProcessMessages`` run handles the plain messages that arrived;
* ``idle``: between them, waiting for work (a quiet point);
* ``exit``: the agent ran ``Yield("exit")``; a resumed run exits again at once.

Requests are also served above the bottom frame, while the agent waits for a message or
a reply (:func:`~durably._messaging.wait_for`): then the phase is not touched, the frame
that waits is in the snapshot's place.

Both entry points go through the task's methods (:meth:`AgentTask.run
<durably._runtime.AgentTask.run>`, :meth:`AgentTask.serve
<durably._runtime.AgentTask.serve>`), which is where tests and the seed API hook in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from durably._executor import ControlFlow, ProgramExit
from durably._journal import Frame, Message
from durably._llmloop import PROCESS_MESSAGES
from durably._mailbox import is_work, next_work
from durably._messaging import receive
from durably.errors import DurablyError

if TYPE_CHECKING:
    from durably._runtime import AgentTask

__all__ = ["run_phases", "serve_request"]


async def run_phases(task: AgentTask) -> None:
    """Run ``task``'s agent from the phase it is in (restored or new), then forever idle
    and serve what arrives. Raises :class:`ProgramExit` when the agent exits."""
    begin = next((s for s in task.agent_class.playbooks.values() if s.begin), None)
    frame, task.resume_frame = task.resume_frame, None
    if task.phase == "exit":
        raise ProgramExit()
    if task.phase == "start":
        if task.journal.snapshot_seq is None:
            await task.snapshot()
        task.phase = "begin" if begin is not None else "idle"
    if task.phase == "begin" and begin is not None:
        value = await task.loop.run_llm_playbook(begin, {}, frame=frame)
        task.result = value
        task.begin_returned = True
        task.execution.agent_waiting()  # the program may be over
    elif task.phase == "serve":
        if task.serving is None:
            raise DurablyError(
                f"agent {task.agent_id}: the snapshot says it serves a "
                "request but does not say which (corrupt checkpoint?)"
            )
        await task.serve(task.serving, frame=frame)
    elif task.phase == "messages":
        if frame is None:
            raise DurablyError(
                f"agent {task.agent_id}: the snapshot says it processes "
                "messages but has no frame (corrupt checkpoint?)"
            )
        await task.loop.run_llm_playbook(None, {}, frame=frame)
    elif frame is not None:
        raise DurablyError(
            f"agent {task.agent_id}: its snapshot holds a frame of {frame.playbook} but "
            f"does not say what the frame works for (phase {task.phase!r}); a snapshot "
            "written by an older durably while the agent served another agent's request "
            "cannot be resumed exactly: fork the execution at an earlier LLM call"
        )
    while True:
        task.phase = "idle"
        if task.journal.ops_since_snapshot:
            await task.snapshot()  # idle is a quiet point: keep the resume base recent
        messages = await receive(task, is_work, "inbox", select=next_work)
        if messages[0].kind == "request":
            await task.serve(messages[0])
        else:
            task.phase = "messages"
            rendered = [{"from": m.sender, "text": m.text, "id": m.id} for m in messages]
            await task.loop.run_llm_playbook(None, {"messages": rendered}, name=PROCESS_MESSAGES)


async def serve_request(task: AgentTask, request: Message, *, frame: Frame | None) -> None:
    """Run the public playbook ``request`` asks for on ``task``'s stack, then reply.

    The reply is one durable operation (``reply``) that sends the playbook's value, or
    the error it raised, to the requester. At the bottom of the stack (phase ``serve``)
    the request is recorded in snapshots, so that a frame resumed from one (``frame``)
    still sends the reply.
    """
    bottom = not task.frames
    if bottom:
        task.phase, task.serving = "serve", request
    spec = task.agent_class.playbooks.get(request.text)
    error = None
    value = None
    try:
        if spec is None or not spec.public:
            raise AttributeError(
                f"{task.agent_class.__name__} has no public playbook {request.text!r}"
            )
        payload = request.payload or {}
        if frame is not None:
            value = await task.loop.run_llm_playbook(spec, {}, frame=frame)
        else:
            value = await task.call_playbook(
                spec, tuple(payload.get("args", [])), dict(payload.get("kwargs", {}))
            )
    except ControlFlow:
        raise
    except DurablyError:
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    reply = Message(
        f"{task.agent_id}:{task.journal.index}",
        task.agent_id,
        request.sender,
        "",
        kind="reply",
        payload={"request": request.id, "value": value, "error": error},
    )
    await task.op(
        "reply",
        request.id,
        _none,
        apply=task.delivers(reply),
        effects={"messages": [reply.to_doc()]},
    )
    if bottom:
        task.phase, task.serving = "idle", None


async def _none() -> None:
    return None
