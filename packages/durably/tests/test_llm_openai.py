"""The `openai:` and `azure-openai:` clients, through the real SDK, against a fake server
on loopback speaking the real chat-completions streaming format (tests/fakeserver.py).

Each failure mode checks what the client yields before it raises: those chunks are what
the runtime journals, and a response the server did not finish never ends in a Finish.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fakeserver import Behaviour, FakeServer

from durably._openai import AzureOpenAIClient, OpenAIClient
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
MESSAGES = [
    {"role": "system", "content": "You are agent A (id 1)"},
    {"role": "user", "content": "Execute playbook Main."},
]


@pytest.fixture(autouse=True)
def _no_proxy_no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_API_KEY",
        "OPENAI_API_VERSION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer([TEXT]) as fake:
        yield fake


def client_for(fake: FakeServer, **kwargs: Any) -> OpenAIClient:
    kwargs.setdefault("api_key", "sk-test-key-123456")
    kwargs.setdefault("max_attempts", 1)
    return OpenAIClient("tiny", base_url=fake.url, **kwargs)


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


def stream(client: OpenAIClient, prefix: str = "") -> AsyncIterator[str | Finish]:
    return client.stream(MESSAGES, agent="A", playbook="Main", call=0, prefix=prefix)


# --------------------------------------------------------------- complete responses


@pytest.mark.asyncio
async def test_a_complete_response_streams_then_finishes_with_usage(server: FakeServer) -> None:
    client = client_for(server, max_response_tokens=500)
    chunks, finishes, error = await drain(stream(client))
    assert error is None
    assert "".join(chunks) == TEXT
    assert len(chunks) > 5  # streamed, not buffered
    assert finishes == [
        Finish(
            "stop",
            model="fake-model",
            prompt_tokens=finishes[0].prompt_tokens,
            completion_tokens=len(TEXT) // 4,
        )
    ]
    assert finishes[0].prompt_tokens
    assert finishes[0].prompt_tokens > 0
    request = server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.body["model"] == "tiny"
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert "temperature" not in request.body  # the model's default unless set
    assert request.body["max_tokens"] == 500  # the field any compatible server knows
    assert request.body["messages"] == MESSAGES
    assert request.headers["authorization"] == "Bearer sk-test-key-123456"


@pytest.mark.asyncio
async def test_temperature_is_sent_when_set(server: FakeServer) -> None:
    client = open_llm("openai:tiny", {"base_url": server.url, "temperature": 0})
    _, finishes, error = await drain(client.stream(MESSAGES, agent="A", playbook="Main", call=0))
    assert error is None
    assert len(finishes) == 1
    assert server.requests[0].body["temperature"] == 0
    assert "max_tokens" not in server.requests[0].body


@pytest.mark.asyncio
async def test_openais_own_server_gets_max_completion_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Reasoning models refuse max_tokens. The request reaches the fake server as a proxy.
    with FakeServer([TEXT]) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.root)
        monkeypatch.delenv("NO_PROXY")
        client = OpenAIClient(
            "o-tiny",
            base_url="http://api.openai.com/v1",
            api_key="k",
            max_attempts=1,
            max_response_tokens=300,
        )
        _, finishes, error = await drain(stream(client))
        request = proxy.requests[0]
    assert error is None
    assert len(finishes) == 1
    assert request.headers["host"] == "api.openai.com"
    assert request.body["max_completion_tokens"] == 300
    assert "max_tokens" not in request.body


@pytest.mark.asyncio
async def test_finish_reason_stop_without_done_is_complete() -> None:
    with FakeServer([TEXT], behaviours=[Behaviour(no_done=True)]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake)))
    assert error is None
    assert "".join(chunks) == TEXT
    assert [f.reason for f in finishes] == ["stop"]


@pytest.mark.asyncio
async def test_stream_usage_can_be_turned_off() -> None:
    with FakeServer([TEXT], behaviours=[Behaviour(usage=False)]) as fake:
        _chunks, finishes, error = await drain(stream(client_for(fake, stream_usage=False)))
        assert "stream_options" not in fake.requests[0].body
    assert error is None
    assert finishes == [Finish("stop", model="fake-model")]


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
async def test_a_stream_without_finish_reason_or_done_is_incomplete() -> None:
    with FakeServer([TEXT], behaviours=[Behaviour(finish_reason=None, no_done=True)]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake)))
    assert isinstance(error, IncompleteResponseError)
    assert error.retryable
    assert "without a finish reason" in str(error)
    assert "".join(chunks) == TEXT
    assert finishes == []


@pytest.mark.asyncio
async def test_a_stream_with_done_but_no_finish_reason_is_incomplete() -> None:
    with FakeServer([TEXT], behaviours=[Behaviour(finish_reason=None)]) as fake:
        _chunks, finishes, error = await drain(stream(client_for(fake)))
    assert isinstance(error, IncompleteResponseError)
    assert finishes == []


@pytest.mark.asyncio
async def test_finish_reason_length_is_a_truncated_response() -> None:
    behaviour = Behaviour(finish_reason="length", stop_after_chars=40)
    with FakeServer([TEXT], behaviours=[behaviour]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake)))
    assert isinstance(error, ResponseTruncatedError)
    assert not error.retryable
    assert "max_response_tokens" in str(error)
    assert "".join(chunks) == TEXT[:40]
    assert finishes == []


@pytest.mark.asyncio
async def test_finish_reason_content_filter_is_a_refusal() -> None:
    behaviour = Behaviour(finish_reason="content_filter", stop_after_chars=12)
    with FakeServer([TEXT], behaviours=[behaviour]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake)))
    assert isinstance(error, ResponseRefusedError)
    assert not error.retryable
    assert "".join(chunks) == TEXT[:12]
    assert finishes == []


@pytest.mark.asyncio
async def test_an_unknown_finish_reason_is_incomplete() -> None:
    with FakeServer([TEXT], behaviours=[Behaviour(finish_reason="abort")]) as fake:
        _chunks, finishes, error = await drain(stream(client_for(fake)))
    assert isinstance(error, IncompleteResponseError)
    assert "'abort'" in str(error)
    assert finishes == []


@pytest.mark.asyncio
async def test_an_error_event_mid_stream_is_incomplete_after_the_chunks_that_came() -> None:
    behaviour = Behaviour(error_event=True, error_after_chars=21)
    with FakeServer([TEXT], behaviours=[behaviour]) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake)))
    assert isinstance(error, IncompleteResponseError)
    assert error.retryable
    assert "The server had an error" in str(error)
    assert "".join(chunks) == TEXT[:21]
    assert finishes == []


@pytest.mark.asyncio
async def test_the_time_the_caller_takes_between_two_chunks_is_not_the_servers() -> None:
    # Statements run between two chunks (a Yield("user"), a nested playbook): only the
    # wait for the server counts against the timeout, or a slow statement would throw
    # the response away and ask for a continuation.
    with FakeServer([TEXT]) as fake:
        received: list[str] = []
        async for item in stream(client_for(fake, timeout=0.5)):
            if isinstance(item, str):
                received.append(item)
                if len(received) == 1:
                    await asyncio.sleep(1.0)
    assert "".join(received) == TEXT


@pytest.mark.asyncio
async def test_keep_alives_without_text_end_the_stream_after_the_timeout() -> None:
    # SSE comments restart the HTTP client's read timeout: without a timeout on the text
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
        error_event={"message": "context too long", "type": "invalid_request_error"},
        error_after_chars=0,
    )
    with FakeServer([TEXT], behaviours=[behaviour]) as fake:
        chunks, _, error = await drain(stream(client_for(fake)))
    assert isinstance(error, IncompleteResponseError)
    assert not error.retryable
    assert chunks == []


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
    behaviours = [Behaviour(status=429, retry_after="1")]
    with FakeServer([TEXT], behaviours=behaviours) as fake:
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
async def test_5xx_are_retried_then_succeed() -> None:
    behaviours = [Behaviour(status=500), Behaviour(status=503, retry_after="0")]
    with FakeServer([TEXT], behaviours=behaviours) as fake:
        chunks, finishes, error = await drain(stream(client_for(fake, max_attempts=3)))
        assert len(fake.requests) == 3
    assert error is None
    assert "".join(chunks) == TEXT
    assert len(finishes) == 1


@pytest.mark.asyncio
async def test_5xx_on_every_attempt_is_a_retryable_error() -> None:
    with FakeServer([TEXT], behaviours=[Behaviour(status=502)] * 2) as fake:
        _, _, error = await drain(stream(client_for(fake, max_attempts=2)))
    assert isinstance(error, LLMError)
    assert error.retryable
    assert "server error 502 after 2 attempt(s)" in str(error)


@pytest.mark.asyncio
async def test_401_names_the_key_variable_and_never_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = "sk-proj-SECRETSECRET1234567890"
    monkeypatch.setenv("MY_LLM_KEY", key)
    body = json.dumps(
        {
            "error": {
                "message": f"Incorrect API key provided: {key}",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        }
    )
    with FakeServer([TEXT], behaviours=[Behaviour(status=401, body=body)]) as fake:
        client = open_llm(
            "openai:tiny", {"base_url": fake.url, "api_key_env": "MY_LLM_KEY", "max_attempts": 3}
        )
        _, _, error = await drain(client.stream(MESSAGES, agent="A", playbook="Main", call=0))
        assert len(fake.requests) == 1  # not retried
        assert fake.requests[0].headers["authorization"] == f"Bearer {key}"
    assert isinstance(error, LLMError)
    assert not error.retryable
    message = str(error)
    assert "401" in message
    assert "$MY_LLM_KEY" in message
    assert "SECRETSECRET" not in message
    assert "Incorrect API key provided" in message


@pytest.mark.asyncio
async def test_404_hints_at_the_model_and_base_url() -> None:
    body = json.dumps(
        {
            "error": {
                "message": "The model `tiny` does not exist",
                "type": "invalid_request_error",
                "code": "model_not_found",
            }
        }
    )
    with FakeServer([TEXT], behaviours=[Behaviour(status=404, body=body)]) as fake:
        _, _, error = await drain(stream(client_for(fake, max_attempts=3)))
        assert len(fake.requests) == 1
    assert isinstance(error, LLMError)
    assert not error.retryable
    assert "check the model name 'tiny'" in str(error)
    assert "127.0.0.1" in str(error)


@pytest.mark.asyncio
async def test_a_server_echoing_the_key_does_not_leak_it() -> None:
    key = "sk-proj-SECRETSECRET1234567890"
    body = json.dumps(
        {"error": {"message": f"bad request; headers: Authorization: Bearer {key} api_key={key}"}}
    )
    with FakeServer([TEXT], behaviours=[Behaviour(status=400, body=body)]) as fake:
        _, _, error = await drain(stream(client_for(fake, api_key=key)))
    assert isinstance(error, LLMError)
    assert "SECRETSECRET" not in str(error)
    assert "bad request" in str(error)


@pytest.mark.asyncio
async def test_an_unreachable_server_names_it_without_its_password() -> None:
    client = OpenAIClient(
        "tiny", base_url="http://alice:pa55word@127.0.0.1:9/v1", api_key="k", max_attempts=2
    )
    _, _, error = await drain(stream(client))
    assert isinstance(error, LLMError)
    assert error.retryable
    assert "cannot reach OpenAI at http://alice:***@127.0.0.1:9/v1" in str(error)
    assert "after 2 attempt(s)" in str(error)
    assert "pa55word" not in str(error)


@pytest.mark.asyncio
@pytest.mark.parametrize("key", ["sk-test-key-123456", None])
async def test_user_info_in_the_base_url_is_basic_auth_only_without_a_key(key: str | None) -> None:
    with FakeServer([TEXT]) as fake:
        port = fake.port
        client = OpenAIClient(
            "tiny", base_url=f"http://us:pw@127.0.0.1:{port}/v1", api_key=key, max_attempts=1
        )
        _, finishes, error = await drain(stream(client))
        headers = fake.requests[0].headers
    assert error is None
    assert len(finishes) == 1
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["authorization"] == (
        "Bearer sk-test-key-123456" if key else "Basic dXM6cHc="
    )  # us:pw


@pytest.mark.asyncio
async def test_a_query_in_the_base_url_reaches_the_server() -> None:
    with FakeServer([TEXT]) as fake:
        client = open_llm("openai:tiny", {"base_url": fake.url + "?api-version=2024-10-21"})
        _, finishes, error = await drain(
            client.stream(MESSAGES, agent="A", playbook="Main", call=0)
        )
        request = fake.requests[0]
    assert error is None
    assert len(finishes) == 1
    assert request.path == "/v1/chat/completions"
    assert request.query == {"api-version": "2024-10-21"}


@pytest.mark.asyncio
async def test_openai_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeServer([TEXT]) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
        client = open_llm("openai:tiny")  # no key: a local server that needs none
        _, finishes, error = await drain(
            client.stream(MESSAGES, agent="A", playbook="Main", call=0)
        )
    assert error is None
    assert len(finishes) == 1


@pytest.mark.asyncio
async def test_http_proxy_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeServer([TEXT]) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.root)
        monkeypatch.delenv("NO_PROXY")
        monkeypatch.delenv("no_proxy", raising=False)
        client = OpenAIClient(
            "tiny", base_url="http://llm.example.invalid/v1", api_key="k", max_attempts=1
        )
        chunks, finishes, error = await drain(stream(client))
        request = proxy.requests[0]
    assert error is None
    assert "".join(chunks) == TEXT
    assert len(finishes) == 1
    assert request.path == "/v1/chat/completions"
    assert request.headers["host"] == "llm.example.invalid"


# --------------------------------------------------------------- continuation


@pytest.mark.asyncio
async def test_a_cut_off_response_is_continued_after_its_prefix(server: FakeServer) -> None:
    prefix = TEXT[:50]
    server.served[""] = 0
    # The server continues the response it is serving; start it (cut off) first.
    server.behaviours.append(Behaviour(reset_after_chars=50))
    client = client_for(server)
    chunks, _, error = await drain(stream(client))
    assert isinstance(error, IncompleteResponseError)
    assert "".join(chunks) == prefix
    chunks, finishes, error = await drain(stream(client, prefix=prefix))
    assert error is None
    assert len(finishes) == 1
    assert prefix + "".join(chunks) == TEXT
    sent = server.requests[1].body["messages"]
    assert sent[:-2] == MESSAGES
    assert sent[-2] == {"role": "assistant", "content": prefix}
    assert sent[-1]["role"] == "user"
    assert "cut off" in sent[-1]["content"]


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
        open_llm("openai:tiny", {"base_url": "http://x/v1", "max_tokenz": 5})
    assert "max_response_tokens" in str(info.value)
    for runtime_option in (
        "max_calls",
        "max_tokens",
        "max_continuations",
        "max_calls_per_playbook_run",
    ):
        with pytest.raises(ConfigError, match=runtime_option):
            open_llm("openai:tiny", {"base_url": "http://x/v1", runtime_option: 5})


def test_bad_option_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="max_attempts"):
        open_llm("openai:tiny", {"base_url": "http://x/v1", "max_attempts": 0})
    with pytest.raises(ConfigError, match="temperature"):
        open_llm("openai:tiny", {"base_url": "http://x/v1", "temperature": "hot"})


def test_openai_without_a_key_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        open_llm("openai:gpt-4o-mini")


def test_a_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(ConfigError, match=r"durably\[openai\]"):
        open_llm("openai:tiny", {"base_url": "http://x/v1"})
    monkeypatch.setitem(sys.modules, "anthropic", None)
    with pytest.raises(ConfigError, match=r"durably\[anthropic\]"):
        open_llm("anthropic:claude", {"base_url": "http://x"})


def test_unknown_prefix_lists_the_clients() -> None:
    with pytest.raises(ConfigError, match="anthropic:MODEL"):
        open_llm("nope:thing")


# --------------------------------------------------------------- Azure


@pytest.mark.asyncio
async def test_azure_openai_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key-1234")
    with FakeServer([TEXT]) as fake:
        client = open_llm(
            "azure-openai:my-deployment",
            {"azure_endpoint": fake.root, "api_version": "2024-10-21", "max_response_tokens": 300},
        )
        assert isinstance(client, AzureOpenAIClient)
        chunks, finishes, error = await drain(
            client.stream(MESSAGES, agent="A", playbook="Main", call=0)
        )
        request = fake.requests[0]
    assert error is None
    assert "".join(chunks) == TEXT
    assert len(finishes) == 1
    assert request.path == "/openai/deployments/my-deployment/chat/completions"
    assert request.query == {"api-version": "2024-10-21"}
    assert request.headers["api-key"] == "azure-key-1234"
    assert request.body["max_completion_tokens"] == 300
    assert "max_tokens" not in request.body


def test_azure_needs_an_endpoint_and_a_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key-1234")
    with pytest.raises(ConfigError, match="AZURE_OPENAI_ENDPOINT"):
        open_llm("azure-openai:dep", {"api_version": "2024-10-21"})
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://r.openai.azure.com")
    with pytest.raises(ConfigError, match="OPENAI_API_VERSION"):
        open_llm("azure-openai:dep")
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")
    assert open_llm("azure-openai:dep").spec == "azure-openai:dep"
