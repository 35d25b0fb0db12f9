"""The program document: a Playbooks program as plain JSON, checked for what durably supports.

It is built once, when a program is loaded for a new run (from Playbooks' parse of the
PBAsm), and recorded in the execution header under ``"playbooks"``; a resume rebuilds the
agents from it without importing ``playbooks``. The compile calls of a ``.pb`` are not in
it: they are the header's ``"load_llm_calls"`` (see :mod:`durably._loaders`), which
``durably show`` lists. Shape::

    {"format": 1, "playbooks_version": "0.7.4", "interpreter": "<interpreter_run.txt>",
     "agents": [{"name": "Host", "description": "...",
                 "playbooks": [{"name", "signature", "params", "description", "llm",
                                "public", "hidden", "begin", "triggers", "markdown"}],
                 "python": ["<source of each python block>"]}]}

Everything a program uses that is not listed as supported in ``docs/guides/playbooks.md``
is refused here with :class:`UnsupportedPlaybooksFeature`, before anything runs.
"""

from __future__ import annotations

import ast
import keyword
import re
from typing import Any

from durably_playbooks.errors import UnsupportedPlaybooksFeature

__all__ = ["FORMAT", "RESERVED", "build_document", "parse_params", "python_playbooks"]

FORMAT = 1

#: Names of the agent API that a playbook may not take.
RESERVED = frozenset(
    {
        "Say",
        "Yield",
        "Yld",
        "Step",
        "Return",
        "LogTrigger",
        "ProcessMessages",
        "CreateAgent",
        "SaveArtifact",
        "LoadArtifact",
        "Loadfile",
        "LoadFile",
        "InviteToMeeting",
        "get_or_create",
        "state",
        "id",
        "klass",
    }
)

#: Agent metadata keys that change nothing durably would have to know about.
AGENT_METADATA_OK = frozenset({"author", "version", "tags", "title", "description"})
#: Playbook metadata keys durably supports.
PLAYBOOK_METADATA_OK = frozenset({"public", "hidden", "export", "execution_mode"})

#: Source text that asks for a feature that is not durable yet -> (feature, why).
REFUSED_TEXT = {
    "InviteToMeeting": (
        "meeting",
        "meetings share state written by several agents, which breaks one writer per agent",
    ),
    "Loadfile": ("loadfile", "reading files is I/O outside the journal"),
    "LoadFile": ("loadfile", "reading files is I/O outside the journal"),
    "SaveArtifact": ("artifact", "artifacts are not durable operations yet"),
    "LoadArtifact": ("artifact", "artifacts are not durable operations yet"),
    "CreateAgent": ("create-agent", "creating a new agent of a class is not a durable op yet"),
}


def _refuse(message: str, feature: str, fix: str, source: str | None) -> None:
    raise UnsupportedPlaybooksFeature(message, feature=feature, source=source, fix=fix)


def parse_params(signature: str) -> list[dict[str, Any]]:
    """The parameters of a PBAsm signature (``Name($a:list, $b:str = "x") -> dict``):
    names without ``$``; a default must be a literal."""
    start, end = signature.find("("), signature.rfind(")")
    if start < 0 or end < start:
        return []
    inner = signature[start + 1 : end].replace("$", "")
    try:
        tree = ast.parse(f"def _f({inner}): pass")
    except SyntaxError as exc:
        raise ValueError(f"cannot read the parameters of {signature!r}: {exc.msg}") from None
    func = tree.body[0]
    assert isinstance(func, ast.FunctionDef)
    args = func.args
    if args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs:
        raise ValueError(f"only plain parameters are supported in {signature!r}")
    params: list[dict[str, Any]] = [{"name": a.arg} for a in args.args]
    for param, default in zip(
        params[len(params) - len(args.defaults) :], args.defaults, strict=True
    ):
        param["default"] = ast.literal_eval(default)
    return params


