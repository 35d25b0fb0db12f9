"""LLM code that awaits an agent's operations concurrently: ``asyncio.gather`` of calls to
another agent (caught, then uncaught), ``asyncio.create_task`` of a ``Say``.

Concurrent operations of one agent were journaled in the order they happened to be asked
for; a resume replays a journaled one at once and waits for a live one, so it asked for
them in another order: ``DivergenceError``, an ``IncompleteExecutionError``, or a run
that completed with a public tool run twice and the wrong result. Each is now refused
where it is asked for (``ConcurrentAwaitError``, a ``RuntimeError``), in every run alike:
the code catches it, or the LLM is told and awaits one call after another.
"""

from durably import Agent, playbook


class Hub(Agent):
    """You ask the shop for quotes."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE Ask the shop for quotes
        - 02:RET the quotes"""


class Shop(Agent):
    """A shop that counts the quotes it gave."""

    @playbook(public=True)
    async def Quote(self, item: str) -> int:
        """A quote: the number of quotes given so far."""
        self.state.count = (self.state.count if "count" in self.state else 0) + 1
        return self.state.count * 10 + len(item)
