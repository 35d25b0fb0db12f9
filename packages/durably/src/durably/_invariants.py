"""What must hold before an execution may be recorded ``completed``.

A wrong ``completed`` is the worst outcome durable execution can have: the history says
the program finished while work was lost. :func:`check_complete` runs at the end of every
run and every resume, before the final record is written; any violation turns the outcome
into a failure (:class:`~durably.errors.IncompleteExecutionError`) and the history stays
resumable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from durably._execution import Execution

__all__ = ["check_complete"]


def check_complete(execution: Execution) -> list[str]:
    """The reasons ``execution``, which says it completed, cannot be complete.

    Always: no agent left journal entries that replay never consumed (a completed
    operation whose effects the resumed run would silently drop). When the program ended
    because every agent was idle (not through ``Yield("exit")``): every agent's call stack
    is empty, no request or reply between agents is left unconsumed and no agent waits
    for a reply, and every begin playbook returned.
    """
    problems = []
    for task in execution.agents.values():
        name = f"{task.agent_class.__name__}({task.agent_id})"
        if task.journal.replay:
            first = min(task.journal.replay)
            problems.append(
                f"{name} never replayed {len(task.journal.replay)} journaled "
                f"operation(s), from #{first} ({task.journal.replay[first].kind!r})"
            )
        if task.journal.replay_llm:
            problems.append(
                f"{name} never replayed LLM call(s) "
                f"{sorted(task.journal.replay_llm)} of its journal"
            )
        if execution.exiting:
            continue
        if task.frames:
            mailbox = task.mailbox
            waits = _describe_wait(mailbox.waiting_for) if mailbox.waiting is not None else ""
            problems.append(f"{name} still has a call stack {task.call_stack}{waits}")
        if task.phase not in ("idle", "exit"):
            problems.append(f"{name} is in phase {task.phase!r}, not idle")
        pending = [m.id for m in task.mailbox.inbox if m.kind in ("request", "reply")]
        if pending:
            problems.append(f"{name} never consumed request/reply message(s) {pending}")
        if task.has_begin and not task.begin_returned:
            problems.append(f"the begin playbook of {name} never returned")
    return problems


def _describe_wait(kind: str) -> str:
    what, _, who = kind.partition(":")
    if what == "yield":
        return f" and waits for a message from agent {who} that no agent will send"
    if what == "reply":
        return f" and waits for the reply to request {who}, which no agent will send"
    return ""
