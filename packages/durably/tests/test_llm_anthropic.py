"""The `anthropic:` client, through the real SDK, against a fake server on loopback
speaking the real Messages streaming format (tests/fakeserver.py).

Each failure mode checks what the client yields before it raises: those chunks are what
the runtime journals, and a response the server did not finish never ends in a Finish.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakeserver import Behaviour, FakeServer, Request

from durably._anthropic import AnthropicClient
from durably._continuation import CONTINUE_NOTE
from durably.errors import ConfigError
from durably.llm import (
    Finish,
    IncompleteResponseError,
    LLMError,
    ResponseRefusedError,
    ResponseTruncatedError,
    open_llm,
)

TEXT = (
    '```python\n# execution_id: 1\n# recap: start\nawait self.Step("Main:01:QUE")\n'
    'await self.Say("user", "Hello there, how are you today?")\n```\n'
)
SYSTEM = "You are agent A (id 1)"
MESSAGES = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Execute playbook Main."},
]
KEY = "sk-ant-test-key-123456"


@pytest.fixture(autouse=True)
def _no_proxy_no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def sent_key(request: Request) -> str | None:
    """The API key a request carried (``x-api-key``, or a bearer token as recent SDKs
    send it)."""
    if "x-api-key" in request.headers:
        return request.headers["x-api-key"]
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme == "Bearer" else None


def client_for(fake: FakeServer, **kwargs: Any) -> AnthropicClient:
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("max_attempts", 1)
    return AnthropicClient("claude-test", base_url=fake.root, **kwargs)


async def drain(
    stream: AsyncIterator[str | Finish],
) -> tuple[list[str], list[Finish], BaseException | None]:
    """What a stream yields (text, finishes) and what it raised."""
    chunks: list[str] = []
    finishes: list[Finish] = []
    try:
        async for item in stream:
            if isinstance(item, Finish):
                finishes.append(item)
            else:
                assert not finishes, "text after the Finish"
                chunks.append(item)
    except Exception as exc:
        return chunks, finishes, exc
    return chunks, finishes, None


def stream(client: AnthropicClient, prefix: str = "") -> AsyncIterator[str | Finish]:
    return client.stream(MESSAGES, agent="A", playbook="Main", call=0, prefix=prefix)


# --------------------------------------------------------------- complete responses


@pytest.mark.asyncio
async def test_a_complete_response_streams_then_finishes_with_usage() -> None:
    with FakeServer([TEXT]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake, max_response_tokens=500)))
        (request,) = fake.requests
    assert error is None
    assert "".join(chunks) == TEXT
    assert len(chunks) > 5  # streamed, not buffered
    assert len(finishes) == 1
    finish = finishes[0]
    assert finish == Finish(
        "end_turn",
        model="fake-model",
        prompt_tokens=finish.prompt_tokens,
        completion_tokens=len(TEXT) // 4,
    )
    assert finish.prompt_tokens
    assert finish.prompt_tokens > 0
    assert request.path == "/v1/messages"
    assert request.body["model"] == "claude-test"
    assert request.body["stream"] is True
    assert request.body["max_tokens"] == 500
    assert "temperature" not in request.body  # recent models take none
    assert request.body["system"] == SYSTEM
    assert request.body["messages"] == MESSAGES[1:]
    assert sent_key(request) == KEY


@pytest.mark.asyncio
async def test_max_tokens_is_always_sent_and_temperature_when_set() -> None:
    with FakeServer([TEXT]) as fake:
        client = open_llm("anthropic:claude-test", {"base_url": fake.root, "temperature": 0.5})
        _, finishes, error = await drain(
            client.stream(MESSAGES, agent="A", playbook="Main", call=0)
        )
        assert fake.requests[0].body["max_tokens"] == 4096
        assert fake.requests[0].body["temperature"] == 0.5
    assert error is None
    assert len(finishes) == 1


# --------------------------------------------------------------- cut-off responses


@pytest.mark.asyncio
async def test_a_reset_mid_stream_is_incomplete_after_the_chunks_that_came() -> None:
    with FakeServer([TEXT], behaviours=[Behaviour(reset_after_chars=35)]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake)))
    assert isinstance(error, IncompleteResponseError)
    assert error.retryable
    assert "cut off after 35 characters" in str(error)
    assert "".join(chunks) == TEXT[:35]
    assert finishes == []


@pytest.mark.asyncio
async def test_a_stream_without_message_stop_is_incomplete() -> None:
    # The stop reason came (message_delta), but not the end of the message.
    with FakeServer([TEXT], behaviours=[Behaviour(no_done=True)]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake)))
    assert isinstance(error, IncompleteResponseError)
    assert error.retryable
    assert "without a finish reason" in str(error)
    assert "".join(chunks) == TEXT
    assert finishes == []


@pytest.mark.asyncio
async def test_a_stream_that_just_ends_is_incomplete() -> None:
    with FakeServer([TEXT], behaviours=[Behaviour(finish_reason=None, no_done=True)]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake)))
    assert isinstance(error, IncompleteResponseError)
    assert error.retryable
    assert "".join(chunks) == TEXT
    assert finishes == []


@pytest.mark.asyncio
async def test_message_stop_without_a_stop_reason_is_incomplete() -> None:
    with FakeServer([TEXT], behaviours=[Behaviour(finish_reason=None)]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake)))
    assert isinstance(error, IncompleteResponseError)
    assert "".join(chunks) == TEXT
    assert finishes == []


@pytest.mark.asyncio
async def test_stop_reason_max_tokens_is_a_truncated_response() -> None:
    behaviour = Behaviour(finish_reason="length", stop_after_chars=40)
    with FakeServer([TEXT], behaviours=[behaviour]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake)))
    assert isinstance(error, ResponseTruncatedError)
    assert not error.retryable
    assert "'max_tokens'" in str(error)
    assert "max_response_tokens" in str(error)
    assert "".join(chunks) == TEXT[:40]
    assert finishes == []


@pytest.mark.asyncio
async def test_stop_reason_model_context_window_exceeded_is_a_truncated_response() -> None:
    behaviour = Behaviour(finish_reason="model_context_window_exceeded", stop_after_chars=40)
    with FakeServer([TEXT], behaviours=[behaviour]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake)))
    assert isinstance(error, ResponseTruncatedError)
    assert not error.retryable
    assert "".join(chunks) == TEXT[:40]
    assert finishes == []


@pytest.mark.asyncio
async def test_stop_reason_refusal_is_a_refusal() -> None:
    behaviour = Behaviour(finish_reason="content_filter", stop_after_chars=12)  # "refusal"
    with FakeServer([TEXT], behaviours=[behaviour]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake)))
    assert isinstance(error, ResponseRefusedError)
    assert not error.retryable
    assert "'refusal'" in str(error)
    assert "".join(chunks) == TEXT[:12]
    assert finishes == []


@pytest.mark.asyncio
async def test_an_unexpected_stop_reason_is_incomplete() -> None:
    with FakeServer([TEXT], behaviours=[Behaviour(finish_reason="pause_turn")]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake)))
    assert isinstance(error, IncompleteResponseError)
    assert "'pause_turn'" in str(error)
    assert "".join(chunks) == TEXT
    assert finishes == []


@pytest.mark.asyncio
async def test_an_overloaded_error_event_mid_stream_is_incomplete_and_retryable() -> None:
    behaviour = Behaviour(error_event=True, error_after_chars=21)  # overloaded_error
    with FakeServer([TEXT], behaviours=[behaviour]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake)))
    assert isinstance(error, IncompleteResponseError)
    assert error.retryable
    assert "cut off after 21 characters" in str(error)
    assert "Overloaded" in str(error)
    assert "".join(chunks) == TEXT[:21]
    assert finishes == []


@pytest.mark.asyncio
async def test_keep_alives_without_text_end_the_stream_after_the_timeout() -> None:
    # ping events restart the HTTP client's read timeout: without a timeout on the text
    # itself, a server sending only keep-alives held the call forever
    behaviour = Behaviour(keepalive_after_chars=14, keepalive_seconds=10)
    with FakeServer([TEXT], behaviours=[behaviour]) as fake:
        started = time.monotonic()
        chunks, finishes, error = await drain(stream(client_for(fake, timeout=0.5)))
        waited = time.monotonic() - started
    assert isinstance(error, IncompleteResponseError)
    assert error.retryable  # continued from what came, like a dropped stream
    assert "no text in time" in str(error)
    assert "".join(chunks) == TEXT[:14]
    assert finishes == []
    assert waited < 5


@pytest.mark.asyncio
async def test_an_invalid_request_error_event_is_not_retryable() -> None:
    behaviour = Behaviour(
        error_event={"type": "invalid_request_error", "message": "prompt is too long"},
        error_after_chars=0,
    )
    with FakeServer([TEXT], behaviours=[behaviour]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake)))
    assert isinstance(error, IncompleteResponseError)
    assert not error.retryable
    assert "prompt is too long" in str(error)
    assert chunks == []
    assert finishes == []


@pytest.mark.asyncio
async def test_a_non_streaming_server_is_a_clear_error_after_one_request() -> None:
    with FakeServer([TEXT], behaviours=[Behaviour(json_instead_of_sse=True)]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake, max_attempts=3)))
        assert len(fake.requests) == 1
    assert isinstance(error, LLMError)
    assert not isinstance(error, IncompleteResponseError)
    assert not error.retryable
    assert "application/json instead of a stream" in str(error)
    assert chunks == []
    assert finishes == []


# --------------------------------------------------------------- request failures


@pytest.mark.asyncio
async def test_429_with_retry_after_waits_as_told_then_succeeds() -> None:
    with FakeServer([TEXT], behaviours=[Behaviour(status=429, retry_after="1")]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake, max_attempts=3)))
        first, second = fake.requests
    assert error is None
    assert "".join(chunks) == TEXT
    assert len(finishes) == 1
    assert second.at - first.at >= 0.95


@pytest.mark.asyncio
async def test_429_after_every_attempt_is_a_retryable_error() -> None:
    behaviours = [Behaviour(status=429, retry_after="0.1")] * 2
    with FakeServer([TEXT], behaviours=behaviours) as fake:
        _, _, error = await drain(stream(client_for(fake, max_attempts=2)))
        assert len(fake.requests) == 2
    assert isinstance(error, LLMError)
    assert error.retryable
    assert "rate limited (429) after 2 attempt(s)" in str(error)


@pytest.mark.asyncio
async def test_5xx_and_529_overloaded_are_retried_then_succeed() -> None:
    overloaded = json.dumps(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    behaviours = [Behaviour(status=500), Behaviour(status=529, body=overloaded, retry_after="0")]
    with FakeServer([TEXT], behaviours=behaviours) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake, max_attempts=3)))
        assert len(fake.requests) == 3
    assert error is None
    assert "".join(chunks) == TEXT
    assert len(finishes) == 1


@pytest.mark.asyncio
async def test_5xx_on_every_attempt_is_a_retryable_error() -> None:
    with FakeServer([TEXT], behaviours=[Behaviour(status=503)] * 2) as fake:
        _, _, error = await drain(stream(client_for(fake, max_attempts=2)))
        assert len(fake.requests) == 2
    assert isinstance(error, LLMError)
    assert error.retryable
    assert "server error 503 after 2 attempt(s)" in str(error)


@pytest.mark.asyncio
async def test_401_names_the_key_variable_and_never_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = "sk-ant-api03-SECRETSECRET1234567890"
    monkeypatch.setenv("MY_CLAUDE_KEY", key)
    body = json.dumps(
        {
            "type": "error",
            "error": {"type": "authentication_error", "message": f"invalid x-api-key: {key}"},
        }
    )
    with FakeServer([TEXT], behaviours=[Behaviour(status=401, body=body)]) as fake:
        client = open_llm(
            "anthropic:claude-test",
            {"base_url": fake.root, "api_key_env": "MY_CLAUDE_KEY", "max_attempts": 3},
        )
        _, _, error = await drain(client.stream(MESSAGES, agent="A", playbook="Main", call=0))
        assert len(fake.requests) == 1  # not retried
        assert sent_key(fake.requests[0]) == key
    assert isinstance(error, LLMError)
    assert not error.retryable
    message = str(error)
    assert "401" in message
    assert "$MY_CLAUDE_KEY" in message
    assert "invalid x-api-key" in message
    assert "SECRETSECRET" not in message


@pytest.mark.asyncio
async def test_an_unreachable_server_names_it_without_its_password() -> None:
    client = AnthropicClient(
        "claude-test", base_url="http://bob:pa55word@127.0.0.1:9", api_key="k", max_attempts=2
    )
    _, _, error = await drain(stream(client))
    assert isinstance(error, LLMError)
    assert error.retryable
    assert "cannot reach Anthropic at http://bob:***@127.0.0.1:9" in str(error)
    assert "pa55word" not in str(error)


@pytest.mark.asyncio
async def test_anthropic_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeServer([TEXT]) as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.root)
        client = open_llm("anthropic:claude-test")  # no key: a server that needs none
        chunks, finishes, error = await drain(
            client.stream(MESSAGES, agent="A", playbook="Main", call=0)
        )
    assert error is None
    assert "".join(chunks) == TEXT
    assert len(finishes) == 1


# --------------------------------------------------------------- continuation

CUT = TEXT.index("await self.Say")  # the prefix ends with a newline


@pytest.mark.asyncio
async def test_a_cut_off_response_is_continued_with_prefill() -> None:
    prefix = TEXT[:CUT]
    with FakeServer([TEXT], behaviours=[Behaviour(reset_after_chars=CUT)]) as fake:
        client = client_for(fake)
        chunks, _, error = await drain(stream(client))
        assert isinstance(error, IncompleteResponseError)
        assert "".join(chunks) == prefix
        chunks, finishes, error = await drain(stream(client, prefix=prefix))
        sent = fake.requests[1].body
    assert error is None
    assert len(finishes) == 1
    assert prefix + "".join(chunks) == TEXT
    assert sent["system"] == SYSTEM
    # The API refuses trailing whitespace in a prefill: it is sent without it, and taken
    # off the start of the continuation.
    assert sent["messages"] == [*MESSAGES[1:], {"role": "assistant", "content": prefix.rstrip()}]


@pytest.mark.asyncio
async def test_a_model_that_refuses_prefill_is_asked_with_a_note_instead() -> None:
    prefix = TEXT[:CUT]
    with FakeServer([TEXT], behaviours=[Behaviour(reset_after_chars=CUT)], prefill=False) as fake:
        client = client_for(fake, max_attempts=3)
        await drain(stream(client))
        chunks, finishes, error = await drain(stream(client, prefix=prefix))
        assert error is None
        assert len(finishes) == 1
        assert prefix + "".join(chunks) == TEXT
        refused, asked = fake.requests[1:]
        assert refused.messages[-1]["role"] == "assistant"
        assert asked.messages == [
            *MESSAGES[1:],
            {"role": "assistant", "content": prefix},
            {"role": "user", "content": CONTINUE_NOTE},
        ]
        assert client.prefill is False
        # The next continuation is asked with a note at once.
        again, _, error = await drain(stream(client, prefix=TEXT[:20]))
        assert error is None
        assert TEXT[:20] + "".join(again) == TEXT
        assert len(fake.requests) == 4


@pytest.mark.asyncio
async def test_prefill_false_asks_with_a_note() -> None:
    prefix = TEXT[:CUT]
    with FakeServer([TEXT], behaviours=[Behaviour(reset_after_chars=CUT)]) as fake:
        client = open_llm("anthropic:claude-test", {"base_url": fake.root, "prefill": False})
        await drain(client.stream(MESSAGES, agent="A", playbook="Main", call=0))
        chunks, finishes, error = await drain(
            client.stream(MESSAGES, agent="A", playbook="Main", call=0, prefix=prefix)
        )
        assert len(fake.requests) == 2
        assert fake.requests[1].messages[-1] == {"role": "user", "content": CONTINUE_NOTE}
    assert error is None
    assert len(finishes) == 1
    assert prefix + "".join(chunks) == TEXT


@pytest.mark.asyncio
async def test_another_400_to_a_prefill_is_not_taken_for_a_refusal_of_prefill() -> None:
    body = json.dumps(
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "prompt is too long"},
        }
    )
    with FakeServer([TEXT], behaviours=[Behaviour(status=400, body=body)]) as fake:
        client = client_for(fake)
        _, _, error = await drain(stream(client, prefix=TEXT[:CUT]))
        assert len(fake.requests) == 1
    assert isinstance(error, LLMError)
    assert not error.retryable
    assert "prompt is too long" in str(error)
    assert client.prefill is True


@pytest.mark.asyncio
async def test_a_continuation_with_a_preamble_and_a_new_fence_is_cleaned() -> None:
    prefix = TEXT[:70]  # inside the code block, mid-line
    line_start = prefix.rfind("\n") + 1
    answer = "Sure, continuing:\n```python\n" + TEXT[line_start:]
    with FakeServer([], behaviours=[Behaviour(text=answer)]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake), prefix=prefix))
    assert error is None
    assert len(finishes) == 1
    assert prefix + "".join(chunks) == TEXT


# --------------------------------------------------------------- configuration


def test_unknown_options_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown") as info:
        open_llm("anthropic:claude-test", {"base_url": "http://x", "organization": "o"})
    assert "max_response_tokens" in str(info.value)
    assert "prefill" in str(info.value)
    for runtime_option in ("max_calls", "max_tokens", "max_continuations"):
        with pytest.raises(ConfigError, match=runtime_option):
            open_llm("anthropic:claude-test", {"base_url": "http://x", runtime_option: 5})


def test_bad_option_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="max_response_tokens"):
        open_llm("anthropic:claude-test", {"base_url": "http://x", "max_response_tokens": 0})
    with pytest.raises(ConfigError, match="prefill"):
        open_llm("anthropic:claude-test", {"base_url": "http://x", "prefill": "yes"})
    with pytest.raises(ConfigError, match="api_key_env"):
        open_llm("anthropic:claude-test", {"base_url": "http://x", "api_key_env": 5})


def test_anthropic_without_a_key_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        open_llm("anthropic:claude-test")


def test_anthropic_without_a_model_is_refused() -> None:
    with pytest.raises(ConfigError, match="anthropic:MODEL"):
        open_llm("anthropic:", {"base_url": "http://x"})


def test_a_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "anthropic", None)
    with pytest.raises(ConfigError, match=r"pip install 'durably\[anthropic\]'"):
        open_llm("anthropic:claude-test", {"base_url": "http://x"})
