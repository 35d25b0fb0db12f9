"""Cleaning a chat model's continuation of a cut-off response (durably._continuation).

Every case is run with the continuation streamed whole, in small chunks and character by
character: the cleaning buffers the start of the continuation until it can decide, and
must decide the same whatever the chunking.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from durably._continuation import CONTINUE_NOTE, clean_continuation, continuation_messages
from durably.llm import ContinuationError, Finish, IncompleteResponseError

HEAD = "```python\n# execution_id: 3\n# recap: the user said hi\n"
LINE_START = HEAD + 'await self.Step("Main:01:QUE")\n'
"""A prefix cut off at the start of a line, inside the code block."""
MID_LINE = LINE_START + 'await self.Say("user", "Hello the'
"""A prefix cut off in the middle of a line."""
REST = 're, how are you today?")\n```\n'

Chunker = Callable[[str], list[str]]
CHUNKINGS: dict[str, Chunker] = {
    "whole": lambda text: [text],
    "sevens": lambda text: [text[i : i + 7] for i in range(0, len(text), 7)],
    "chars": list,
}


async def _source(
    pieces: list[str], finish: bool, error: BaseException | None = None
) -> AsyncIterator[str | Finish]:
    for piece in pieces:
        yield piece
    if error is not None:
        raise error
    if finish:
        yield Finish("stop", model="m")


async def clean(prefix: str, answer: str, chunking: Chunker, *, finish: bool = True) -> str:
    """The cleaned continuation, as text; checks that a Finish comes last, once."""
    out: list[str] = []
    finishes = 0
    async for item in clean_continuation(prefix, _source(chunking(answer), finish)):
        if isinstance(item, Finish):
            finishes += 1
        else:
            assert finishes == 0, "text after the Finish"
            assert item, "an empty chunk"
            out.append(item)
    assert finishes == (1 if finish else 0)
    return "".join(out)


@pytest.fixture(params=list(CHUNKINGS))
def chunking(request: pytest.FixtureRequest) -> Chunker:
    found: Chunker = CHUNKINGS[request.param]
    return found


# --------------------------------------------------------------- what is kept as it is


@pytest.mark.asyncio
async def test_an_exact_continuation_is_passed_through(chunking: Chunker) -> None:
    assert await clean(MID_LINE, REST, chunking) == REST


@pytest.mark.asyncio
@pytest.mark.parametrize("finish", [True, False])
async def test_the_closing_fence_at_a_line_start_is_kept(chunking: Chunker, finish: bool) -> None:
    assert await clean(LINE_START, "```\n", chunking, finish=finish) == "```\n"


@pytest.mark.asyncio
async def test_a_short_honest_repeat_of_the_last_line_is_kept(chunking: Chunker) -> None:
    # Code may repeat itself: a line that equals the previous one is not a repeat to drop.
    prefix = HEAD + "x += 1\n"
    assert await clean(prefix, "x += 1\n```\n", chunking) == "x += 1\n```\n"


@pytest.mark.asyncio
async def test_a_short_repeat_of_the_cut_line_is_kept(chunking: Chunker) -> None:
    # "f(" cut off, continued with "f(x))": f(f(x)) is honest code, not a restart.
    prefix = HEAD + "f("
    assert await clean(prefix, "f(x))\n```\n", chunking) == "f(x))\n```\n"


@pytest.mark.asyncio
async def test_inside_a_triple_quoted_string_nothing_is_stripped(chunking: Chunker) -> None:
    prefix = LINE_START + 'note = """\n'
    answer = 'Sure, here is the list:\n```python\nrice\n"""\n```\n'
    assert await clean(prefix, answer, chunking) == answer


@pytest.mark.asyncio
async def test_a_prefix_outside_the_code_block_is_not_cleaned(chunking: Chunker) -> None:
    prefix = "Let me think about this"
    answer = ". Sure:\n```python\nawait self.Return(1)\n```\n"
    assert await clean(prefix, answer, chunking) == answer


# --------------------------------------------------------------- what is repaired


