"""The `openai:` client end to end, through the CLI, against the fake server on loopback
(packages/durably/tests/fakeserver.py) serving the kitchen example's scripted responses in
the real chat-completions streaming format, through the official SDK (issue 14).

`durably run examples/kitchen/kitchen.py --llm openai:gpt-4o-mini` completes and `show`
prints the token totals; SIGKILLed in the middle of a stream and resumed, it equals the
uninterrupted run and the server never served a completed response twice; a code-free
reply, a server that does not stream and a budget each end the execution `failed`,
after at most the calls they allow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import KITCHEN, KITCHEN_INPUT, Completed, durably, show

pytest.importorskip("openai")

from fakeserver import Behaviour, FakeServer, Request

SCRIPT: dict[str, list[str]] = json.loads((KITCHEN / "kitchen.scripted.json").read_text())
COMPARED = ("status", "transcript", "agents", "result")
CONTINUE = "Your previous answer was cut off"
VARIES = {"execution_id", "updated_at", "checkpoints", "bytes", "latest_seq", "lease"}


def env_for(server: FakeServer) -> dict[str, str]:
    """The `durably` process's environment: the fake server as OpenAI's, no key, no proxy."""
    return {
        "OPENAI_BASE_URL": server.url,
        "OPENAI_API_KEY": "",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
        "HTTP_PROXY": "",
        "HTTPS_PROXY": "",
        "ALL_PROXY": "",
        "http_proxy": "",
        "https_proxy": "",
        "all_proxy": "",
    }


def run_args(store: str, execution_id: str, *extra: str) -> list[str]:
    return [
        "run",
        str(KITCHEN / "kitchen.py"),
        "--llm",
        "openai:gpt-4o-mini",
        "--input",
        KITCHEN_INPUT,
        "--store",
        store,
        "--execution-id",
        execution_id,
        *extra,
    ]


def journaled_text(store: str, execution_id: str) -> list[str]:
    """The LLM response text the store holds for an execution (every agent's calls since
    its snapshot), read as resume would read it -- without importing the program."""
    import asyncio

    from durably import open_store
    from durably.checkpoint import CheckpointManager
    from durably.config import load_config

    async def read() -> list[str]:
        config = load_config(overrides={"store": store}, use_env=False)
        async with open_store(config=config) as provider:
            loaded = await CheckpointManager(execution_id, provider, config=config).load_execution(
                inert=True
            )
        if loaded is None:
            return []
        return [
            entry.text
            for agent in loaded.snapshots
            for entry in loaded.restored(agent).llm.values()
        ]

    return asyncio.run(read())


def run(server: FakeServer, store: str, execution_id: str, *extra: str) -> Completed:
    return durably(*run_args(store, execution_id, *extra), env=env_for(server), timeout=120)


def is_continuation(request: Request) -> bool:
    messages = request.messages
    return (
        bool(messages)
        and messages[-1]["role"] == "user"
        and str(messages[-1]["content"]).startswith(CONTINUE)
    )


def show_json(store: str, execution_id: str) -> dict[str, Any]:
    """What `durably show --json` prints, usage and timings included."""
    shown = durably("show", execution_id, "--json", "--store", store)
    assert shown.code == 0, shown.err
    data: dict[str, Any] = json.loads(shown.out)
    return data


def status_in_ls(store: str, execution_id: str) -> str:
    listed = durably("ls", "--json", "--store", store)
    assert listed.code == 0, listed.err
    (row,) = [r for r in json.loads(listed.out) if r["execution_id"] == execution_id]
    return str(row["status"])


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer(script=SCRIPT) as fake:
        yield fake


def test_the_kitchen_runs_on_the_openai_sdk_and_show_prints_the_tokens(
    server: FakeServer, file_store: str
) -> None:
    done = run(server, file_store, "kitchen")
    assert done.code == 0, done.err
    # Every scripted response asked for once, each as a new call, none continued.
    assert server.served == {key: len(value) for key, value in SCRIPT.items()}
    assert len(server.requests) == sum(map(len, SCRIPT.values())) == 8
    assert not any(is_continuation(r) for r in server.requests)
    first = server.requests[0].body
    assert first["model"] == "gpt-4o-mini"
    assert first["stream"] is True
    assert first["stream_options"] == {"include_usage": True}
    assert [m["role"] for m in first["messages"]][:2] == ["system", "user"]

    data = show_json(file_store, "kitchen")
    assert data["status"] == "completed"
    calls = data["llm_calls"]
    assert len(calls) == 8
    for call in calls:
        usage = call["usage"]
        assert usage["model"] == "fake-model"
        assert usage["finish"] == "stop"
        assert usage["prompt_tokens"] > 0
        assert usage["completion_tokens"] > 0
    prompt = sum(c["usage"]["prompt_tokens"] for c in calls)
    completion = sum(c["usage"]["completion_tokens"] for c in calls)
    assert data["usage"]["prompt_tokens"] == prompt
    assert data["usage"]["completion_tokens"] == completion
    text = durably("show", "kitchen", "--store", file_store)
    assert text.code == 0, text.err
    assert (
        f"LLM calls: 8 - tokens: {prompt:,} prompt + {completion:,} completion = "
        f"{prompt + completion:,}"
    ) in text.out

    # The same execution as with the scripted LLM that served the same responses.
    scripted = durably(
        "run",
        str(KITCHEN / "kitchen.py"),
        "--llm",
        f"scripted:{KITCHEN / 'kitchen.scripted.json'}",
        "--input",
        KITCHEN_INPUT,
        "--store",
        file_store,
        "--execution-id",
        "scripted",
    )
    assert scripted.code == 0, scripted.err
    assert scripted.out == done.out
    reference = show(file_store, "scripted")
    ours = show(file_store, "kitchen")
    for key in COMPARED:
        assert ours[key] == reference[key], key
    assert [(c["prompt"], c["response"]) for c in ours["llm_calls"]] == [
        (c["prompt"], c["response"]) for c in reference["llm_calls"]
    ]


def test_sigkill_in_the_middle_of_a_stream_then_resume_equals_the_uninterrupted_run(
    tmp_path: Path,
) -> None:
    store = f"file://{tmp_path / 'store'}"
    with FakeServer(script=SCRIPT) as fake:
        whole = run(fake, store, "whole")
        assert whole.code == 0, whole.err
    # The 4th request is Concierge.Main's second response; it stalls after the Say to the
    # chef (a checkpoint that journals the text before it), before the Say to the user.
    cut = SCRIPT["Concierge.Main"][1]
    pause = cut.index('await self.Say("user"')
    assert cut.index("await self.Say(chef.id") < pause
    stalled = Behaviour(pause_after_chars=pause, chunk_size=5, delay_per_chunk=0.002)
    with FakeServer(script=SCRIPT, behaviours=[Behaviour()] * 3 + [stalled]) as fake:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
        environment.update(env_for(fake))
        environment["DURABLY_LEASE_TTL"] = "0.5"
        owner = subprocess.Popen(
            [sys.executable, "-m", "durably", *run_args(store, "killed")],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert fake.paused.wait(60), "the stream never reached the pause"
            # The statements that arrived run and are journaled; the chef's calls (it
            # was asked before the pause) end.
            deadline = time.monotonic() + 30
            while fake.active > 1 or time.monotonic() < deadline - 29:
                assert time.monotonic() < deadline, "the other requests never ended"
                time.sleep(0.05)
            # The Say to the chef wrote a checkpoint journaling the response so far: wait
            # until the store holds it, however slow the machine.
            said_to_chef = cut[: cut.index("\n", cut.index("await self.Say(chef.id"))]
            while not any(
                text.startswith(said_to_chef) for text in journaled_text(store, "killed")
            ):
                assert time.monotonic() < deadline + 30, "the Say to the chef never became durable"
                time.sleep(0.1)
            assert owner.poll() is None, owner.communicate()
            owner.send_signal(signal.SIGKILL)
            out, err = owner.communicate(timeout=30)
        finally:
            if owner.poll() is None:
                owner.kill()
                owner.communicate()
            fake.release.set()
        assert owner.returncode == -signal.SIGKILL, err
        assert status_in_ls(store, "killed") != "completed"
        resumed = durably(
            "resume", "killed", "--wait", "--store", store, env=env_for(fake), timeout=120
        )
        assert resumed.code == 0, resumed.err
        requests = list(fake.requests)
        served = dict(fake.served)

    # No completed response was asked for again: each scripted response was served once
    # as a new call, and the cut one was continued from its journaled start.
    assert served == {key: len(value) for key, value in SCRIPT.items()}
    assert len([r for r in requests if not is_continuation(r)]) == 8
    continuations = [r for r in requests if is_continuation(r)]
    assert len(continuations) == 1
    prefix = continuations[0].messages[-2]["content"]
    assert cut.startswith(prefix)
    assert "await self.Say(chef.id" in prefix
    assert len(prefix) <= pause + 5

    # `show --json` without measurements (timings, provider-reported usage) is equal.
    # (What differs between any two executions -- their id, their storage -- aside.)
    views = [
        {k: v for k, v in show(store, name, subprocess=True).items() if k not in VARIES}
        for name in ("killed", "whole")
    ]
    assert views[0] == views[1]
    killed, reference = show_json(store, "killed"), show_json(store, "whole")
    for key in COMPARED:
        assert killed[key] == reference[key], key
    assert [(c["prompt"], c["response"]) for c in killed["llm_calls"]] == [
        (c["prompt"], c["response"]) for c in reference["llm_calls"]
    ]
    # Usage is what the provider reported for the requests made: the same for every call
    # but the cut one, whose record is the continuation's.
    changed = [
        i
        for i, (a, b) in enumerate(zip(killed["llm_calls"], reference["llm_calls"], strict=True))
        if {**a["usage"], "latency_ms": 0} != {**b["usage"], "latency_ms": 0}
    ]
    assert [killed["llm_calls"][i]["response"] for i in changed] == [cut]
    assert killed["llm_calls"][changed[0]]["usage"]["finish"] == "stop"
    # What the user saw: each line once, in order, across the two processes.
    assert out.splitlines() + resumed.out.splitlines() == whole.out.splitlines()


def test_a_code_free_reply_fails_the_execution_after_two_calls(file_store: str) -> None:
    prose = {
        "Concierge.Main": [
            "Happy to help you cook tonight!",
            "Sure! What do you have in your fridge?",
            "never asked",
        ]
    }
    with FakeServer(script=prose) as fake:
        failed = run(fake, file_store, "prose")
        assert len(fake.requests) == 2
        # The second call was the re-prompt with the corrective note.
        assert "Your answer ran no code" in str(fake.requests[1].messages[-1]["content"])
    assert failed.code != 0
    assert "without code" in failed.err
    assert status_in_ls(file_store, "prose") == "failed"
    assert show(file_store, "prose", subprocess=True)["status"] == "failed"


def test_a_server_that_does_not_stream_fails_the_execution_after_one_call(file_store: str) -> None:
    with FakeServer(script=SCRIPT, default=Behaviour(json_instead_of_sse=True)) as fake:
        failed = run(fake, file_store, "json")
        assert len(fake.requests) == 1
    assert failed.code != 0
    assert "instead of a stream of server-sent events" in failed.err
    assert status_in_ls(file_store, "json") == "failed"
    assert show(file_store, "json", subprocess=True)["status"] == "failed"


def test_max_calls_stops_the_execution_and_resume_goes_on_once_raised(
    server: FakeServer, tmp_path: Path, file_store: str
) -> None:
    config = tmp_path / "durably.toml"
    config.write_text("[llm]\nmax_calls = 3\n")
    failed = run(server, file_store, "budget", "--config", str(config))
    assert failed.code != 0
    assert len(server.requests) == 3
    assert "[llm] max_calls = 3 reached (3 used" in failed.err
    assert status_in_ls(file_store, "budget") == "failed"
    data = show(file_store, "budget", subprocess=True)
    assert data["status"] == "failed"
    assert len(data["llm_calls"]) == 3

    config.write_text("[llm]\nmax_calls = 8\n")
    resumed = durably(
        "resume",
        "budget",
        "--store",
        file_store,
        "--config",
        str(config),
        env=env_for(server),
        timeout=120,
    )
    assert resumed.code == 0, resumed.err
    assert len(server.requests) == 8  # the three calls made were not made again
    assert server.served == {key: len(value) for key, value in SCRIPT.items()}
    assert show(file_store, "budget", subprocess=True)["status"] == "completed"


def test_the_sdks_are_extras_imported_only_by_the_clients_that_need_them() -> None:
    import tomllib

    meta = tomllib.loads((KITCHEN.parents[1] / "packages/durably/pyproject.toml").read_text())
    project = meta["project"]
    sdks = ("openai", "anthropic", "httpx", "httpx2")
    assert not [d for d in project["dependencies"] if d.split(">")[0].split("=")[0] in sdks]
    assert [d.split(">")[0] for d in project["optional-dependencies"]["openai"]] == ["openai"]
    assert [d.split(">")[0] for d in project["optional-dependencies"]["anthropic"]] == ["anthropic"]
    code = (
        "import sys, durably, durably.llm, durably.runner, durably.cli\n"
        f"durably.llm.open_llm('scripted:{KITCHEN / 'kitchen.scripted.json'}')\n"
        f"print(sorted(m for m in {sdks!r} if m in sys.modules))\n"
        "durably.llm.open_llm('openai:m', {'base_url': 'http://127.0.0.1:9/v1'})\n"
        "durably.llm.open_llm('anthropic:m', {'base_url': 'http://127.0.0.1:9'})\n"
        "print(sorted(m for m in ('openai', 'anthropic') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "['anthropic', 'openai']"  # the check above can see them
