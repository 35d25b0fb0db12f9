"""A program whose LLM code awaits inside loops, if/else, try/except, with, comprehensions,
a nested LLM playbook and a Python tool -- every kind of resumable point."""

from durably import Agent, playbook


class Counter(Agent):
    """You count numbers and report on them."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE Count from 1 to 5, telling the user about each number
        - 02:EXE Square the total and double a few numbers
        - 03:YLD for user
        - 04:RET the total"""

    @playbook(llm=True)
    async def Double(self, n):
        """- 01:RET twice $n"""

    @playbook
    async def Square(self, n: int) -> int:
        """A tool that squares a number and counts how often it ran."""
        self.state.squared = self.state.squared + 1 if "squared" in self.state else 1
        return n * n
