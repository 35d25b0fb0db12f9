"""Random multi-agent durably programs, with the scripted LLM responses that drive them.

A generated program is a program file (1-3 agent classes, each with LLM playbooks, public
playbooks and Python tools), a scripted-LLM file (``{"Agent.Playbook": [response, ...]}``)
and the user's inputs. The responses are Playbooks-style LLM code that exercises the
shapes durable execution must get right: awaits at top level and inside ``for``, ``while``,
``if/elif/else``, ``try/except/finally``, ``with``, comprehensions and f-strings; nested
LLM playbooks; public playbooks of other agents (and of the caller, and of itself) called
in the middle of a streamed response; ``get_or_create``; messages answered from
``ProcessMessages`` while the sender waits in ``Yield("agent ...")``; tools that mutate
``self.state``, raise, await a ``Say`` or run in loops; ``Yield("call")`` continuations,
responses that end in an error, ``Yield("user")`` with inputs, ``Return`` values of every
codec type, ``Yield("exit")``.

The generator *models* the program's control flow while it writes it: every loop count
and branch is a literal it chose, so it knows which playbook runs happen, in which order,
and appends exactly the responses they will ask for. Cross-agent work is synchronous (a
caller waits for its reply), so each agent's sequence of LLM calls is the same in every
run; that is what makes an uninterrupted run a valid reference for a resumed one.

Every decision is drawn from a :class:`Chooser`: from a seeded generator, or replayed from
a recorded list of choices. Option 0 is always the simplest one, so a failing program can
be shrunk by lowering its choices (see ``fuzzharness.shrink``).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

AGENTS = ("Alpha", "Beta", "Gamma")
SUBS = ("Sub1", "Sub2", "Sub3")
PUBLIC = ("Pub1", "Pub2")
TOOLS = (
    "Bump",
    "Take",
    "Fail",
    "Echo",
    "Announce",
    "Lookup",
    "Delegate",
    "Forward",
    "Twice",
    "AnnounceThenFail",
)

#: Every shape the generator can emit; a campaign's tally says how often each ran.
SHAPES = (
    "agents:1",
    "agents:2",
    "agents:3",
    "agents:two-begin",
    "depth:2",
    "depth:3",
    "await:top",
    "await:for",
    "await:for-enumerate",
    "await:while",
    "await:while-try-break",
    "await:if",
    "await:elif",
    "await:else",
    "await:try-except-finally",
    "await:with",
    "await:comprehension",
    "await:f-string",
    "llm:nested",
    "llm:several-calls",
    "llm:yield-call",
    "llm:error-ends-response",
    "remote:llm-playbook",
    "remote:tool",
    "remote:callback",
    "remote:self-call",
    "agent:get_or_create",
    "message:yield-agent",
    "message:process-messages",
    "tool:mutates-state",
    "tool:raises",
    "tool:in-loop",
    "tool:awaits-say",
    "tool:runs-llm-playbook",
    "tool:calls-other-agent",
    "remote:tool-runs-llm-playbook",
    "tool:calls-tools",
    "tool:raises-after-awaiting",
    "remote:keyword-argument",
    "exit:nested",
    "user:yield-user",
    "return:value",
    "exit:yield-exit",
    "trigger",
    "value:unstorable-local",
    "await:gather-refused",
)

#: Literal values of every type the codec stores (sources of Python expressions).
VALUES = (
    "7",
    "-3",
    "2**70",
    "3.25",
    "float('inf')",
    "'text'",
    "''",
    "None",
    "True",
    "[1, 'a', None]",
    "{'k': [1, 2], 'n': None}",
    "(1, 'x')",
    "{3, 1, 2}",
    "frozenset({'b', 'a'})",
    "b'raw\\x00'",
    "bytearray(b'ab')",
    "{'nested': {'t': (1, 2), 's': {1}}}",
    "__import__('decimal').Decimal('1.10')",
    "__import__('datetime').date(2026, 12, 4)",
    "complex(1, -2)",
    "__import__('fractions').Fraction(1, 3)",
    "list(range(20))",
    "range(2, 9, 3)",
    "slice(1, None)",
    "...",
    "__import__('re').compile('a+b', 2)",
    "ValueError('boom', 3)",
    "__import__('math').sqrt",
    "__import__('collections').Counter",
    "{(1, 2): 'pair', 3: 'int', 'k': {'red', 'green', 'blue'}}",
    "{'tags': {'red', 'green', 'blue', 'cyan'}}",
)


class Chooser:
    """Where the generator's decisions come from.

    Args:
        seed: Seed of the random source for decisions past ``prefix`` (None: always 0).
        prefix: Recorded decisions to replay first (clamped to each decision's range).
    """

    def __init__(self, seed: int | None = None, prefix: list[int] | None = None) -> None:
        self.rng = random.Random(seed) if seed is not None else None
        self.prefix = list(prefix or [])
        self.record: list[int] = []

    def draw(self, n: int) -> int:
        """A decision in ``range(n)``; 0 is the simplest option."""
        i = len(self.record)
        if i < len(self.prefix):
            value = min(self.prefix[i], n - 1)
        elif self.rng is not None:
            value = self.rng.randrange(n)
        else:
            value = 0
        self.record.append(value)
        return value

    def pick(self, options: list[tuple[str, int]]) -> str:
        """One of weighted ``options``; the first is the simplest."""
        total = sum(weight for _, weight in options)
        value = self.draw(total)
        for name, weight in options:
            if value < weight:
                return name
            value -= weight
        raise AssertionError("unreachable")

    def chance(self, percent: int) -> bool:
        """True with probability ``percent``; False is the simpler outcome."""
        return self.draw(100) >= 100 - percent


@dataclass
class Generated:
    """A generated program: its files' contents and what it exercises."""

    source: str
    script: dict[str, list[str]]
    inputs: list[str]
    shapes: Counter[str]
    choices: list[int]
    snapshot_every: int
    keep_last: int
    exits: bool
    agents: int

    def write(self, directory: Path) -> tuple[Path, Path]:
        """Write ``program.py`` and ``script.json`` into ``directory``; return their paths."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        program = folder / "program.py"
        script = folder / "script.json"
        program.write_text(self.source, encoding="utf-8")
        script.write_text(json.dumps(self.script, indent=1), encoding="utf-8")
        return program, script


@dataclass
class Stmt:
    """A top-level statement (or block) of LLM code, and what running it asks for."""

    lines: list[str]
    run: Callable[[], None] = lambda: None
    raises: bool = False
    defines: tuple[str, ...] = ()


@dataclass
class _Frame:
    agent: str
    playbook: str
    depth: int
    chain: tuple[str, ...]
    """Agents blocked below this frame, waiting for it (outermost first), plus its own."""
    defined: list[str] = field(default_factory=list)
    handles: dict[str, str] = field(default_factory=dict)
    """Local names that hold an agent handle -> the agent class."""


class _Builder:
    def __init__(self, ch: Chooser, max_llm_calls: int) -> None:
        self.ch = ch
        self.max_llm_calls = max_llm_calls
        self.n_agents = 1 + ch.draw(3)
        self.script: dict[str, list[str]] = {}
        self.inputs: list[str] = []
        self.shapes: Counter[str] = Counter()
        self.created = ["Alpha"]
        self.llm_calls = 0
        self.names = 0
        self.exits = False
        self.iterators = True

    # -------------------------------------------------------------- helpers

    def fresh(self, stem: str) -> str:
        self.names += 1
        return f"{stem}{self.names}"

    def budget(self) -> bool:
        return self.llm_calls < self.max_llm_calls

    def value(self, frame: _Frame) -> str:
        if frame.defined and self.ch.chance(30):
            return frame.defined[self.ch.draw(len(frame.defined))]
        return VALUES[self.ch.draw(len(VALUES))]

    # ------------------------------------------------------------ playbook runs

    def run_playbook(
        self,
        agent: str,
        playbook: str,
        depth: int,
        chain: tuple[str, ...],
        reply_to: str | None = None,
    ) -> None:
        """Write the responses of one run of ``agent.playbook`` (in the order it asks)."""
        self.shapes[f"depth:{depth + 1}"] += depth > 0
        frame = _Frame(agent, playbook, depth, chain)
        if playbook == "ProcessMessages":
            frame.defined.append("messages")
        key = f"{agent}.{playbook}"
        calls = 1 + (self.ch.draw(3) if self.budget() else 0)
        if calls > 1:
            self.shapes["llm:several-calls"] += 1
        for number in range(calls):
            self.llm_calls += 1
            last = number == calls - 1
            responses = self.script.setdefault(key, [])
            slot = len(responses)
            responses.append("")  # reserve: nested runs of the same key come after this one
            body = [
                f"# execution_id: {self.llm_calls}",
                f"# recap: {playbook} call {number + 1} of {calls}",
                "# plan: generated statements",
            ]
            statements = self.statements(frame, 1 + self.ch.draw(4))
            ended = False
            for stmt in statements:
                body += stmt.lines
                stmt.run()
                frame.defined += stmt.defines
            if reply_to is not None and last:
                body.append(
                    f'await self.Say("agent " + messages[0]["from"], '
                    f"f\"{agent} answers {{messages[0]['text']}}\")"
                )
            if not last and self.ch.chance(25):
                error = self.error_statement(frame)
                body += error.lines
                self.shapes["llm:error-ends-response"] += 1
                ended = True
            if not ended:
                body += self.ending(frame, last)
            if self.ch.chance(20):  # text after the end of the response never runs
                body += self.dead(frame).lines
            responses[slot] = "```python\n" + "\n".join(body) + "\n```\n"

    def ending(self, frame: _Frame, last: bool) -> list[str]:
        step = f'await self.Step("{frame.playbook}:09:RET")'
        if not last:
            self.shapes["llm:yield-call"] += 1
            return [f'await self.Step("{frame.playbook}:08:YLD")', 'await self.Yield("call")']
        if frame.playbook == "Main" and frame.depth == 0 and self.ch.chance(25):
            self.exits = True
            self.shapes["exit:yield-exit"] += 1
            return [step, f"self.state.result = {self.value(frame)}", 'await self.Yield("exit")']
        if frame.depth > 0 and not self.exits and self.ch.draw(40) == 39:
            # The program ends here: the callers' remaining responses are never asked for.
            self.exits = True
            self.shapes["exit:nested"] += 1
            return [step, 'await self.Yield("exit")']
        self.shapes["return:value"] += 1
        return [step, f"await self.Return({self.value(frame)})"]

    def error_statement(self, frame: _Frame) -> Stmt:
        kind = self.ch.pick([("zero", 2), ("tool", 2), ("name", 1)])
        if kind == "tool":
            self.shapes["tool:raises"] += 1
            return Stmt(['await self.Fail("the code did not catch this")'], raises=True)
        if kind == "name":
            return Stmt(["value = undefined_name + 1"], raises=True)
        return Stmt(["ratio = 1 / 0"], raises=True)

    # ---------------------------------------------------------------- statements

    def statements(self, frame: _Frame, count: int) -> list[Stmt]:
        return [self.statement(frame) for _ in range(count)]

    def statement(self, frame: _Frame, *, nested: bool = True) -> Stmt:
        options = [
            ("step", 3),
            ("say", 4),
            ("state", 3),
            ("bump", 3),
            ("echo", 2),
            ("announce", 2),
            ("user", 2),
            ("trigger", 1),
            ("for", 3),
            ("while", 2),
            ("while_try", 2),
            ("if", 3),
            ("try", 3),
            ("with", 2),
            ("comprehension", 2),
            ("fstring", 2),
            *([("iterator", 1)] if self.iterators else []),
        ]
        if nested and self.budget():
            if frame.depth < 2:
                options += [("sub", 5)]
            options += [
                ("create", 2),
                ("remote", 5),
                ("remote_tool", 3),
                ("delegate", 2),
                ("forward", 2),
                ("gather", 1),
            ]
            if self.idle_agents(frame):
                options += [("message", 4)]
            if frame.depth < 2:
                options += [("self_call", 1)]
        shape = self.ch.pick(options)
        stmt = getattr(self, f"s_{shape}")(frame)
        assert isinstance(stmt, Stmt)
        return stmt

    def leaf(self, frame: _Frame, indent: str, var: str | None = None) -> Stmt:
        """A simple await for a block body (``var`` is the loop variable, if any)."""
        shape = self.ch.pick(
            [("say", 3), ("bump", 3), ("echo", 2), ("step", 1), ("announce", 1), ("twice", 1)]
        )
        arg = var or "1"
        if shape == "say":
            return Stmt([f'{indent}await self.Say("user", f"{frame.playbook} at {{{arg}}}")'])
        if shape == "bump":
            self.shapes["tool:mutates-state"] += 1
            return Stmt([f"{indent}await self.Bump({arg})"])
        if shape == "echo":
            return Stmt([f"{indent}seen_{self.names} = await self.Echo({arg})"])
        if shape == "announce":
            self.shapes["tool:awaits-say"] += 1
            return Stmt([f'{indent}await self.Announce(f"announce {{{arg}}}")'])
        if shape == "twice":
            self.shapes["tool:calls-tools"] += 1
            return Stmt([f"{indent}await self.Twice({arg})"])
        return Stmt([f'{indent}await self.Step(f"{frame.playbook}:0{{{arg}}}:EXE")'])

    def dead(self, frame: _Frame) -> Stmt:
        return Stmt(['await self.Say("user", "this text follows the end and never runs")'])

    # simple awaits --------------------------------------------------------------

    def s_step(self, frame: _Frame) -> Stmt:
        self.shapes["await:top"] += 1
        return Stmt([f'await self.Step("{frame.playbook}:0{1 + self.ch.draw(8)}:EXE")'])

    def s_say(self, frame: _Frame) -> Stmt:
        self.shapes["await:top"] += 1
        if frame.defined and self.ch.chance(40):
            name = frame.defined[self.ch.draw(len(frame.defined))]
            # Sets are shown sorted: the iteration order of a set of strings differs from
            # one process to the next (hash randomization), with or without a crash.
            shown = f"sorted({name}, key=repr) if isinstance({name}, (set, frozenset)) else {name}"
            return Stmt([f'await self.Say("user", f"{frame.agent} has {{({shown})!r}}")'])
        return Stmt([f'await self.Say("user", "{frame.agent} {frame.playbook} line {self.names}")'])

    def s_iterator(self, frame: _Frame) -> Stmt:
        """A local no snapshot can hold (an iterator) across awaits: the agent's snapshots
        wait until it is deleted (``on_unserializable = "replay"``)."""
        self.shapes["value:unstorable-local"] += 1
        self.shapes["await:top"] += 1
        it, left = self.fresh("it"), self.fresh("left")
        return Stmt(
            [
                f"{it} = iter([3, 1, 2])",
                f'await self.Say("user", f"{frame.agent} first {{next({it})}}")',
                "await self.Bump(1)",
                f"{left} = list({it})",
                f"del {it}",
            ],
            defines=(left,),
        )

    def s_gather(self, frame: _Frame) -> Stmt:
        """An agent's operations awaited concurrently -- a call to another agent's public
        tool (it waits for the reply) beside one of its own tools -- refused
        (``ConcurrentAwaitError``, a ``RuntimeError``) before anything is journaled, in
        every run alike. (Let through, a resume asked for them in another order.)"""
        self.shapes["await:gather-refused"] += 1
        targets = self.targets(frame)
        target = targets[self.ch.draw(len(targets))]
        get, handle = self.handle(frame, target)
        name = self.fresh("gathered")
        return Stmt(
            [
                *get,
                "try:",
                f"    {name} = await __import__('asyncio').gather("
                f"{handle}.Lookup('{self.fresh('key')}'), self.Bump(1))",
                "except RuntimeError as exc:",
                f"    {name} = type(exc).__name__",
            ],
            defines=(name,),
        )

    def s_state(self, frame: _Frame) -> Stmt:
        name = self.fresh("v")
        return Stmt([f"self.state.{name} = {self.value(frame)}"])

    def s_bump(self, frame: _Frame) -> Stmt:
        self.shapes["tool:mutates-state"] += 1
        self.shapes["await:top"] += 1
        name = self.fresh("total")
        return Stmt([f"{name} = await self.Bump({1 + self.ch.draw(5)})"], defines=(name,))

    def s_echo(self, frame: _Frame) -> Stmt:
        self.shapes["await:top"] += 1
        name = self.fresh("echoed")
        return Stmt([f"{name} = await self.Echo({self.value(frame)})"], defines=(name,))

    def s_announce(self, frame: _Frame) -> Stmt:
        self.shapes["tool:awaits-say"] += 1
        return Stmt([f'await self.Announce("{frame.agent} announces {self.names}")'])

    def s_user(self, frame: _Frame) -> Stmt:
        self.shapes["user:yield-user"] += 1
        name = self.fresh("answer")

        def run() -> None:
            self.inputs.append(f"input {len(self.inputs) + 1} for {frame.agent}")

        return Stmt(
            [
                f'await self.Say("user", "{frame.agent} asks a question")',
                f'{name} = await self.Yield("user")',
            ],
            run,
            defines=(name,),
        )

    def s_trigger(self, frame: _Frame) -> Stmt:
        self.shapes["trigger"] += 1
        return Stmt([f'await self.LogTrigger("{frame.playbook}:T1:EVT")'])

    # blocks ------------------------------------------------------------------------

    def body(self, frame: _Frame, indent: str, var: str | None) -> list[Stmt]:
        """1-2 statements of a block body; a nested call only while the budget allows."""
        parts = [self.leaf(frame, indent, var)]
        if self.budget() and self.ch.chance(30):
            call = self.call(frame, indent, var)
            if call is not None:
                parts.append(call)
        return parts

    def s_for(self, frame: _Frame) -> Stmt:
        self.shapes["await:for"] += 1
        self.shapes["tool:in-loop"] += 1
        var, count = self.fresh("i"), 1 + self.ch.draw(3)
        parts = self.body(frame, "    ", var)

        def run() -> None:
            for _ in range(count):
                for part in parts:
                    part.run()

        head = f"for {var} in range({count}):"
        if self.ch.chance(50):  # stepped too, its position holding the start
            self.shapes["await:for-enumerate"] += 1
            head = f"for _, {var} in enumerate(list(range({count})), {self.ch.draw(3)}):"
        lines = [head] + [ln for p in parts for ln in p.lines]
        return Stmt(lines, run, defines=(var,))

    def s_while(self, frame: _Frame) -> Stmt:
        self.shapes["await:while"] += 1
        var, count = self.fresh("j"), 1 + self.ch.draw(3)
        parts = self.body(frame, "    ", var)

        def run() -> None:
            for _ in range(count):
                for part in parts:
                    part.run()

        lines = [f"{var} = 0", f"while {var} < {count}:"]
        lines += [ln for p in parts for ln in p.lines] + [f"    {var} += 1"]
        return Stmt(lines, run, defines=(var,))

    def s_while_try(self, frame: _Frame) -> Stmt:
        """The shape of a tool called until it raises (``while True: try ... except: break``)."""
        self.shapes["await:while-try-break"] += 1
        self.shapes["tool:raises"] += 1
        self.shapes["tool:in-loop"] += 1
        found, key, limit = self.fresh("found"), self.fresh("w"), self.ch.draw(4)
        item = self.fresh("item")
        parts = self.body(frame, "    ", item) if self.ch.chance(40) else []

        def run() -> None:
            for _ in range(limit):
                for part in parts:
                    part.run()

        lines = [
            f"{found} = []",
            "while True:",
            "    try:",
            f'        {item} = await self.Take("{key}", {limit})',
            "    except ValueError:",
            "        break",
            f"    {found}.append({item})",
        ]
        lines += [ln for p in parts for ln in p.lines]
        return Stmt(lines, run, defines=(found,))

    def s_if(self, frame: _Frame) -> Stmt:
        var, taken = self.fresh("sel"), self.ch.draw(3)
        self.shapes[("await:if", "await:elif", "await:else")[taken]] += 1
        branches = []
        for index in range(3):
            if index == taken:
                branches.append(self.body(frame, "    ", var))
            else:
                branches.append([self.leaf(frame, "    ", var)])

        def run() -> None:
            for part in branches[taken]:
                part.run()

        lines = [f"{var} = {taken}", f"if {var} == 0:"]
        lines += [ln for p in branches[0] for ln in p.lines] + [f"elif {var} == 1:"]
        lines += [ln for p in branches[1] for ln in p.lines] + ["else:"]
        lines += [ln for p in branches[2] for ln in p.lines]
        return Stmt(lines, run, defines=(var,))

    def s_try(self, frame: _Frame) -> Stmt:
        self.shapes["await:try-except-finally"] += 1
        self.shapes["tool:raises"] += 1
        before = self.body(frame, "    ", None)
        handler = [self.leaf(frame, "    ", None)]
        final = [self.leaf(frame, "    ", None)]

        def run() -> None:
            for part in before + handler + final:
                part.run()

        lines = ["try:"] + [ln for p in before for ln in p.lines]
        if self.ch.chance(30):
            self.shapes["tool:raises-after-awaiting"] += 1
            failing = '    await self.AnnounceThenFail("about to fail")'
        else:
            failing = '    await self.Fail("expected failure")'
        lines += [
            failing,
            "except ValueError as err:",
            '    await self.Say("user", f"caught {err}")',
        ]
        lines += [ln for p in handler for ln in p.lines] + ["finally:"]
        lines += [ln for p in final for ln in p.lines]
        return Stmt(lines, run)

    def s_with(self, frame: _Frame) -> Stmt:
        self.shapes["await:with"] += 1
        parts = self.body(frame, "    ", None)

        def run() -> None:
            for part in parts:
                part.run()

        lines = ["import contextlib", "with contextlib.suppress(KeyError):"]
        lines += [ln for p in parts for ln in p.lines] + ['    raise KeyError("suppressed")']
        return Stmt(lines, run)

    def s_comprehension(self, frame: _Frame) -> Stmt:
        self.shapes["await:comprehension"] += 1
        self.shapes["tool:in-loop"] += 1
        name, count = self.fresh("squares"), 1 + self.ch.draw(3)
        tool = "Bump" if self.ch.chance(50) else "Echo"
        if tool == "Bump":
            self.shapes["tool:mutates-state"] += 1
        return Stmt(
            [f"{name} = [await self.{tool}(n * n) for n in range({count})]"], defines=(name,)
        )

    def s_fstring(self, frame: _Frame) -> Stmt:
        self.shapes["await:f-string"] += 1
        self.shapes["tool:mutates-state"] += 1
        return Stmt(
            [
                f'await self.Say("user", f"{frame.agent} total is '
                f'{{await self.Bump({1 + self.ch.draw(3)})}}")'
            ]
        )

    # calls ---------------------------------------------------------------------------

    def call(self, frame: _Frame, indent: str, var: str | None) -> Stmt | None:
        """A nested or remote call usable in a block body (or None if none is possible)."""
        options = [("remote_tool", 2), ("remote", 3)]
        if frame.depth < 2:
            options.append(("sub", 3))
        shape = self.ch.pick(options)
        stmt: Stmt = getattr(self, f"s_{shape}")(frame, arg=var, block=True)
        stmt.lines = [indent + line for line in stmt.lines]
        stmt.defines = ()
        return stmt

    def s_sub(self, frame: _Frame, arg: str | None = None, block: bool = False) -> Stmt:
        self.shapes["llm:nested"] += 1
        start = SUBS.index(frame.playbook) + 1 if frame.playbook in SUBS else 0
        if start >= len(SUBS):
            return self.s_bump(frame)
        sub = SUBS[start + self.ch.draw(len(SUBS) - start)]
        name = self.fresh("sub")
        agent, depth, chain = frame.agent, frame.depth + 1, frame.chain

        def run() -> None:
            self.run_playbook(agent, sub, depth, chain)

        return Stmt(
            [f"{name} = await self.{sub}({arg or self.value(frame)})"], run, defines=(name,)
        )

    def handle(self, frame: _Frame, target: str, *, block: bool = False) -> tuple[list[str], str]:
        """Code that gets a handle on ``target`` (created if new) and its local name.

        In a block body (``block``) the handle is not kept for later statements: the
        block's code may not run.
        """
        for name, cls in frame.handles.items():
            if cls == target and self.ch.chance(60):
                return [], name
        self.shapes["agent:get_or_create"] += 1
        name = self.fresh(f"h_{target.lower()}")
        if not block:
            frame.handles[name] = target
        if target not in self.created:
            self.created.append(target)
        return [f"{name} = await {target}.get_or_create(requester=self)"], name

    def targets(self, frame: _Frame) -> list[str]:
        return list(AGENTS[: self.n_agents])

    def idle_agents(self, frame: _Frame) -> list[str]:
        return [a for a in AGENTS[: self.n_agents] if a not in frame.chain and a != frame.agent]

    def s_create(self, frame: _Frame) -> Stmt:
        others = self.idle_agents(frame) or self.targets(frame)
        lines, _ = self.handle(frame, others[self.ch.draw(len(others))])
        if not lines:
            return self.s_step(frame)
        return Stmt(lines)

    def s_remote(self, frame: _Frame, arg: str | None = None, block: bool = False) -> Stmt:
        targets = self.targets(frame)
        target = targets[self.ch.draw(len(targets))]
        if target == frame.agent:
            self.shapes["remote:self-call"] += 1
        elif target in frame.chain:
            self.shapes["remote:callback"] += 1
        else:
            self.shapes["remote:llm-playbook"] += 1
        get, handle = self.handle(frame, target, block=block)
        playbook = PUBLIC[self.ch.draw(len(PUBLIC))]
        name = self.fresh("remote")
        depth, chain = frame.depth + 1, (*frame.chain, target)

        def run() -> None:
            self.run_playbook(target, playbook, depth, chain)

        value = arg or self.value(frame)
        if self.ch.chance(25):
            self.shapes["remote:keyword-argument"] += 1
            value = f"x={value}"
        if get and block:  # inside a block: get the handle in the same line
            return Stmt(
                [
                    f"{name} = await (await {target}.get_or_create(requester=self))"
                    f".{playbook}({value})"
                ],
                run,
                defines=(name,),
            )
        return Stmt([*get, f"{name} = await {handle}.{playbook}({value})"], run, defines=(name,))

    def s_self_call(self, frame: _Frame) -> Stmt:
        self.shapes["remote:self-call"] += 1
        get, handle = self.handle(frame, frame.agent)
        playbook = PUBLIC[self.ch.draw(len(PUBLIC))]
        name = self.fresh("mine")
        agent, depth, chain = frame.agent, frame.depth + 1, frame.chain

        def run() -> None:
            self.run_playbook(agent, playbook, depth, chain)

        return Stmt(
            [*get, f"{name} = await {handle}.{playbook}({self.value(frame)})"], run, defines=(name,)
        )

    def s_remote_tool(self, frame: _Frame, arg: str | None = None, block: bool = False) -> Stmt:
        self.shapes["remote:tool"] += 1
        targets = self.targets(frame)
        target = targets[self.ch.draw(len(targets))]
        get, handle = self.handle(frame, target, block=block)
        name = self.fresh("looked")
        value = f"str({arg})" if arg else f"'{self.fresh('key')}'"
        tool, run = "Lookup", Stmt([]).run
        if self.ch.chance(35):  # a public tool that runs an LLM playbook of its agent
            self.shapes["remote:tool-runs-llm-playbook"] += 1
            tool, depth, chain = "Delegate", frame.depth + 1, (*frame.chain, target)

            def run() -> None:
                self.run_playbook(target, "Sub3", depth, chain)

        if get and block:
            return Stmt(
                [f"{name} = await (await {target}.get_or_create(requester=self)).{tool}({value})"],
                run,
                defines=(name,),
            )
        return Stmt([*get, f"{name} = await {handle}.{tool}({value})"], run, defines=(name,))

    def s_delegate(self, frame: _Frame) -> Stmt:
        """A tool of this agent that runs one of its LLM playbooks."""
        self.shapes["tool:runs-llm-playbook"] += 1
        name = self.fresh("delegated")
        agent, depth, chain = frame.agent, frame.depth + 1, frame.chain

        def run() -> None:
            self.run_playbook(agent, "Sub3", depth, chain)

        return Stmt([f"{name} = await self.Delegate({self.value(frame)})"], run, defines=(name,))

    def s_forward(self, frame: _Frame) -> Stmt:
        """A tool of this agent that calls a public playbook of another agent."""
        self.shapes["tool:calls-other-agent"] += 1
        targets = self.targets(frame)
        target = targets[self.ch.draw(len(targets))]
        name = self.fresh("forwarded")
        depth, chain = frame.depth + 1, (*frame.chain, target)

        def run() -> None:
            self.run_playbook(target, "Pub1", depth, chain)

        return Stmt(
            [f'{name} = await self.Forward("{target}", {self.value(frame)})'], run, defines=(name,)
        )

    def s_message(self, frame: _Frame) -> Stmt:
        self.shapes["message:yield-agent"] += 1
        self.shapes["message:process-messages"] += 1
        idle = self.idle_agents(frame)
        target = idle[self.ch.draw(len(idle))]
        get, handle = self.handle(frame, target)
        name = self.fresh("reply")
        agent, chain = frame.agent, (*frame.chain, target)

        def run() -> None:
            self.run_playbook(target, "ProcessMessages", 0, chain, reply_to=agent)

        return Stmt(
            [
                *get,
                f'await self.Say({handle}.id, "{agent} asks {target} {name}")',
                f'{name} = await self.Yield(f"agent {{{handle}.id}}")',
            ],
            run,
            defines=(name,),
        )


PROGRAM_HEAD = '''"""A generated durably program (tests/fuzz/fuzzgen.py)."""

import os
from collections import Counter

from durably import Agent, playbook

TOOL_RUNS: Counter = Counter()
"""(event, Agent.Tool) -> count of this process's tool runs ("start" and "end")."""


def _note(event, name):
    TOOL_RUNS[(event, name)] += 1
    path = os.environ.get("DURABLY_FUZZ_TOOL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{event} {name}\\n")
'''

AGENT_TEMPLATE = '''

class {name}(Agent):
    """Agent {name} of a generated program."""
{main}
    @playbook(llm=True)
    async def Sub1(self, x=None):
        """- 01:EXE work on $x
        - 02:RET a value"""

    @playbook(llm=True)
    async def Sub2(self, x=None):
        """- 01:EXE work on $x
        - 02:RET a value"""

    @playbook(llm=True)
    async def Sub3(self, x=None):
        """- 01:EXE work on $x
        - 02:RET a value"""

    @playbook(llm=True, public=True)
    async def Pub1(self, x=None):
        """- 01:EXE serve a request about $x
        - 02:RET a value"""

    @playbook(llm=True, public=True)
    async def Pub2(self, x=None):
        """- 01:EXE serve another request about $x
        - 02:RET a value"""

    @playbook
    async def Bump(self, k: int) -> int:
        """Add k to the running total in the state."""
        _note("start", "{name}.Bump")
        self.state.total = self.state.total + k if "total" in self.state else k
        _note("end", "{name}.Bump")
        return self.state.total

    @playbook
    async def Take(self, key: str, limit: int) -> int:
        """The next number of counter `key`; ValueError once `limit` were taken."""
        _note("start", "{name}.Take")
        taken = dict(self.state.taken) if "taken" in self.state else {{}}
        if taken.get(key, 0) >= limit:
            _note("end", "{name}.Take")
            raise ValueError(f"{{key}} is exhausted")
        taken[key] = taken.get(key, 0) + 1
        self.state.taken = taken
        _note("end", "{name}.Take")
        return taken[key]

    @playbook
    async def Fail(self, message: str) -> None:
        """Always raises ValueError."""
        _note("start", "{name}.Fail")
        _note("end", "{name}.Fail")
        raise ValueError(message)

    @playbook
    async def Echo(self, value=None):
        """Return the value."""
        _note("start", "{name}.Echo")
        _note("end", "{name}.Echo")
        return value

    @playbook
    async def Announce(self, text: str) -> int:
        """Tell the user (a tool that awaits a durable operation)."""
        _note("start", "{name}.Announce")
        await self.Say("user", text)
        _note("end", "{name}.Announce")
        return len(text)

    @playbook
    async def Twice(self, k: int) -> int:
        """A tool that calls another tool twice."""
        _note("start", "{name}.Twice")
        first = await self.Bump(k)
        second = await self.Bump(k)
        _note("end", "{name}.Twice")
        return first + second

    @playbook
    async def AnnounceThenFail(self, text: str) -> None:
        """A tool that says something, then raises ValueError."""
        _note("start", "{name}.AnnounceThenFail")
        await self.Say("user", text)
        _note("end", "{name}.AnnounceThenFail")
        raise ValueError(text)

    @playbook(public=True)
    async def Delegate(self, x=None) -> dict:
        """A public tool that runs an LLM playbook of this agent."""
        _note("start", "{name}.Delegate")
        value = await self.Sub3(x)
        _note("end", "{name}.Delegate")
        return {{"delegated": value}}

    @playbook
    async def Forward(self, agent: str, x=None):
        """A tool that calls a public playbook of another agent (or of this one)."""
        _note("start", "{name}.Forward")
        other = await globals()[agent].get_or_create(requester=self)
        value = await other.Pub1(x)
        _note("end", "{name}.Forward")
        return value

    @playbook(public=True)
    async def Lookup(self, key: str) -> dict:
        """A public tool."""
        _note("start", "{name}.Lookup")
        self.state.lookups = self.state.lookups + 1 if "lookups" in self.state else 1
        _note("end", "{name}.Lookup")
        return {{"key": key, "agent": "{name}", "n": self.state.lookups}}
'''

MAIN = '''
    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE do the generated work
        - 02:RET the result"""
'''


def render_program(n_agents: int, omega: bool = False) -> str:
    """The program file of a generated program with ``n_agents`` agent classes (and
    ``Omega``, a second agent that begins, which no other agent calls)."""
    parts = [PROGRAM_HEAD]
    for index, name in enumerate(AGENTS[:n_agents]):
        parts.append(AGENT_TEMPLATE.format(name=name, main=MAIN if index == 0 else ""))
    if omega:
        parts.append(AGENT_TEMPLATE.format(name="Omega", main=MAIN))
    return "".join(parts)


def _omega_main(chooser: Chooser) -> str:
    """Omega's one response: a few statements that concern no other agent (so that how
    its checkpoints interleave with the others' changes no agent's history)."""
    body = ["# execution_id: omega", "# recap: Main call 1 of 1", "# plan: begin beside Alpha"]
    for i in range(1 + chooser.draw(4)):
        body.append(
            (
                f'await self.Say("user", "Omega line {i}")',
                'await self.Step("Main:01:EXE")',
                f"total{i} = await self.Bump({i + 1})",
            )[chooser.draw(3)]
        )
    body += ['await self.Step("Main:09:RET")', 'await self.Return("omega")']
    return "```python\n" + "\n".join(body) + "\n```\n"


def generate(
    chooser: Chooser, *, max_llm_calls: int = 12, omega: bool = True, iterators: bool = True
) -> Generated:
    """Generate one program (its source, responses and inputs) from ``chooser``; with
    ``omega``, sometimes with a second agent that begins (whose lines and calls
    interleave with the others' as the scheduler has it: a harness that compares the
    order across agents passes False); with ``iterators``, sometimes with an iterator
    kept across awaits (a harness that runs it passes ``on_unserializable = "replay"``)."""
    builder = _Builder(chooser, max_llm_calls)
    builder.iterators = iterators
    builder.shapes[f"agents:{builder.n_agents}"] += 1
    snapshot_every = (1, 4, 16)[chooser.draw(3)]
    keep_last = (0, 3)[chooser.draw(2)]
    builder.run_playbook("Alpha", "Main", 0, ("Alpha",))
    # Two agents begin at once: a crash can come between their first snapshots. (Not
    # with a Yield("exit"), which would stop Omega wherever the scheduler left it.)
    omega = omega and not builder.exits and chooser.chance(30)
    if omega:
        builder.shapes["agents:two-begin"] += 1
        builder.script["Omega.Main"] = [_omega_main(chooser)]
    return Generated(
        source=render_program(builder.n_agents, omega),
        script=builder.script,
        inputs=builder.inputs,
        shapes=+builder.shapes,
        choices=list(chooser.record),
        snapshot_every=snapshot_every,
        keep_last=keep_last,
        exits=builder.exits,
        agents=builder.n_agents,
    )
