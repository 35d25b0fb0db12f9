"""A program with a toy durable operation, added the way docs/design/architecture.md says:
``Ticker.Tick`` is one ``op`` of the agent's task (here in the program, not in durably)."""

import time

from durably import Agent, playbook


class Ticker(Agent):
    """You tick and report the ticks."""

    async def Tick(self) -> int:
        """The toy durable operation: live once, replayed from the journal on resume."""

        async def live() -> int:
            return time.perf_counter_ns()  # different at every call: a re-run would show

        result: int = await self._task.op("tick", None, live)
        return result

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE Tick three times, telling the user each tick
        - 02:RET the ticks"""