def python_playbooks(source: str, agent: str, where: str | None) -> list[dict[str, Any]]:
    """The ``@playbook`` functions of a Python block, read without running it."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise UnsupportedPlaybooksFeature(
            f"agent {agent}: a python block does not compile (line {exc.lineno}): {exc.msg}",
            feature="python-syntax",
            source=where,
            fix="Fix the python block",
        ) from None
    found: list[dict[str, Any]] = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        options: dict[str, Any] | None = None
        for deco in node.decorator_list:
            if isinstance(deco, ast.Name) and deco.id == "playbook":
                options = {}
            elif (
                isinstance(deco, ast.Call)
                and isinstance(deco.func, ast.Name)
                and deco.func.id == "playbook"
            ):
                try:
                    options = {kw.arg or "**": ast.literal_eval(kw.value) for kw in deco.keywords}
                except ValueError:
                    options = {"<not a literal>": True}
                if deco.args:
                    options["<positional>"] = True
        if options is None:
            continue
        unknown = sorted(set(options) - {"public", "triggers", "export", "hidden"})
        if unknown:
            _refuse(
                f"agent {agent}: @playbook {node.name} uses {', '.join(unknown)}",
                "python-playbook-option",
                "Use only public=, triggers=, export= and hidden= (literals)",
                where,
            )
        triggers = [str(t) for t in options.get("triggers", [])]
        for trigger in triggers:
            if not re.match(r"^T\d+:[A-Z]{3} ", trigger):
                _refuse(
                    f"agent {agent}: trigger {trigger!r} of {node.name} has no T1:XXX prefix",
                    "trigger-format",
                    'Write triggers as "T1:EVT When ..."',
                    where,
                )
        args = [a.arg for a in node.args.args]
        doc = ast.get_docstring(node) or ""
        found.append(
            {
                "name": node.name,
                "signature": f"{node.name}({ast.unparse(node.args)})",
                "description": doc.split("\n")[0],
                "llm": False,
                "is_async": isinstance(node, ast.AsyncFunctionDef),
                "public": bool(options.get("public", False)),
                "hidden": bool(options.get("hidden", False)),
                "begin": any("BGN" in t.split(" ")[0] for t in triggers),
                "triggers": [
                    {
                        "text": t,
                        "begin": "BGN" in t.split(" ")[0],
                        "instruction": _trigger_instruction(node.name, node.name, t),
                    }
                    for t in triggers
                ],
                "params": [{"name": a} for a in args],
                "markdown": "",
            }
        )
    return found


def _trigger_instruction(klass: str, signature: str, trigger: str) -> str:
    """The line Playbooks shows for a trigger (``PlaybookTrigger.trigger_instruction``'s
    format, for Python playbooks, which are not parsed by ``LLMPlaybook``)."""
    name, _, description = trigger.partition(" ")
    return (
        f'- {description}, `Trigger["{klass}:{name}"]` by enqueuing `{signature.split(" ->")[0]}`'
    )


def build_document(
    agents: list[dict[str, Any]],
    *,
    interpreter: str,
    version: str,
    source: str | None,
) -> dict[str, Any]:
    """The program document of parsed agents (see :func:`durably_playbooks._pb.parse_compiled`),
    or :class:`UnsupportedPlaybooksFeature` naming the first unsupported feature."""
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for agent in agents:
        name = agent["name"]
        if agent["kind"] == "Human":
            if agent["metadata"] or agent["playbooks"] or agent["python"]:
                _refuse(
                    f"agent {name}:Human has metadata or playbooks (delivery channels, "
                    "human-in-the-loop): not durable yet",
                    "human-agent",
                    "Remove the :Human agent; the user is always there as 'user'",
                    source,
                )
            continue  # a bare `# User:Human` is the user
        if agent["kind"] == "MCP" or "remote" in agent["metadata"] or "mcp" in agent["metadata"]:
            _refuse(
                f"agent {name} is an MCP/remote agent: its tool discovery and calls are network "
                "I/O that durably does not journal yet",
                "mcp-agent",
                "Remove the agent, or wrap its tools in Python @playbook functions",
                source,
            )
        if not name.isidentifier() or keyword.iskeyword(name) or name in names:
            _refuse(
                f"agent name {name!r} is not a valid, unique class name",
                "agent-name",
                "Rename it",
                source,
            )
        names.add(name)
        unknown = sorted(set(agent["metadata"]) - AGENT_METADATA_OK)
        if unknown:
            _refuse(
                f"agent {name}: metadata {', '.join(unknown)} is not supported "
                "(startup_mode, model, remote, ... change how the agent runs)",
                "agent-metadata",
                f"Remove it; supported: {', '.join(sorted(AGENT_METADATA_OK))}",
                source,
            )
        playbooks: list[dict[str, Any]] = []
        for pb in agent["playbooks"]:
            playbooks.append(_llm_playbook(name, pb, source))
        for block in agent["python"]:
            playbooks.extend(python_playbooks(block, name, source))
        seen: set[str] = set()
        for pb in playbooks:
            if pb["name"] in RESERVED or pb["name"] in seen or not pb["name"].isidentifier():
                _refuse(
                    f"agent {name}: playbook name {pb['name']!r} is reserved or duplicated",
                    "playbook-name",
                    "Rename the playbook",
                    source,
                )
            seen.add(pb["name"])
        begins = [pb["name"] for pb in playbooks if pb["begin"]]
        if len(begins) > 1:
            _refuse(
                f"agent {name}: more than one playbook runs at the beginning ({', '.join(begins)})",
                "several-begin",
                "Keep one BGN trigger per agent and call the others from it",
                source,
            )
        for pb in playbooks:
            if pb["begin"] and any("default" not in p for p in pb["params"]):
                _refuse(
                    f"agent {name}: {pb['name']} runs at the beginning but needs arguments",
                    "begin-arguments",
                    "Give its parameters defaults, or trigger it with EVT",
                    source,
                )
            if pb["begin"] and not pb["llm"]:
                _refuse(
                    f"agent {name}: the Python playbook {pb['name']} runs at the beginning; "
                    "a begin playbook must be a markdown playbook for now",
                    "python-begin",
                    "Call it from a markdown playbook with a BGN trigger",
                    source,
                )
        for text in [agent["description"], *agent["python"]] + [p["markdown"] for p in playbooks]:
            for needle, (feature, why) in REFUSED_TEXT.items():
                if re.search(rf"\b{needle}\b", text):
                    _refuse(
                        f"agent {name} uses {needle}: {why}",
                        feature,
                        "Remove it (see docs/guides/playbooks.md, 'Refused, and why')",
                        source,
                    )
        out.append(
            {
                "name": name,
                "description": agent["description"],
                "playbooks": playbooks,
                "python": list(agent["python"]),
            }
        )
    if not out:
        _refuse("the program defines no AI agent", "no-agent", "Add a # Agent section", source)
    if not any(pb["begin"] for a in out for pb in a["playbooks"]):
        _refuse(
            "no playbook runs at the beginning",
            "no-begin",
            "Give one playbook a '### Triggers' entry 'T1:BGN At the beginning'",
            source,
        )
    return {
        "format": FORMAT,
        "playbooks_version": version,
        "interpreter": interpreter,
        "agents": out,
    }


def _llm_playbook(agent: str, pb: dict[str, Any], source: str | None) -> dict[str, Any]:
    name = pb["name"]
    metadata = pb["metadata"]
    if metadata.get("meeting") or "required_attendees" in metadata:
        _refuse(
            f"playbook {agent}.{name} is a meeting: meetings share state written by several "
            "agents, which breaks one writer per agent",
            "meeting",
            "Call the other agents' public playbooks instead",
            source,
        )
    unknown = sorted(set(metadata) - PLAYBOOK_METADATA_OK)
    if unknown:
        _refuse(
            f"playbook {agent}.{name}: metadata {', '.join(unknown)} is not supported",
            "playbook-metadata",
            f"Remove it; supported: {', '.join(sorted(PLAYBOOK_METADATA_OK))}",
            source,
        )
    if pb["mode"] != "playbook" or not pb["has_steps"]:
        _refuse(
            f"playbook {agent}.{name} runs in {pb['mode']} mode (no '### Steps'): ReAct compiles "
            "a hidden step template at run time and raw mode is free text, not code",
            "execution-mode",
            "Give the playbook a '### Steps' list",
            source,
        )
    try:
        params = parse_params(pb["signature"])
    except ValueError as exc:
        raise UnsupportedPlaybooksFeature(
            f"playbook {agent}.{name}: {exc}", feature="signature", source=source
        ) from None
    return {
        "name": name,
        "signature": pb["signature"],
        "description": pb["description"],
        "llm": True,
        "public": bool(metadata.get("public", False)),
        "hidden": bool(metadata.get("hidden", False)),
        "begin": any(t["begin"] for t in pb["triggers"]),
        "triggers": pb["triggers"],
        "params": params,
        "markdown": pb["markdown"],
    }
