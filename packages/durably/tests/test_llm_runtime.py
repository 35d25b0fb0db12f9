"""What the runtime does with an LLM's answers: budgets, the no-code rule, cut-off
responses, usage accounting and the shape of the prompts it sends.

The client here is a scripted object that can cut a response off with any of the
contract's errors; the SDK clients are tested against real-format servers elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from durably._inspect import describe_execution, render_show
from durably.checkpoint import CheckpointManager
from durably.config import load_config
from durably.llm import (
    Finish,
    IncompleteResponseError,
    LLMBudgetExceededError,
    LLMError,
    LLMLimits,
    NoCodeError,
    ResponseTruncatedError,
)
from durably.runner import resume_execution, run_program

PROGRAM = '''
from durably import Agent, playbook


class Looper(Agent):
    """You tell the user about steps."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE tell the user about each step
        - 02:RET ok"""
'''


def say(i: int) -> str:
    return (
        f'```python\n# execution_id: {i}\nawait self.Say("user", "step {i}")\n'
        'await self.Yield("call")\n```'
    )


RETURN = '```python\nawait self.Step("Main:02:RET")\nawait self.Return("ok")\n```'


@dataclass
class Reply:
    """One request's answer: ``text`` streamed in small chunks; cut after ``cut``
    characters with ``error`` (and then no Finish); ``finish=False`` for a client that
    never reports the end."""

    text: str
    cut: int | None = None
    error: type[LLMError] = IncompleteResponseError
    tokens: tuple[int, int] | None = None
    finish: bool = True


@dataclass
class Script:
    """An LLM client answering each request with the next :class:`Reply`."""

    replies: list[Reply]
    spec: str = "test:script"
    requests: list[tuple[list[dict[str, str]], str]] = field(default_factory=list)

    async def stream(
        self,
        messages: list[dict[str, str]],
        *,
        agent: str,
        playbook: str,
        call: int,
        prefix: str = "",
    ) -> AsyncIterator[str | Finish]:
        self.requests.append((messages, prefix))
        if not self.replies:
            raise LLMError(f"the script has no reply for request {len(self.requests)}")
        reply = self.replies.pop(0)
        text = reply.text
        if prefix:
            assert text.startswith(prefix), (prefix, text)
            text = text[len(prefix) :]
        if reply.cut is not None:
            for start in range(0, reply.cut - len(prefix), 5):
                yield text[start : min(start + 5, reply.cut - len(prefix))]
            raise reply.error("the connection dropped")
        for start in range(0, len(text), 5):
            yield text[start : start + 5]
        if reply.finish:
            prompt, completion = reply.tokens or (None, None)
            yield Finish("stop", model="m1", prompt_tokens=prompt, completion_tokens=completion)


@pytest.fixture
def program(tmp_path: Path) -> Path:
    path = tmp_path / "looper.py"
    path.write_text(PROGRAM)
    return path


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"file://{tmp_path}/store"


def run(program: Path, store: str, client: Script, execution_id: str = "x", **options: Any) -> Any:
    return asyncio.run(
        run_program(
            program,
            llm=client,
            llm_options=options,
            store=store,
            execution_id=execution_id,
            echo=None,
        )
    )


def resume(store: str, client: Script, execution_id: str = "x", **options: Any) -> Any:
    config = load_config(overrides={"store": store}, use_env=False)
    return asyncio.run(
        resume_execution(execution_id, llm=client, llm_options=options, config=config, echo=None)
    )


def view(store: str, execution_id: str = "x") -> dict[str, Any]:
    from durably import open_store

    async def describe() -> dict[str, Any]:
        config = load_config(overrides={"store": store}, use_env=False)
        async with open_store(config=config) as provider:
            found = await describe_execution(
                CheckpointManager(execution_id, provider, config=config)
            )
        assert found is not None
        return found

    return asyncio.run(describe())


def said(data: dict[str, Any]) -> list[str]:
    return [item["text"] for item in data["transcript"]]


def uninterrupted(program: Path, store: str, replies: list[Reply]) -> dict[str, Any]:
    result = run(program, store, Script(replies), execution_id="reference")
    assert result.status == "completed"
    return view(store, "reference")


# ------------------------------------------------------------------ prompt shape


def test_every_prompt_alternates_from_a_leading_user_turn_and_keeps_the_instruction(
    program: Path, store: str
) -> None:
    client = Script([Reply(say(1)), Reply(say(2)), Reply(RETURN)])
    assert run(program, store, client).status == "completed"
    assert len(client.requests) == 3
    for number, (messages, _) in enumerate(client.requests):
        roles = [m["role"] for m in messages]
        assert roles == ["system", "user"] + ["assistant", "user"] * number
        assert messages[1]["content"].startswith("Execute playbook Main. Its steps:")
        assert "Agent state:" in messages[-1]["content"]
        assert all("Agent state:" not in m["content"] for m in messages[1:-1]) or number == 0
    # Earlier turns are the same bytes in every later prompt.
    _, second, third = (messages for messages, _ in client.requests)
    assert third[:3] == second[:3]
    # A response counts up to the statement that ended it (here the Yield).
    assert third[2] == {"role": "assistant", "content": say(1)[: say(1).index("\n```")]}


# ------------------------------------------------------------------ the no-code rule


def test_a_reply_without_code_is_corrected_once_then_fails_after_two_calls(
    program: Path, store: str
) -> None:
    client = Script(
        [
            Reply("Sure! I will tell the user about each step."),
            Reply("As I said, I will tell the user."),
            Reply(say(1)),
        ]
    )
    with pytest.raises(NoCodeError, match="2 times in a row"):
        run(program, store, client)
    assert len(client.requests) == 2
    note = client.requests[1][0][-1]["content"]
    assert note.startswith("Your answer ran no code. Answer with exactly one fenced")
    data = view(store)
    assert data["status"] == "failed"
    assert "NoCodeError" in data["error"]
    # Resumable once the cause is fixed (another model): only the next call is made.
    fixed = Script([Reply(say(1)), Reply(RETURN)])
    result = resume(store, fixed)
    assert (result.status, result.result) == ("completed", "ok")
    assert len(fixed.requests) == 2
    assert [m["role"] for m in fixed.requests[0][0]] == ["system", "user"] + [
        "assistant",
        "user",
    ] * 2
    assert said(view(store)) == ["step 1"]


def test_an_empty_code_block_is_no_code_but_a_syntax_error_is_reported_as_code(
    program: Path, store: str
) -> None:
    client = Script(
        [
            Reply("```python\n# nothing to do\n```"),
            Reply("```python\nawait self.Say(\"user\", 'a' 'b\n```"),
            Reply(RETURN),
        ]
    )
    result = run(program, store, client)
    assert result.status == "completed"
    assert "ran no code" in client.requests[1][0][-1]["content"]
    last = client.requests[2][0][-1]["content"]
    assert last.startswith("Error: SyntaxError")
    assert "ran no code" not in last


# ------------------------------------------------------------------ budgets


def test_max_calls_stops_the_execution_and_a_raised_budget_resumes_it(
    program: Path, store: str
) -> None:
    replies = [Reply(say(1)), Reply(say(2)), Reply(say(3)), Reply(RETURN)]
    reference = uninterrupted(program, store, [Reply(r.text) for r in replies])
    client = Script(list(replies))
    with pytest.raises(LLMBudgetExceededError, match=r"max_calls = 2 reached \(2 used") as err:
        run(program, store, client, max_calls=2)
    assert (err.value.budget, err.value.limit, err.value.used) == ("max_calls", 2, 2)
    assert len(client.requests) == 2
    assert view(store)["status"] == "failed"
    # Resumed with the same budget: refused again at once, no call made.
    again = Script(client.replies)
    with pytest.raises(LLMBudgetExceededError):
        resume(store, again, max_calls=2)
    assert again.requests == []
    # Raised: the journal's two calls count, the other two are made, none repeated.
    more = Script(again.replies)
    assert resume(store, more, max_calls=4).status == "completed"
    assert len(more.requests) == 2
    data = view(store)
    assert said(data) == said(reference) == ["step 1", "step 2", "step 3"]
    assert [c["prompt"] for c in data["llm_calls"]] == [c["prompt"] for c in reference["llm_calls"]]


def test_max_calls_per_playbook_run_stops_a_playbook_that_never_returns(
    program: Path, store: str
) -> None:
    client = Script([Reply(say(i)) for i in range(1, 10)])
    with pytest.raises(LLMBudgetExceededError, match="max_calls_per_playbook_run = 3"):
        run(program, store, client, max_calls_per_playbook_run=3)
    assert len(client.requests) == 3


def test_the_default_budget_ends_a_runaway_loop(program: Path, store: str) -> None:
    limit = LLMLimits().max_calls_per_playbook_run
    assert limit is not None
    client = Script([Reply(say(i)) for i in range(1, limit + 5)])
    with pytest.raises(LLMBudgetExceededError):
        run(program, store, client)
    assert len(client.requests) == limit


def test_max_tokens_counts_what_providers_reported_across_a_resume(
    program: Path, store: str
) -> None:
    client = Script(
        [
            Reply(say(1), tokens=(100, 50)),
            Reply(say(2), tokens=(100, 50)),
            Reply(say(3), tokens=(100, 50)),
            Reply(RETURN, tokens=(1, 1)),
        ]
    )
    with pytest.raises(LLMBudgetExceededError, match=r"max_tokens = 300 reached \(300 used"):
        run(program, store, client, max_tokens=300)
    assert len(client.requests) == 2
    with pytest.raises(LLMBudgetExceededError, match=r"\(300 used"):
        resume(store, Script([]), max_tokens=300)
    assert resume(store, client, max_tokens=1000).status == "completed"


@pytest.mark.parametrize("bad", [-1, "10", 1.5, True])
def test_a_budget_must_be_a_non_negative_integer(bad: object) -> None:
    from durably.errors import ConfigError

    with pytest.raises(ConfigError, match=r"llm\.max_calls"):
        LLMLimits.split({"max_calls": bad})


def test_budget_options_are_the_runtimes_and_zero_turns_one_off() -> None:
    limits, rest = LLMLimits.split({"max_calls": 0, "max_tokens": 5, "base_url": "http://x"})
    assert limits == LLMLimits(max_calls=None, max_tokens=5)
    assert rest == {"base_url": "http://x"}


# ------------------------------------------------------------------ cut-off responses


def test_a_dropped_stream_is_continued_from_what_arrived(program: Path, store: str) -> None:
    reference = uninterrupted(program, store, [Reply(say(1)), Reply(RETURN)])
    cut = say(1).index("await self.Yield")  # the Say statement has run by then
    client = Script([Reply(say(1), cut=cut), Reply(say(1)), Reply(RETURN)])
    assert run(program, store, client).status == "completed"
    assert [prefix for _, prefix in client.requests] == ["", say(1)[:cut], ""]
    assert client.requests[1][0] == client.requests[0][0]  # the same prompt, continued
    data = view(store)
    assert said(data) == said(reference) == ["step 1"]
    assert data["llm_calls"][0]["response"] == say(1)[: say(1).index("\n```")]
    assert data["llm_calls"][0]["usage"]["continuations"] == 1


def test_a_stream_dropped_too_often_fails_and_resume_continues_it(
    program: Path, store: str
) -> None:
    cut = say(1).index("await self.Yield")
    client = Script([Reply(say(1), cut=cut)] * 3)
    with pytest.raises(IncompleteResponseError, match="connection dropped"):
        run(program, store, client, max_continuations=2)
    assert len(client.requests) == 3
    data = view(store)
    assert data["status"] == "failed"
    assert data["llm_calls"] == []  # never recorded as a finished response
    assert said(data) == ["step 1"]
    good = Script([Reply(say(1)), Reply(RETURN)])
    assert resume(store, good).status == "completed"
    assert good.requests[0][1] == say(1)[:cut]  # continued, not asked again
    assert said(view(store)) == ["step 1"]


def test_a_truncated_response_is_not_retried_and_never_taken_as_finished(
    program: Path, store: str
) -> None:
    client = Script([Reply(RETURN, cut=20, error=ResponseTruncatedError), Reply(RETURN)])
    with pytest.raises(ResponseTruncatedError):
        run(program, store, client)
    assert len(client.requests) == 1
    assert view(store)["status"] == "failed"
    good = Script([Reply(RETURN)])
    result = resume(store, good)
    assert (result.status, result.result) == ("completed", "ok")
    assert good.requests[0][1] == RETURN[:20]


BUDGET = (
    '```python\nawait self.Say("user", "budget set")\nself.state.budget = 1500\n'
    "await self.Return(self.state.budget)\n```"
)


def test_a_response_said_complete_inside_its_code_block_is_continued(
    program: Path, store: str
) -> None:
    # Servers that cut a response at their token limit have been seen to report "stop":
    # its last line, cut, ran (`budget = 15` of `budget = 1500`) and the run completed.
    cut = BUDGET[: BUDGET.index("1500") + 2]
    client = Script([Reply(cut), Reply(BUDGET)])
    result = run(program, store, client)
    assert (result.status, result.result) == ("completed", 1500)
    assert [prefix for _, prefix in client.requests] == ["", cut]
    usage = view(store)["llm_calls"][0]["usage"]
    assert usage["continuations"] == 1


def test_a_continuation_that_adds_nothing_confirms_a_response_without_closing_fence(
    program: Path, store: str
) -> None:
    unclosed = '```python\nawait self.Say("user", "step 1")\nawait self.Yield("call")'
    client = Script([Reply(unclosed), Reply(unclosed), Reply(RETURN)])
    result = run(program, store, client)
    assert (result.status, result.result) == ("completed", "ok")
    assert [prefix for _, prefix in client.requests] == ["", unclosed, ""]
    assert said(view(store)) == ["step 1"]


def test_a_continued_response_counts_the_usage_of_its_last_request(
    program: Path, store: str
) -> None:
    # The first request finished ("stop", cut in a line of code) and reported its usage;
    # the continuation's report replaces it (a resumed run never saw the first one), so
    # the budget spent is what the journal holds: 121 + 210, under max_tokens = 200
    # before the last call (the first report counted too made it 241: over).
    unclosed = '```python\nawait self.Say("user", "step 1")\nawait self.Yield("call")'
    client = Script(
        [
            Reply(unclosed, tokens=(100, 20)),
            Reply(unclosed, tokens=(120, 1)),
            Reply(RETURN, tokens=(200, 10)),
        ]
    )
    result = run(program, store, client, max_tokens=200)
    assert (result.status, result.result) == ("completed", "ok")
    totals = view(store)["usage"]
    assert (totals["prompt_tokens"], totals["completion_tokens"]) == (320, 11)


def test_what_follows_the_closing_fence_is_in_the_conversation_however_it_arrived(
    program: Path, store: str
) -> None:
    # A replay gets the journaled text at once; live, the fence and the prose after it
    # come in chunks. The next prompt must hold the same assistant turn either way.
    code = '```python\nawait self.Say("user", "step 1")\nself.state.n = 1\n```\n'
    first = code + "That is all, thanks."
    client = Script([Reply(first), Reply(RETURN)])
    assert run(program, store, client).status == "completed"
    turns = [m["content"] for m in client.requests[1][0] if m["role"] == "assistant"]
    assert turns == [first]


def test_a_response_whose_code_ended_needs_no_closing_fence(
    program: Path, store: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The Return ran as its line came: nothing can be missing, whatever the fence says.
    unclosed = '```python\nawait self.Say("user", "step 1")\nawait self.Return("ok")\n'
    client = Script([Reply(unclosed)])
    with caplog.at_level("WARNING", logger="durably"):
        result = run(program, store, client)
    assert (result.status, result.result) == ("completed", "ok")
    assert [prefix for _, prefix in client.requests] == [""]
    assert not [r for r in caplog.records if "ended badly" in r.getMessage()]
    assert view(store)["llm_calls"][0]["usage"]["continuations"] == 0


def test_no_request_is_made_for_what_follows_the_closing_fence(program: Path, store: str) -> None:
    # The code ended with its fence (its last statement is no Return or Yield): a stream
    # that breaks after it takes nothing from what ran, and asks for nothing more.
    first = '```python\nawait self.Say("user", "step 1")\nself.state.n = 1\n```\nThat is all.'
    client = Script([Reply(first, cut=len(first) - 4), Reply(RETURN)])
    result = run(program, store, client)
    assert (result.status, result.result) == ("completed", "ok")
    assert [prefix for _, prefix in client.requests] == ["", ""]
    assert said(view(store)) == ["step 1"]


def test_a_client_that_reports_no_end_is_taken_at_its_word(program: Path, store: str) -> None:
    client = Script([Reply(say(1), finish=False), Reply(RETURN, finish=False)])
    assert run(program, store, client).status == "completed"
    usage = view(store)["llm_calls"][0]["usage"]
    assert usage["finish"] is None
    assert usage["prompt_tokens"] is None


# ------------------------------------------------------------------ usage


def test_usage_is_journaled_per_call_and_totalled_by_show(program: Path, store: str) -> None:
    client = Script([Reply(say(1), tokens=(120, 30)), Reply(RETURN, tokens=(200, 10))])
    assert run(program, store, client).status == "completed"
    data = view(store)
    first = data["llm_calls"][0]["usage"]
    assert (
        first["model"],
        first["prompt_tokens"],
        first["completion_tokens"],
        first["finish"],
    ) == ("m1", 120, 30, "stop")
    assert first["latency_ms"] >= 0
    totals = data["usage"]
    assert (totals["calls"], totals["prompt_tokens"], totals["completion_tokens"]) == (2, 320, 40)
    text = render_show(data)
    assert "LLM calls: 2 - tokens: 320 prompt + 40 completion = 360" in text
    assert "120+30 tokens" in text


class _Crash(BaseException):
    """Stands for the process dying right after a checkpoint became durable."""


def _crashing_store(crash_at: int | None) -> Any:
    from memstore import MemoryStore

    class Store(MemoryStore):
        async def _save(self, *args: Any, **kwargs: Any) -> Any:
            info = await super()._save(*args, **kwargs)
            if self.saves == crash_at:
                raise _Crash(f"after checkpoint {crash_at}")
            return info

    return Store()


class _ByCall(Script):
    """Answers call n of the playbook with the n-th reply (a resumed run asks from there)."""

    def __init__(self, replies: list[Reply]) -> None:
        super().__init__(list(replies))
        self.by_call = list(replies)

    async def stream(
        self,
        messages: list[dict[str, str]],
        *,
        agent: str,
        playbook: str,
        call: int,
        prefix: str = "",
    ) -> AsyncIterator[str | Finish]:
        self.replies = [self.by_call[call]]
        async for item in super().stream(
            messages, agent=agent, playbook=playbook, call=call, prefix=prefix
        ):
            yield item


async def _run_budgeted(program: Path, store: Any, *, resume: bool) -> tuple[str, Any, list[str]]:
    from durably._execution import Execution, UserIO
    from durably._resume import restore_agents
    from durably.runner import Program

    replies = [
        Reply(say(1), tokens=(100, 50)),
        Reply(say(2), tokens=(100, 50)),
        Reply(say(3), tokens=(100, 50)),
        Reply(RETURN, tokens=(1, 1)),
    ]
    manager = CheckpointManager("x", store)
    said_lines: list[str] = []
    execution = Execution(
        manager,
        program=Program.load(program),
        llm=_ByCall(replies),
        io=UserIO([], echo=said_lines.append),
        limits=LLMLimits(max_tokens=300),
    )
    if resume:
        await restore_agents(manager, execution)
    status, value = await execution.run(resume=resume)
    return status, value, said_lines


def test_max_tokens_is_reached_at_the_same_call_whatever_the_crash_point(program: Path) -> None:
    probe = _crashing_store(None)
    status, value, reference = asyncio.run(_run_budgeted(program, probe, resume=False))
    assert status == "failed"
    assert isinstance(value, LLMBudgetExceededError)
    assert reference == ["Looper: step 1", "Looper: step 2"]
    for k in range(1, probe.saves + 1):
        store = _crashing_store(k)
        first = asyncio.run(_run_budgeted(program, store, resume=False))
        if not isinstance(first[1], _Crash):
            continue  # the budget stopped it before checkpoint k
        status, value, said_after = asyncio.run(_run_budgeted(program, store, resume=True))
        assert isinstance(value, LLMBudgetExceededError), (k, status, value)
        assert first[2] + said_after == reference, k


@pytest.mark.parametrize(
    "code",
    [
        "raise asyncio.CancelledError('from the program')",
        "f = asyncio.get_running_loop().create_future(); f.cancel(); await f",
    ],
    ids=["raised", "awaited a cancelled future"],
)
def test_a_cancelled_error_from_the_program_fails_the_execution_instead_of_hanging(
    program: Path, store: str, code: str
) -> None:
    """Nothing asked the run to stop: the program's CancelledError is its failure, as any
    exception is (recorded as failed), never a hang, never a cancellation of the caller."""
    reply = Reply(f"```python\nimport asyncio\nawait self.Say('user', 'before')\n{code}\n```")

    async def bounded() -> Any:
        return await asyncio.wait_for(
            run_program(program, llm=Script([reply]), store=store, execution_id="x", echo=None),
            timeout=20,
        )

    result = asyncio.run(bounded())
    assert result.status == "failed", result
    assert "CancelledError" in (result.error or ""), result
    data = view(store)
    assert data["status"] == "failed"
    assert "CancelledError" in data["error"]
    assert said(data) == ["before"]
