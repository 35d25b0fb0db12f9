"""Two agents that talk to the user at the same time.

``Host.Main`` gets ``Guest`` and sends it a message; while ``Guest`` answers it from
``ProcessMessages`` (an LLM call of its own), both say lines to the user, so that their
checkpoints interleave. ``Host`` then waits for ``Guest``'s reply and returns it.
"""

from durably import Agent, playbook


class Host(Agent):
    """You host the show and introduce the guest."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE Ask the guest to sing, and tell the user about it
        - 02:RET the guest's answer"""


class Guest(Agent):
    """You are the guest; you sing when asked."""
