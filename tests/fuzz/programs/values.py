"""One agent whose LLM code keeps values of many kinds across awaits (``values``).

Names imported from modules (``from math import sqrt``, a builtin as a ``key``), a
compiled pattern, a range, a slice, ``...``, exceptions caught and kept (a ``ValueError``
in a list and a variable, a ``json.JSONDecodeError``, a ``FileNotFoundError`` with its
file name, a ``StopIteration`` with its value), and functions the LLM defined held in a
dict, a list, a tuple and the agent's state, one of them after its name was deleted. Each
must be the same value, the same object where it was one, after a resume.
"""

from durably import Agent, playbook


class Ledger(Agent):
    """You keep a ledger of words."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE Check the words and keep what you learn
        - 02:RET the summary"""

    @playbook
    async def Tool(self, word: str) -> int:
        """The length of a word."""
        return len(word)
