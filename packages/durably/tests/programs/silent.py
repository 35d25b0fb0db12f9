"""A program whose LLM code waits for a message that never comes: every agent ends up
waiting, which must not be mistaken for the program's end."""

from durably import Agent, playbook


class Host(Agent):
    """You host a guest."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE Greet the guest and wait for its answer
        - 02:RET the answer"""


class Guest(Agent):
    """You are a quiet guest."""

    @playbook(llm=True, public=True)
    async def Greet(self, text):
        """- 01:RET a greeting"""
