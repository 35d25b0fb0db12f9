"""The prompts the interpreter loop sends: a deterministic function of durable state.

No wall-clock time, random id or memory address may appear in a prompt: a resumed run
must send byte-identical prompts to those the uninterrupted run sends (the journal
checks it). Values are rendered with :func:`render`, which never shows addresses.
"""

from __future__ import annotations

import inspect
import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from durably._journal import Frame
    from durably._runtime import AgentTask

__all__ = ["build_prompt", "render"]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")

CONVENTIONS = """\
You are the interpreter of an agent program. You run one playbook of one agent by writing
Python code that the runtime executes statement by statement as you stream it.

Answer with exactly one fenced code block:
```python
# execution_id: <the number of this call>
# recap: <one line: where the playbook stands>
# plan: <one line: what this code will do>
<code>
```

The code runs as the body of an async function of the agent: use `await` freely at the top
level. What you can use:
- `await self.Step("Playbook:NN:TYPE")` before each step you carry out (e.g. "Main:03:YLD").
- `await self.Say("user", text)` to talk to the user; `await self.Say("agent <id>", text)` or
  `await self.Say(other.id, text)` to send a message to another agent.
- `answer = await self.Yield("user")` waits for the user's next message and returns it;
  `reply = await self.Yield("agent <id>")` waits for a message from that agent;
  `await self.Yield("call")` ends this response so that you are called again with the
  results; `await self.Yield("exit")` ends the program.
- `await self.Return(value)` ends the current playbook and returns `value` to its caller.
- `self.state.<name>` reads and writes the agent's variables; they persist across calls.
  Plain variable names are locals of this playbook and persist across its calls too.
- `result = await self.<Playbook>(...)` runs one of this agent's playbooks and waits for it.
- `other = await <AgentClass>.get_or_create(requester=self)` gets (or starts) another agent;
  `await other.<PublicPlaybook>(...)` runs one of its public playbooks and returns its result.
- `await self.LogTrigger("Playbook:T1:EVT")` records that a trigger matched.
- `self.state.__ = "<one-line summary>"` before returning, to summarise what the playbook did.

Rules: write deterministic code (no clocks, no randomness, no I/O of your own); keep each
statement self-contained; do not redefine `self`."""


def render(value: Any, limit: int = 2000) -> str:
    """A stable, address-free rendering of a value for a prompt.

    JSON where the value is JSON-like, else Python's ``repr``. The same value renders
    the same in every process: sets are shown sorted (their iteration order depends on
    the process's string hash seed), and no memory address is shown.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, default=_default, sort_keys=False)
    except (TypeError, ValueError):  # a key JSON cannot hold, a cycle
        text = stable_repr(value)
    if len(text) > limit:
        text = text[: limit - 20] + f"... ({len(text)} chars)"
    return text


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(render(v) for v in value)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if inspect.isfunction(value) or inspect.ismethod(value):
        return f"<function {value.__name__}>"
    if inspect.isclass(value):
        return f"<class {value.__name__}>"
    if inspect.ismodule(value):  # its repr holds a path: not the same on every machine
        return f"<module {value.__name__}>"
    return stable_repr(value)


def stable_repr(value: Any) -> str:
    """``repr(value)`` without memory addresses, with the items of every set, also
    nested in dicts, lists and tuples, in sorted order: the same text in every process
    (Python's ``repr`` of a set of strings differs from one process to the next)."""
    return _stable(value, set())


def _stable(value: Any, seen: set[int]) -> str:
    kind = type(value)
    if kind not in (dict, list, tuple, set, frozenset) or not value:
        return _ADDRESS.sub("", repr(value))
    if id(value) in seen:  # a cycle: as repr shows it
        return "{...}" if kind is dict else "[...]" if kind is list else "(...)"
    seen.add(id(value))
    try:
        if kind is dict:
            return (
                "{"
                + ", ".join(f"{_stable(k, seen)}: {_stable(v, seen)}" for k, v in value.items())
                + "}"
            )
        items = [_stable(item, seen) for item in value]
    finally:
        seen.discard(id(value))
    if kind is list:
        return "[" + ", ".join(items) + "]"
    if kind is tuple:
        return "(" + ", ".join(items) + (",)" if len(items) == 1 else ")")
    body = "{" + ", ".join(sorted(items)) + "}"
    return body if kind is set else f"frozenset({body})"


def _playbook_lines(task: AgentTask) -> list[str]:
    lines = []
    for spec in task.agent_class.playbooks.values():
        kind = "LLM playbook" if spec.llm else "Python playbook"
        flags = (
            [kind] + (["public"] if spec.public else []) + (["runs at start"] if spec.begin else [])
        )
        lines.append(f"### {spec.signature}  ({', '.join(flags)})")
        if spec.steps:
            lines.append(spec.steps)
        for trigger in spec.triggers:
            lines.append(f"Trigger: {trigger}")
    return lines


def _others(task: AgentTask) -> list[str]:
    program = task.execution.program
    classes = program.agent_classes if program is not None else []
    lines = []
    for cls in classes:
        if cls is task.agent_class:
            continue
        public = [s.signature for s in cls.playbooks.values() if s.public]
        description = (cls.description.splitlines() or [""])[0]
        lines.append(
            f"- {cls.__name__}: {description}"
            + (f" Public playbooks: {', '.join(public)}" if public else "")
        )
    return lines


def build_prompt(task: AgentTask, frame: Frame) -> list[dict[str, str]]:
    """The chat messages for the next LLM call of ``frame``.

    An agent class with a ``__durably_prompt__(task, frame)`` static method builds its own
    prompt (a dialect: ``durably_playbooks`` sends Playbooks' interpreter contract); it
    must be as deterministic as this function.
    """
    agent = task.agent_class
    dialect = getattr(agent, "__durably_prompt__", None)
    if dialect is not None:
        custom: list[dict[str, str]] = dialect(task, frame)
        return custom
    system = [
        CONVENTIONS,
        "",
        f"# You are agent {agent.__name__} (id {task.agent_id})",
        agent.description or "(no description)",
        "",
        "## Your playbooks",
        *_playbook_lines(task),
    ]
    others = _others(task)
    if others:
        system += ["", "## Other agents", *others]
    spec = agent.playbooks.get(frame.playbook)
    current = [
        f"Call stack: {render(task.call_stack)}",
        f"Agent state: {render(task.agent.state.to_dict())}",
        f"Local variables: {render(task.visible_locals(frame))}",
    ]
    if spec is not None:
        intro = f"Execute playbook {frame.playbook}. Its steps:\n{spec.steps}"
    else:
        intro = (
            "Process the messages in the local variable `messages` (a list of "
            "{from, text, id}); use your playbooks where a trigger matches."
        )
    # System, then the instruction as the first user message, then the conversation
    # (assistant, user, ...): valid for strict chat templates, which want user and
    # assistant to alternate from a leading user turn. Only the last user message shows
    # the current state, so older turns stay byte-identical from call to call.
    messages = [{"role": "system", "content": "\n".join(system)}]
    if not frame.history:
        messages.append({"role": "user", "content": "\n".join([intro, *current])})
    else:
        messages.append({"role": "user", "content": intro})
        messages += frame.history[:-1]
        last = frame.history[-1]
        messages.append({"role": last["role"], "content": "\n".join([last["content"], *current])})
    return messages
