"""Receiving messages durably: what an agent takes from its mailbox is journaled.

:func:`receive` waits for messages and records which ones it took (by id), so a resumed
agent takes the same ones in the same order. :func:`wait_for` does so while serving the
requests that arrive meanwhile (call-backs), so that agents waiting for each other never
deadlock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from durably._journal import Message

if TYPE_CHECKING:
    from durably._runtime import AgentTask

__all__ = ["receive", "wait_for"]


async def receive(
    task: AgentTask,
    accept: Callable[[Message], bool],
    kind: str,
    *,
    select: Callable[[list[Message]], list[Message]] | None = None,
) -> list[Message]:
    """Wait for messages accepted by ``accept``; journaled with their ids.

    ``select`` picks which of the accepted messages to take at once (default: all).
    """

    def take_all(inbox: list[Message]) -> list[Message]:
        return [m for m in inbox if accept(m)]

    choose = select or take_all

    async def live() -> list[dict[str, Any]]:
        taken = await task.mailbox.wait(choose, accept, kind, task.execution.agent_waiting)
        return [m.to_doc() for m in taken]

    def apply(docs: list[dict[str, Any]]) -> None:
        task.mailbox.consume({doc["id"] for doc in docs})

    docs = await task.op("receive", kind, live, apply=apply)
    return [Message.from_doc(doc) for doc in docs]


async def wait_for(task: AgentTask, accept: Callable[[Message], bool], kind: str) -> list[Message]:
    """Wait for messages accepted by ``accept``, serving the requests that arrive
    meanwhile: an agent waiting for another agent can be called back by it (or by a
    third one) without a deadlock."""

    def select(inbox: list[Message]) -> list[Message]:
        wanted = [m for m in inbox if accept(m)]
        if wanted:
            return wanted
        return next(([m] for m in inbox if m.kind == "request"), [])

    while True:
        taken = await receive(task, lambda m: accept(m) or m.kind == "request", kind, select=select)
        if taken[0].kind == "request" and not accept(taken[0]):
            await task.serve(taken[0])
            continue
        return taken
