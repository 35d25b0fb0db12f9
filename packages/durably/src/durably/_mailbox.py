"""An agent's mailbox: the messages delivered to it, deduplicated, and what it waits for.

Messages between agents (plain messages, requests to run a public playbook, replies) are
delivered by the sender's operation (live, on replay, and again on restore), so the same
message may arrive more than once: :meth:`Mailbox.put` keeps the first. What an agent
takes from its mailbox is journaled by the agent's ``receive`` operation, so a resumed
agent takes the same messages in the same order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from durably._journal import Message

__all__ = ["Mailbox", "is_work", "next_work"]


class Mailbox:
    """The inbox of one agent.

    Attributes:
        inbox: Messages delivered and not taken, in arrival order.
        consumed: Ids of the messages the agent took.
        seen: Ids of every message delivered (duplicates are dropped).
        waiting: While the agent waits: which messages it accepts.
        waiting_for: What it waits for (``inbox``, ``yield:1001``, ``reply:1000:7``).
    """

    def __init__(self) -> None:
        self.inbox: list[Message] = []
        self.consumed: set[str] = set()
        self.seen: set[str] = set()
        self.changed = asyncio.Event()
        self.waiting: Callable[[Message], bool] | None = None
        self.waiting_for = ""

    def put(self, message: Message) -> None:
        """Deliver ``message`` (once: a message seen before is dropped)."""
        if message.id in self.seen:
            return
        self.seen.add(message.id)
        self.inbox.append(message)
        self.changed.set()

    def consume(self, ids: set[str]) -> None:
        """Messages ``ids`` were taken."""
        self.inbox = [m for m in self.inbox if m.id not in ids]
        self.consumed |= ids
        self.seen |= ids

    def restore(self, inbox: list[Message], consumed: list[str]) -> None:
        """The mailbox as a snapshot recorded it."""
        self.inbox = list(inbox)
        self.consumed = set(consumed)
        self.seen = self.consumed | {m.id for m in self.inbox}

    @property
    def blocked(self) -> bool:
        """The agent waits and nothing it accepts is here."""
        accept = self.waiting
        return accept is not None and not any(accept(m) for m in self.inbox)

    async def wait(
        self,
        choose: Callable[[list[Message]], list[Message]],
        accept: Callable[[Message], bool],
        kind: str,
        blocked: Callable[[], None],
    ) -> list[Message]:
        """The messages ``choose`` picks, once there are any.

        Args:
            choose: Picks the messages to take from the inbox (none: wait).
            accept: Which messages would end the wait (for deadlock detection).
            kind: What the agent waits for (shown by :attr:`waiting_for`).
            blocked: Called each time the agent starts waiting (the execution checks
                whether every agent now waits).
        """
        while True:
            matching = choose(self.inbox)
            if matching:
                return matching
            self.waiting, self.waiting_for = accept, kind
            self.changed.clear()
            blocked()
            try:
                await self.changed.wait()
            finally:
                self.waiting = None


def is_work(message: Message) -> bool:
    """A message an idle agent acts on (not a reply)."""
    return message.kind in ("message", "request")


def next_work(inbox: list[Message]) -> list[Message]:
    """What an idle agent takes from its inbox at once: the oldest request alone, or the
    plain messages that arrived before the next request (one ``ProcessMessages`` run)."""
    work = [m for m in inbox if is_work(m)]
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
