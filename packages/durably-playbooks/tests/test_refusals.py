"""Unsupported Playbooks features are refused when the program is loaded, with a typed
error that names the agent/playbook and the feature -- never run without durability."""

from __future__ import annotations

from pathlib import Path

import pytest

from durably.config import DurabilityConfig
from durably.runner import Program
from durably_playbooks import UnsupportedPlaybooksFeature

from helpers import PROGRAMS, durably

GOOD = (PROGRAMS / "library.pbasm").read_text()

#: feature (then "/" and which form, when a feature has several) -> (the program text, a
#: fragment of the message). Every row of the guide's table "Refused, and why".
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
    "meeting/required_attendees": (
        GOOD.replace("  public: true\n", "  public: true\n  required_attendees: [Librarian]\n"),
        "is a meeting",
    ),
    "meeting/InviteToMeeting": (
        GOOD.replace("03:RET the first", "03:EXE InviteToMeeting(Librarian); return the first"),
        "InviteToMeeting",
    ),
    "execution-mode/raw": (
        GOOD.replace("  public: true\n", "  public: true\n  execution_mode: raw\n"),
        "raw mode",
    ),
    "python-begin": (
        GOOD.replace(
            "@playbook\n",
            '@playbook(triggers=["T1:BGN At the beginning"])\nasync def Opening() -> None:\n'
            '    """Opens the catalogue."""\n\n\n@playbook\n',
        ),
        "the Python playbook Opening runs at the beginning",
    ),
    "playbook-metadata": (
        GOOD.replace("  public: true\n", "  public: true\n  model: gpt-4o\n"),
        "metadata model is not supported",
    ),
    "artifact/LoadArtifact": (
        GOOD.replace("01:QUE $titles:list = Catalogue($topic)", "01:QUE $titles = LoadArtifact(t)"),
        "LoadArtifact",
    ),
    "create-agent": (
        GOOD.replace("03:QUE $book:str", "03:EXE CreateAgent(Archivist)\n- 04:QUE $book:str"),
        "CreateAgent",
    ),
    "import": (GOOD.replace("# Archivist\n", "!import archivist.pb\n\n# Archivist\n"), "!import"),
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
    assert caught.value.feature == feature.split("/")[0]


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


#: A call LLM code improvises at run time -> the feature the loader names for it.
IMPROVISED = {
    "await self.SaveArtifact('bees.md', titles)": "artifact",
    "await self.Loadfile('catalogue.md')": "loadfile",
    "await self.CreateAgent('Archivist')": "create-agent",
    "await self.InviteToMeeting(['Librarian'])": "meeting",
    "await self.LoadArtifact('bees.md')": "artifact",
    "await self.LoadFile('catalogue.md')": "loadfile",
}


def test_every_refused_name_is_refused_when_llm_code_calls_it() -> None:
    """Each name the loader refuses (``REFUSED_TEXT``) is a method of the agent class that
    refuses it at run time, and each is among the calls tested below."""
    from durably_playbooks._agent import PlaybooksAgent
    from durably_playbooks._document import REFUSED_TEXT

    tested = {call.split("self.")[1].split("(")[0] for call in IMPROVISED}
    assert tested == set(REFUSED_TEXT)
    for name in REFUSED_TEXT:
        assert name in vars(PlaybooksAgent), name


@pytest.mark.filterwarnings("ignore:the file store")
@pytest.mark.parametrize("call", list(IMPROVISED))
def test_llm_code_improvising_an_unsupported_feature_fails_the_run(
    call: str, tmp_path: Path
) -> None:
    """The loader cannot see what the LLM writes at run time: the call itself raises the
    loader's error (same feature, naming the agent), the run stops there, nothing after it
    runs, and the execution is not recorded as completed."""
    from crashpoints import StoreKind, run, write_script
    from test_crash_points import CASES

    case = CASES["library"]
    anchor = "    await self.Return(titles[0])"
    script = write_script(
        case, tmp_path / "improvised.json", lambda r: r.replace(anchor, f"    {call}\n{anchor}")
    )
    assert call in script.read_text()
    stores = StoreKind(tmp_path)
    with pytest.raises(UnsupportedPlaybooksFeature) as caught:
        run(case, stores, DurabilityConfig(), record=False, script=script)
    name = call.split("self.")[1].split("(")[0]
    assert caught.value.feature == IMPROVISED[call]
    assert str(caught.value).startswith(f"agent Archivist: the LLM code called {name}: ")
    data = stores.show("reference")
    assert data["status"] != "completed"
    # Librarian asked its question; the archivist's answer never came.
    assert [line["text"] for line in data["transcript"]] == [
        "Hello! Which topic would you like to read about?"
    ]
