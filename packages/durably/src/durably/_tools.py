"""Python playbooks (tools): calling them durably.

A tool runs live once; its result, the error it raised, and the state it changed are
journaled as one operation that also covers the durable operations it awaited (an LLM
playbook, another agent, a ``Say``), so a resumed agent never runs it again.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from durably._runtime import AgentTask
    from durably.agent import Agent, PlaybookSpec

__all__ = ["bind_arguments", "call_tool"]


def bind_arguments(
    agent: Agent, spec: PlaybookSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The arguments of a call of an LLM playbook, by parameter name (defaults applied),
    without ``task``: they become the frame's first variables."""
    assert spec.func is not None
    bound = inspect.signature(spec.func).bind(agent, *args, **kwargs)
    bound.apply_defaults()
    values = dict(bound.arguments)
    values.pop(next(iter(values)))
    return values


async def call_tool(
    task: AgentTask, spec: PlaybookSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run a Python playbook (a tool) as one durable operation of ``task``.

    Live, it runs and its result (or the error it raised) is journaled, with the changes
    it made to the agent's state and the operations it awaited (its span). On replay it
    is not run again: its result is returned and its state changes re-applied.
    """
    assert spec.func is not None
    func = spec.func
    codec = task.execution.manager.codec
    before: dict[str, bytes] = {}
    key = f"{task.execution.manager.execution_id}:{task.agent_id}:{task.journal.index}"

    async def live() -> Any:
        # Only a live call can change the state behind the journal's back (replay
        # re-applies the journaled changes), so only a live call pays for the diff.
        before.update(
            (name, codec.encode_value(value)) for name, value in task.agent.state.to_dict().items()
        )
        previous, task.idempotency_key = task.idempotency_key, key
        task.tools_running += 1
        try:
            return await func(task.agent, *args, **kwargs)
        finally:
            task.idempotency_key = previous
            task.tools_running -= 1

    def changed_state(_: Any) -> dict[str, Any] | None:
        """The state a live tool changed (in the order the variables now have) and the
        variables it deleted, journaled so that replay re-applies them."""
        state = task.agent.state.to_dict()
        changed = {
            name: value
            for name, value in state.items()
            if before.get(name) != codec.encode_value(value)
        }
        unset = [name for name in before if name not in state]
        effects: dict[str, Any] = {}
        if changed:
            effects["state"] = changed
        if unset:
            effects["unset"] = unset
        return effects or None

    return await task.op(
        f"tool:{spec.name}",
        [list(args), kwargs],
        live,
        journal_errors=True,
        effects_after=changed_state,
    )
