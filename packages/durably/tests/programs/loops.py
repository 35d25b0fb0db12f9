"""A program whose LLM code runs top-level loops that await: durably steps through those
over a list, tuple, str or range (a quiet point between iterations) and iterates the
others as Python does. Every kind of loop exit and iteration is here: break, continue,
else, an empty sequence, a list that grows while it is looped over, a tuple target, a
loop inside a stepped loop, ``enumerate`` (of a list, with a start, of a str, of a
generator, and a function of the program's own named so), a nested LLM playbook and a
tool inside iterations, a loop over what an await returned, an exception raised in an
iteration, a list the body empties, a list of functions (which no snapshot can hold), a
range too long for len(); ``while`` loops ended by their condition (with an ``else``),
by ``break`` after a ``continue``, and with an await in their condition."""

from durably import Agent, playbook


class Looper(Agent):
    """You go through lists."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE Go through the items
        - 02:RET the tally"""

    @playbook(llm=True)
    async def Half(self, n):
        """- 01:RET half of $n"""

    @playbook
    async def Items(self, n: int) -> list:
        """A tool that returns a list and counts how often it ran."""
        self.state.fetched = (self.state.fetched if "fetched" in self.state else 0) + 1
        return [f"item{k}" for k in range(n)]
