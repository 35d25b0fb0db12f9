"""The `openai:MODEL` client against a small OpenAI-compatible server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from durably._openai import OpenAIClient
from durably._runtime import Execution, UserIO
from durably.checkpoint import CheckpointManager
from durably.llm import LLMError, open_llm
from durably.runner import Program

from memstore import MemoryStore

HERE = Path(__file__).parent


class FakeServer:
    """Answers /v1/chat/completions with queued responses, streamed as SSE, chunked."""

    def __init__(self, responses: list[str], failures: list[int] | None = None, *,
                 echo: bool = False) -> None:
        self.echo = echo  # failures answer with the request's headers and body
        self.responses = list(responses)
        self.failures = list(failures or [])
        self.requests: list[dict[str, Any]] = []
        self.headers: list[str] = []
        self.server: asyncio.AbstractServer | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        length = int(next(line.split(":")[1] for line in head.split("\r\n")
                          if line.lower().startswith("content-length")))
        body = json.loads(await reader.readexactly(length))
        self.requests.append(body)
        self.headers.append(head)
        if self.failures:
            status = self.failures.pop(0)
            answer = (head + json.dumps(body)).encode() if self.echo else b"busy"
            writer.write(f"HTTP/1.1 {status} Busy\r\nContent-Length: {len(answer)}\r\n\r\n"
                         .encode() + answer)
            await writer.drain()
            writer.close()
            return
        text = self.responses.pop(0)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(text), 7):
            event = {"choices": [{"delta": {"content": text[start:start + 7]}}]}
            data = f"data: {json.dumps(event)}\n\n".encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        done = b"data: [DONE]\n\n"
        writer.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def collect(stream: AsyncIterator[str]) -> str:
    return "".join([chunk async for chunk in stream])


@pytest.mark.asyncio
async def test_streams_and_sends_model_messages_and_key() -> None:
    async with FakeServer(["hello, world"]) as url:
        client = OpenAIClient("tiny", base_url=url, api_key="sk-test")
        text = await collect(client.stream([{"role": "user", "content": "hi"}], agent="A",
                                           playbook="Main", call=0))
    assert text == "hello, world"


@pytest.mark.asyncio
async def test_transient_errors_are_retried_then_succeed() -> None:
    server = FakeServer(["ok"], failures=[503, 429])
    async with server as url:
        client = OpenAIClient("tiny", base_url=url, max_attempts=4)
        assert await collect(client.stream([], agent="A", playbook="P", call=0)) == "ok"
    assert len(server.requests) == 3


@pytest.mark.asyncio
async def test_a_permanent_error_is_reported() -> None:
    async with FakeServer([], failures=[401]) as url:
        client = OpenAIClient("tiny", base_url=url)
        with pytest.raises(LLMError, match="401"):
            await collect(client.stream([], agent="A", playbook="P", call=0))


@pytest.mark.asyncio
async def test_unreachable_server_is_reported_with_its_url() -> None:
    client = OpenAIClient("tiny", base_url="http://127.0.0.1:9/v1", max_attempts=2)
    with pytest.raises(LLMError, match=r"127\.0\.0\.1:9"):
        await collect(client.stream([], agent="A", playbook="P", call=0))


@pytest.mark.asyncio
async def test_a_cut_off_response_is_continued_after_its_prefix() -> None:
    server = FakeServer([" world"])
    async with server as url:
        client = OpenAIClient("tiny", base_url=url)
        rest = await collect(client.stream([{"role": "user", "content": "hi"}], agent="A",
                                           playbook="P", call=0, prefix="hello"))
    assert rest == " world"
    sent = server.requests[0]["messages"]
    assert sent[1] == {"role": "assistant", "content": "hello"}
    assert "Continue" in sent[2]["content"]


@pytest.mark.asyncio
async def test_a_whole_program_runs_with_openai_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    script = json.loads((HERE / "programs/counter.scripted.json").read_text())
    main, double = script["Counter.Main"], script["Counter.Double"]
    order = [main[0], double[0], double[1], main[1], double[2], double[3]]
    server = FakeServer(order)
    async with server as url:
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
        llm = open_llm("openai:tiny-model")
        said: list[str] = []
        execution = Execution(CheckpointManager("oa", MemoryStore()),
                              program=Program.load(HERE / "programs/counter.py"), llm=llm,
                              io=UserIO(["forty-two"], echo=said.append))
        status, value = await execution.run()
    assert (status, value) == ("completed", 15)
    assert said[-1].startswith("Counter: you said forty-two")
    assert all(r["model"] == "tiny-model" and r["stream"] for r in server.requests)
    assert all("Authorization: Bearer sk-local" in h for h in server.headers)
    # The system prompt teaches the conventions and lists the agent's playbooks.
    system = server.requests[0]["messages"][0]["content"]
    assert "await self.Say" in system
    assert "Double(n)" in system


@pytest.mark.asyncio
async def test_a_server_echoing_the_key_does_not_leak_it() -> None:
    key = "sk-proj-SECRETSECRET1234567890"
    async with FakeServer([], failures=[400], echo=True) as url:
        client = OpenAIClient("tiny", base_url=url, api_key=key)
        with pytest.raises(LLMError, match="400") as info:
            await collect(client.stream([{"role": "user", "content": "hi"}], agent="A",
                                        playbook="P", call=0))
    message = str(info.value)
    assert "POST /v1/chat/completions" in message  # the echo is there, redacted
    assert "SECRETSECRET" not in message
    assert "Authorization: ***" in message


@pytest.mark.asyncio
async def test_user_info_in_the_base_url_is_basic_auth_and_never_shown() -> None:
    server = FakeServer(["ok"])
    async with server as url:
        with_user = url.replace("http://", "http://alice:pa55word@")
        client = OpenAIClient("tiny", base_url=with_user, api_key="")
        assert await collect(client.stream([], agent="A", playbook="P", call=0)) == "ok"
    head = server.headers[0]
    assert "Authorization: Basic YWxpY2U6cGE1NXdvcmQ=" in head
    assert "pa55word" not in head.split("Host:")[1].splitlines()[0]
    dead = OpenAIClient("tiny", base_url="http://alice:pa55word@127.0.0.1:9/v1",
                        max_attempts=1)
    with pytest.raises(LLMError) as info:
        await collect(dead.stream([], agent="A", playbook="P", call=0))
    assert "pa55word" not in str(info.value)
    assert "alice:***@127.0.0.1:9" in str(info.value)
    with pytest.raises(Exception, match="base URL") as bad:
        OpenAIClient("tiny", base_url="ftp://bob:hunter22@host/v1")
    assert "hunter22" not in str(bad.value)
