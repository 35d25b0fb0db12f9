"""A public Python playbook (tool) that runs LLM playbooks of its own agent while it
serves another agent's request: no snapshot may be taken inside it (it once was, and a
resumed run replied with the inner playbook's value)."""

from durably import Agent, playbook


class Foreman(Agent):
    """You get parts assembled."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE Ask the workshop to assemble part 3
        - 02:RET the assembly"""


class Workshop(Agent):
    """You assemble parts."""

    @playbook(public=True)
    async def Assemble(self, n: int) -> int:
        """Builds two parts with the LLM and combines them."""
        first = await self.Part(n)
        second = await self.Part(n + 1)
        self.state.assembled = first * 100 + second
        return self.state.assembled

    @playbook(llm=True)
    async def Part(self, n):
        """- 01:EXE Announce part $n
        - 02:RET $n"""
