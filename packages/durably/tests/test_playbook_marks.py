"""What ``@playbook`` accepts: mistakes in a program's playbooks are clear errors when
the program loads, not a run that does something else."""

from __future__ import annotations

from pathlib import Path

import pytest

from durably import Agent, playbook
from durably.errors import ConfigError
from durably.runner import Program


def test_a_begin_playbook_must_be_one_the_llm_writes() -> None:
    """A Python playbook runs when it is called (a tool); marked ``begin=True`` without
    ``llm=True`` it would be handed to the LLM, its body ignored."""
    with pytest.raises(TypeError, match=r"Starter\.Main: begin=True needs llm=True"):

        class Starter(Agent):
            @playbook(begin=True)
            async def Main(self) -> None:
                """Python code."""


def test_a_program_with_such_a_playbook_does_not_load(tmp_path: Path) -> None:
    path = tmp_path / "starter.py"
    path.write_text(
        "from durably import Agent, playbook\n\n\n"
        "class Starter(Agent):\n"
        "    @playbook(begin=True)\n"
        "    async def Main(self):\n"
        "        return 1\n"
    )
    with pytest.raises(ConfigError, match="begin=True needs llm=True"):
        Program.load(path)
