"""Unsupported Playbooks features are refused when the program is loaded, with a typed
error that names the agent/playbook and the feature -- never run without durability."""

from __future__ import annotations

from pathlib import Path

import pytest

from durably.runner import Program
from durably_playbooks import UnsupportedPlaybooksFeature

from helpers import PROGRAMS, durably

GOOD = (PROGRAMS / "library.pbasm").read_text()

#: feature -> (the program text, a fragment of the message)
CASES = {
    "meeting": (
        GOOD.replace("  public: true\n", "  public: true\n  meeting: true\n"),
        "is a meeting",
    ),
    "mcp-agent": (GOOD + "\n# Files:MCP\nmetadata:\n  remote:\n    type: mcp\n", "MCP"),
    "human-agent": (GOOD + "\n# Boss:Human\nmetadata:\n  delivery_channel: email\n", "Human"),
    # FindBook (the last section) without its steps: a ReAct playbook
    "execution-mode": (GOOD.split("### Steps\n- 01:QUE $titles")[0], "mode"),
    "several-begin": (
        GOOD.replace(
            "# Archivist\n",
            "## Extra() -> None\n### Triggers\n- T1:BGN At the beginning\n"
            "### Steps\n- 01:YLD for exit\n\n# Archivist\n",
        ),
        "more than one playbook runs at the beginning",
    ),
    "begin-arguments": (
        GOOD.replace("- T1:EVT When asked for a book on a topic", "- T1:BGN At the beginning"),
        "needs arguments",
    ),
    "artifact": (
        GOOD.replace("03:RET the first", "03:EXE SaveArtifact the list, then return the first"),
        "SaveArtifact",
    ),
    "loadfile": (GOOD.replace("the first of $titles", "Loadfile(catalogue.md)"), "Loadfile"),
    "agent-metadata": (
        GOOD.replace("# Archivist\n", "# Archivist\nmetadata:\n  startup_mode: standby\n---\n"),
        "startup_mode",
    ),
    "python-playbook-option": (GOOD.replace("@playbook\n", "@playbook(meeting=True)\n"), "meeting"),
    "frontmatter": ("---\ntitle: Library\nmodel: gpt-4o\n---\n" + GOOD, "frontmatter"),
}


@pytest.mark.parametrize("feature", list(CASES))
def test_an_unsupported_feature_is_refused_at_load(feature: str, tmp_path: Path) -> None:
    text, fragment = CASES[feature]
    assert text != GOOD
    program = tmp_path / "program.pbasm"
    program.write_text(text)
    with pytest.raises(UnsupportedPlaybooksFeature) as caught:
        Program.load(program)
    assert fragment in str(caught.value)
    assert caught.value.feature == feature


def test_the_unchanged_program_loads() -> None:
    """The cases above fail because of their change, not because the base is refused."""
    program = Program.load(PROGRAMS / "library.pbasm")
    assert [cls.__name__ for cls in program.agent_classes] == ["Librarian", "Archivist"]
    archivist = program.agent_classes[1]
    assert archivist.playbooks["FindBook"].public
    assert not archivist.playbooks["Catalogue"].llm
    assert program.agent_classes[0].playbooks["Main"].begin


def test_the_command_exits_2_and_names_the_feature(tmp_path: Path) -> None:
    program = tmp_path / "program.pbasm"
    program.write_text(CASES["meeting"][0])
    done = durably(
        "run", str(program), "--llm", "scripted:x.json", "--store", f"file://{tmp_path}/s"
    )
    assert done.code == 2, done.err
    assert "FindBook is a meeting" in done.err
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*.ckpt"))
