"""A program with three agents that begin at once: the process can die after the first
one's first snapshot and before the others' (each agent writes its first snapshot before
it does anything). One of them is found by the first with ``get_or_create`` and serves
it a public tool; another creates an agent at once, while the others' first checkpoints
wait to be written (the new agent's id must be the one it had before a crash)."""

from durably import Agent, playbook


class Host(Agent):
    """You are the host."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE greet and ask the guest to count"""


class Guest(Agent):
    """You are the guest."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE greet"""

    @playbook(public=True)
    async def Count(self, n: int) -> int:
        """Add n to how often the guest was asked."""
        self.state.asked = (self.state.asked if "asked" in self.state else 0) + n
        return self.state.asked


class Critic(Agent):
    """You are the critic."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE comment"""


class Scribe(Agent):
    """You take notes."""