@pytest.mark.asyncio
async def test_a_preamble_and_a_reopened_fence_are_stripped(chunking: Chunker) -> None:
    answer = "Sure, continuing:\n```python\n" + 'await self.Say("user", "Hi")\n```\n'
    assert await clean(LINE_START, answer, chunking) == 'await self.Say("user", "Hi")\n```\n'


@pytest.mark.asyncio
async def test_a_preamble_without_a_fence_is_stripped(chunking: Chunker) -> None:
    answer = "Sure, here is the rest:\n" + 'await self.Say("user", "Hi")\n```\n'
    assert await clean(LINE_START, answer, chunking) == 'await self.Say("user", "Hi")\n```\n'


@pytest.mark.asyncio
async def test_a_reopened_fence_is_stripped(chunking: Chunker) -> None:
    answer = "```python\n" + 'await self.Say("user", "Hi")\n```\n'
    assert await clean(LINE_START, answer, chunking) == 'await self.Say("user", "Hi")\n```\n'


@pytest.mark.asyncio
async def test_a_reopened_fence_that_restarts_the_cut_line_drops_the_repeat(
    chunking: Chunker,
) -> None:
    line = MID_LINE[MID_LINE.rfind("\n") + 1 :]
    answer = "```python\n" + line + REST
    assert await clean(MID_LINE, answer, chunking) == REST


@pytest.mark.asyncio
async def test_an_exact_repeat_of_the_tail_is_dropped(chunking: Chunker) -> None:
    # The model repeated the last line and the cut one (40+ characters) before going on.
    tail = MID_LINE[MID_LINE.rfind("await self.Step") :]
    assert len(tail) >= 20
    assert await clean(MID_LINE, tail + REST, chunking) == REST


@pytest.mark.asyncio
async def test_an_exact_restart_of_the_whole_answer_is_dropped(chunking: Chunker) -> None:
    answer = MID_LINE + REST
    assert await clean(MID_LINE, answer, chunking) == REST


# --------------------------------------------------------------- what is refused


@pytest.mark.asyncio
async def test_a_restart_that_differs_is_refused(chunking: Chunker) -> None:
    answer = (
        "```python\n# execution_id: 3\n# recap: the user greeted us\n"
        'await self.Say("user", "Hi")\n```\n'
    )
    with pytest.raises(ContinuationError, match="restarted"):
        await clean(MID_LINE, answer, chunking)


@pytest.mark.asyncio
async def test_a_prose_only_answer_is_refused(chunking: Chunker) -> None:
    answer = "I'm sorry, but I cannot continue this response"
    with pytest.raises(ContinuationError, match="prose"):
        await clean(LINE_START, answer, chunking)


# --------------------------------------------------------------- errors and messages


async def _collect(stream: AsyncIterator[str | Finish]) -> list[str | Finish | Exception]:
    """What a stream yields, then what it raised."""
    out: list[str | Finish | Exception] = []
    try:
        async for item in stream:
            out.append(item)
    except Exception as exc:
        out.append(exc)
    return out


@pytest.mark.asyncio
async def test_an_error_before_the_start_is_decided_yields_nothing() -> None:
    # The undecided start is not passed on: the runtime asks again from the same prefix.
    cut = IncompleteResponseError("dropped")
    out = await _collect(clean_continuation(LINE_START, _source(["```py"], False, cut)))
    assert out == [cut]


@pytest.mark.asyncio
async def test_an_error_after_the_start_was_decided_comes_after_the_text() -> None:
    cut = IncompleteResponseError("dropped")
    out = await _collect(
        clean_continuation(MID_LINE, _source([REST[:27], REST[27:29]], False, cut))
    )
    assert "\n" in REST[:27]  # a whole line came: the start was decided
    assert out == [REST[:27], REST[27:29], cut]


def test_continuation_messages_end_with_the_user_note() -> None:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert continuation_messages(messages, "") == messages
    assert continuation_messages(messages, "abc") == [
        *messages,
        {"role": "assistant", "content": "abc"},
        {"role": "user", "content": CONTINUE_NOTE},
    ]
