"""A program whose Python tool raises: ``Lookup`` raises ``KeyError`` for anything but
``"known"``. The scripted LLM calls it once with ``"missing"`` and has no second response,
so the execution fails with the LLM's error -- and the tool's exception must be visible in
``durably show`` (used by ``tests/test_cli.py``)."""

from durably import Agent, playbook


class Librarian(Agent):
    """You look things up."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE Look up what the user asks for and tell them"""

    @playbook
    async def Lookup(self, name: str) -> str:
        """The entry for ``name``."""
        if name != "known":
            raise KeyError(f"no entry named {name!r}")
        return "an entry"
