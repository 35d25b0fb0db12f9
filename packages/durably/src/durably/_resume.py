"""Resume: every agent of an execution restored from its checkpoints.

Each agent is restored from its last snapshot with the journal written after it
(:class:`~durably._journal.RestoredAgent`): its tasks re-execute from the snapshot and
answer every journaled operation from the journal until it runs out (see
``docs/design/resume-model.md``). Messages sent after their receiver's snapshot are
delivered again (mailboxes drop duplicates).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from durably._journal import Message
from durably.errors import NotFoundError

if TYPE_CHECKING:
    from durably._execution import Execution
    from durably.checkpoint import CheckpointManager, LoadedExecution

__all__ = ["restore_agents"]


async def restore_agents(
    manager: CheckpointManager, execution: Execution, *, loaded: LoadedExecution | None = None
) -> LoadedExecution:
    """Restore every agent of ``execution`` from the store (creating missing ones).

    Args:
        manager: The execution's checkpoints.
        execution: The execution to restore into (its agents may exist already).
        loaded: What to restore from (default: the latest checkpoint).

    Raises:
        NotFoundError: The execution has no checkpoint.
    """
    hooks = manager.hooks
    if loaded is None:
        loaded = await manager.load_execution()
    if loaded is None:
        raise NotFoundError(f"execution {manager.execution_id!r} has no checkpoint")
    hooks.before_recover(manager.execution_id, loaded.latest_seq)
    try:
        execution.header = loaded.header
        execution.next_agent_id = max(execution.next_agent_id, loaded.next_agent_id)
        replayed = 0
        for agent_id, (_seq, _doc, state, local_vars) in sorted(loaded.snapshots.items()):
            restored = loaded.restored(agent_id)
            task = execution.agents.get(agent_id)
            if task is None:
                cls = execution.agent_class_named(restored.snapshot.agent_class)
                task = execution.create_agent(cls, agent_id)
            task.restore(restored, state, local_vars)
            replayed += len(restored.entries)
        # The process may have died before every begin agent wrote its first snapshot.
        execution.begin_agents()
        # Messages sent after the receiver's snapshot: deliver them again (deduplicated).
        for delta_seq, delta in loaded.journal():
            for entry in delta.entries:
                for message in map(Message.from_doc, entry.messages):
                    receiver = execution.agents.get(message.receiver)
                    if receiver is not None and (receiver.journal.snapshot_seq or 0) < delta_seq:
                        execution.deliver(message)
    except BaseException as exc:
        hooks.on_recover_error(manager.execution_id, exc)
        raise
    hooks.after_recover(manager.execution_id, loaded.latest_seq, replayed)
    return loaded
