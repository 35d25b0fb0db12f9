"""The prompts of a Playbooks program: Playbooks' interpreter contract, durably's state.

A pure function of durable state (the program document recorded in the execution header,
the agent's state, call stack, frame history and locals), rendered with durably's
:func:`~durably._prompts.render`: a resumed run sends byte-identical prompts, which the
core checks against the journal's prompt digests.

Layout (ours; the system prompt text is Playbooks' ``interpreter_run.txt`` verbatim, as
recorded when the execution started):

* system: the interpreter contract, then "My agent" (this agent's playbooks as PBAsm),
  "Other agents" (their public playbooks) and "Available playbook triggers";
* user: "<Playbook> playbook implementation" and "Executing <Playbook>";
* the frame's conversation (assistant responses, results and errors), the last user
  message followed by the "Python Code Context" (``self``, call stack, ``self.state``,
  locals) and the instruction with the ``execution_id`` to write.
"""

from __future__ import annotations

from typing import Any

from durably._prompts import render

__all__ = ["PROCESS_MESSAGES_PBASM", "build_prompt"]

#: durably's own ``ProcessMessages`` (Playbooks' built-in one is compiled by an LLM at
#: every load; this one is written for durably, in PBAsm).
PROCESS_MESSAGES_PBASM = """\
## ProcessMessages($messages: list) -> None
Handles the messages this agent received while it had nothing else to do.
### Steps
- 01:CND For each message in $messages (a list of {from, text, id})
  - 01.01:CND If the message matches a trigger of one of my playbooks
    - 01.01.01:QUE LogTrigger the matching trigger and run that playbook with what the message asks
    - 01.01.02:QUE Say the result to the sender (`"agent <from>"`) if the sender expects an answer
  - 01.02:CND Otherwise, if the sender expects an answer, Say it to the sender
- 02:RET Return"""


def _agent_section(doc: dict[str, Any], agent_id: str) -> list[str]:
    lines = [f"# My agent: {doc['name']} (self.id = {agent_id!r})", doc["description"] or ""]
    for pb in doc["playbooks"]:
        if pb["hidden"]:
            continue
        if pb["llm"]:
            lines += ["", pb["markdown"]]
        else:
            flags = ", public" if pb["public"] else ""
            lines += ["", f"## {pb['signature']}", f"Python playbook{flags}. {pb['description']}"]
    return lines


def _others(task: Any) -> list[str]:
    program = task.execution.program
    lines: list[str] = []
    for cls in program.agent_classes if program is not None else ():
        if cls is task.agent_class:
            continue
        doc = getattr(cls, "agent_document", {})
        public = [pb for pb in doc.get("playbooks", []) if pb["public"] and not pb["hidden"]]
        lines.append(f"## {cls.__name__}")
        if doc.get("description"):
            lines.append(doc["description"])
        for pb in public:
            text = f"- `{pb['signature']}`"
            if pb["description"]:
                text += f": {pb['description']}"
            lines.append(text)
    return lines


def _triggers(doc: dict[str, Any]) -> list[str]:
    return [
        t["instruction"]
        for pb in doc["playbooks"]
        for t in pb["triggers"]
        if not t["begin"] and not pb["hidden"]
    ]


def build_prompt(task: Any, frame: Any) -> list[dict[str, str]]:
    """The chat messages for the next LLM call of ``frame`` (the core's prompt hook)."""
    cls = task.agent_class
    doc: dict[str, Any] = cls.agent_document
    program: dict[str, Any] = cls.program_document
    system = [program["interpreter"], "", *_agent_section(doc, task.agent_id)]
    others = _others(task)
    if others:
        system += ["", "# Other agents", *others]
    triggers = _triggers(doc)
    if triggers:
        system += ["", "# Available playbook triggers", *triggers]

    spec = next((pb for pb in doc["playbooks"] if pb["name"] == frame.playbook), None)
    implementation = spec["markdown"] if spec is not None else PROCESS_MESSAGES_PBASM
    intro = (
        f"{frame.playbook} playbook implementation:\n\n{implementation}\n\n"
        f"Executing `{frame.playbook}`"
    )
    execution_id = sum(task.journal.llm_counts.values()) + 1
    context = [
        "",
        "*Python Code Context*",
        "```python",
        f"self.id = {task.agent_id!r}  # {cls.__name__}",
        f"self.call_stack = {render(task.call_stack)}",
        f"self.state = {render(task.agent.state.to_dict())}",
        f"# locals of {frame.playbook}: {render(task.visible_locals(frame))}",
        "```",
        "",
        f"Remember: you are {cls.__name__}(agent {task.agent_id}), executing "
        f"{frame.playbook}. Write `# execution_id: {execution_id}` and follow the output "
        "contract: one fenced python block.",
    ]
    messages = [{"role": "system", "content": "\n".join(system)}]
    if not frame.history:
        messages.append({"role": "user", "content": "\n".join([intro, *context])})
    else:
        messages.append({"role": "user", "content": intro})
        messages += frame.history[:-1]
        last = frame.history[-1]
        messages.append({"role": last["role"], "content": "\n".join([last["content"], *context])})
    return messages
