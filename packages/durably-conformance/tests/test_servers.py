"""The test-server search the PostgreSQL and Redis test helpers share
(``durably_conformance._servers``), with a fake server: which URL wins, what the reason
says, and when a missing server skips the test and when it fails it."""

from __future__ import annotations

import atexit
import socket
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from durably_conformance._servers import Source, find_server, free_port, server_or_skip

ENV_URL = "DURABLY_TEST_FAKE_URL"
ENV_REQUIRE = "DURABLY_REQUIRE_FAKE"
LOCAL_URL = "fake://127.0.0.1:1/local"


class FakeThrowaway:
    """A throwaway server that starts (or not) as the test says, and counts its lives."""

    cannot: str | None = None
    start_error: str | None = None
    started: list[FakeThrowaway] = []  # noqa: RUF012 (reset by the fixture)

    def __init__(self) -> None:
        self.running = False

    @staticmethod
    def unavailable_reason() -> str | None:
        return FakeThrowaway.cannot

    @property
    def url(self) -> str:
        return "fake://127.0.0.1:2/throwaway"

    def start(self) -> FakeThrowaway:
        if FakeThrowaway.start_error is not None:
            raise RuntimeError(FakeThrowaway.start_error)
        self.running = True
        FakeThrowaway.started.append(self)
        return self

    def stop(self) -> None:
        self.running = False


@dataclass
class FakeServer:
    url: str
    source: Source
    process: FakeThrowaway | None = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_URL, raising=False)
    monkeypatch.delenv(ENV_REQUIRE, raising=False)
    monkeypatch.setattr(FakeThrowaway, "cannot", None)
    monkeypatch.setattr(FakeThrowaway, "start_error", None)
    monkeypatch.setattr(FakeThrowaway, "started", [])


def prober(up: set[str], asked: list[str]) -> Callable[[str], str | None]:
    """``answers(url)``: None for the URLs in ``up``, else a refusal; records each URL."""

    def answers(url: str) -> str | None:
        asked.append(url)
        return None if url in up else "connection refused"

    return answers


def find(up: set[str], asked: list[str] | None = None) -> tuple[FakeServer | None, str]:
    return find_server(
        FakeServer,
        env_url=ENV_URL,
        local_url=LOCAL_URL,
        answers=prober(up, [] if asked is None else asked),
        throwaway=FakeThrowaway,
        cannot_start="cannot start a fake",
    )


def test_free_port_can_be_bound() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_the_env_url_wins_over_a_local_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_URL, "fake://elsewhere:9/env")
    asked: list[str] = []
    server, reason = find({"fake://elsewhere:9/env", LOCAL_URL}, asked)
    assert server == FakeServer("fake://elsewhere:9/env", "env")
    assert reason == ""
    assert asked == ["fake://elsewhere:9/env"]  # the local server is not even asked
    assert FakeThrowaway.started == []


def test_an_env_url_that_does_not_answer_is_an_error_not_a_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_URL, "fake://elsewhere:9/env")
    with pytest.raises(RuntimeError) as info:
        find({LOCAL_URL})
    assert str(info.value) == f"{ENV_URL} is set but the server does not answer: connection refused"
    # ... and server_or_skip fails the test with it, even without the require variable.
    with pytest.raises(pytest.fail.Exception, match=f"^{ENV_URL} is set but the server does"):
        server_or_skip(
            lambda: find({LOCAL_URL}), what="Fake", env_url=ENV_URL, env_require=ENV_REQUIRE
        )


def test_a_local_server_comes_next() -> None:
    server, reason = find({LOCAL_URL})
    assert (server, reason) == (FakeServer(LOCAL_URL, "local"), "")
    assert FakeThrowaway.started == []


def test_the_local_probe_may_differ() -> None:
    asked: list[str] = []
    server, _ = find_server(
        FakeServer,
        env_url=ENV_URL,
        local_url=LOCAL_URL,
        answers=prober(set(), []),
        local_answers=prober({LOCAL_URL}, asked),
        throwaway=FakeThrowaway,
        cannot_start="cannot start a fake",
    )
    assert server == FakeServer(LOCAL_URL, "local")
    assert asked == [LOCAL_URL]


def test_else_a_throwaway_server_is_started() -> None:
    server, reason = find(set())
    assert reason == ""
    assert server is not None
    assert (server.url, server.source) == ("fake://127.0.0.1:2/throwaway", "throwaway")
    assert FakeThrowaway.started == [server.process]
    assert server.process is not None
    assert server.process.running


def test_the_reason_says_why_there_is_no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FakeThrowaway, "cannot", "fake-server is not on PATH")
    assert find(set()) == (
        None,
        f"no server at {LOCAL_URL} (connection refused); "
        "cannot start a fake: fake-server is not on PATH",
    )
    monkeypatch.setattr(FakeThrowaway, "cannot", None)
    monkeypatch.setattr(FakeThrowaway, "start_error", "it crashed\nlong log")
    assert find(set()) == (None, f"no server at {LOCAL_URL} (connection refused); it crashed")


def skip_or_fail(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    """server_or_skip when nothing answers and no throwaway server can be started."""
    monkeypatch.setattr(FakeThrowaway, "cannot", "fake-server is not on PATH")
    return server_or_skip(
        lambda: find(set()), what="Fake", env_url=ENV_URL, env_require=ENV_REQUIRE
    )


NO_SERVER = (
    f"no Fake server for the tests: no server at {LOCAL_URL} (connection refused); "
    f"cannot start a fake: fake-server is not on PATH. Set {ENV_URL} to use one"
)


@pytest.mark.parametrize("require", [None, "0", "yes"])
def test_no_server_skips_the_test(monkeypatch: pytest.MonkeyPatch, require: str | None) -> None:
    if require is not None:
        monkeypatch.setenv(ENV_REQUIRE, require)
    with pytest.raises(pytest.skip.Exception) as info:
        skip_or_fail(monkeypatch)
    assert info.value.msg == NO_SERVER


def test_no_server_fails_the_test_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_REQUIRE, "1")
    with pytest.raises(pytest.fail.Exception) as info:
        skip_or_fail(monkeypatch)
    assert info.value.msg == f"{NO_SERVER} ({ENV_REQUIRE}=1 makes this a failure)"


def test_a_server_found_is_returned_and_only_a_started_one_is_stopped_at_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_REQUIRE, "1")
    at_exit: list[Callable[[], object]] = []
    monkeypatch.setattr(atexit, "register", at_exit.append)

    local = server_or_skip(
        lambda: find({LOCAL_URL}), what="Fake", env_url=ENV_URL, env_require=ENV_REQUIRE
    )
    assert local == FakeServer(LOCAL_URL, "local")
    assert at_exit == []

    started = server_or_skip(
        lambda: find(set()), what="Fake", env_url=ENV_URL, env_require=ENV_REQUIRE
    )
    assert started.source == "throwaway"
    assert at_exit == [started.stop]
    at_exit[0]()
    assert started.process is not None
    assert not started.process.running
