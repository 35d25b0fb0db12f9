"""Provider instances in child processes, for the cross-process clauses (C22).

Atomicity that holds "in one or several processes" cannot be checked from one
process: a provider whose check-and-write is guarded by a process-local lock passes
every in-process race. The suite therefore runs races from child processes, each
building its own instance the way durably does -- ``from_url(store_url,
store_options)`` of the provider's class -- and starting its call at the same wall-clock
instant as the others.

The children (:data:`POOL_SIZE` of them) are started once per test session, on first
use, and serve every test of the session (a new instance per test); the plugin stops
them when the session ends. They inherit this process's ``sys.path`` and receive its
environment with each instance they open.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from durably.storage import CheckpointProvider
from durably_conformance._wire import decode, decode_error, encode

__all__ = [
    "POOL_SIZE",
    "Call",
    "ChildProcesses",
    "RemoteProvider",
    "race",
    "shutdown",
]

POOL_SIZE = 4
"""Child processes of a session (the number of racing instances)."""

START_DELAY = 0.05
"""Seconds between sending a race's calls and the instant they all start."""

REPLY_TIMEOUT = 120.0
"""Seconds a child may take to answer one command before the test fails."""


class ChildFailure(AssertionError):
    """A child process died, hung or could not build the provider."""


class _Child:
    """One child process (``python -m durably_conformance._child``)."""

    def __init__(self) -> None:
        paths = [entry for entry in sys.path if entry]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(paths)
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "durably_conformance._child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            text=True,
            bufsize=1,
        )

    def send(self, command: Mapping[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        except OSError as exc:
            raise ChildFailure(f"a child process is gone ({exc}){self._tail()}") from None

    def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=10)
            raise ChildFailure(
                f"a child process ended (exit status {self.process.returncode}){self._tail()}"
            )
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def ask(self, command: Mapping[str, Any]) -> dict[str, Any]:
        self.send(command)
        return await self.answer()

    async def answer(self) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.receive), REPLY_TIMEOUT)
        except TimeoutError:
            self.stop()
            raise ChildFailure(
                f"a child process did not answer within {REPLY_TIMEOUT:.0f} s{self._tail()}"
            ) from None

    def _tail(self) -> str:
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""
        return f"; its stderr ends with:\n{text[-3000:]}" if text else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stdin):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._stderr.close()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


_children: list[_Child] = []
_instance_ids = itertools.count(1)


def _pool() -> list[_Child]:
    if not _children or not all(child.alive for child in _children):
        shutdown()
        _children.extend(_Child() for _ in range(POOL_SIZE))
    return list(_children)


def shutdown() -> None:
    """Stop the session's child processes (the plugin calls it when the session ends)."""
    while _children:
        _children.pop().stop()


@dataclass(frozen=True)
class Call:
    """A provider call to make in a child process (see :meth:`RemoteProvider.call`)."""

    remote: RemoteProvider
    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def command(self, at: float | None) -> dict[str, Any]:
        return {
            "op": "call",
            "id": self.remote.instance_id,
            "method": self.method,
            "args": encode(list(self.args)),
            "kwargs": encode(dict(self.kwargs)),
            "at": at,
        }


@dataclass(frozen=True)
class RemoteProvider:
    """A provider instance open in a child process."""

    child: _Child
    instance_id: int
    index: int
    """Its position among the test's remote instances (0, 1, ...)."""

    def call(self, method: str, *args: Any, **kwargs: Any) -> Call:
        """The call ``instance.method(*args, **kwargs)``, to pass to :func:`race`."""
        return Call(self, method, args, kwargs)

    async def run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Await ``instance.method(*args, **kwargs)`` in the child; its error is raised here."""
        (result,) = await race([self.call(method, *args, **kwargs)], start_in=0.0)
        if isinstance(result, BaseException):
            raise result
        return result


async def race(calls: Sequence[Call], *, start_in: float = START_DELAY) -> list[Any]:
    """Run calls in their child processes, all starting at the same instant.

    Returns:
        Each call's result, or the exception it raised, in the order of ``calls``.
    """
    children = [call.remote.child for call in calls]
    if len({id(child) for child in children}) != len(children):
        raise ValueError("a race runs at most one call per child process")
    at = time.time() + start_in if start_in > 0 else None
    for call in calls:
        call.remote.child.send(call.command(at))
    answers = await asyncio.gather(*(child.answer() for child in children))
    return [
        decode(answer["ok"]) if "error" not in answer else decode_error(answer["error"])
        for answer in answers
    ]


class ChildProcesses:
    """The remote instances of one test, all on the test's store.

    Args:
        provider_class: The provider's class; it must be importable by its module and
            qualified name in a new process.
        store_url: The URL ``from_url`` receives.
        store_options: The options ``from_url`` receives.
    """

    def __init__(
        self,
        provider_class: type[CheckpointProvider],
        store_url: str,
        store_options: Mapping[str, Any],
    ) -> None:
        self.provider_class = provider_class
        self.store_url = store_url
        self.store_options = dict(store_options)
        self._opened: list[RemoteProvider] = []

    @property
    def class_path(self) -> str:
        cls = self.provider_class
        if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
            raise ChildFailure(
                f"{cls.__qualname__} cannot be imported in a child process; the cross-process "
                "clauses need a provider class defined at module level of an importable module"
            )
        return f"{cls.__module__}:{cls.__qualname__}"

    async def open(self, count: int = POOL_SIZE) -> list[RemoteProvider]:
        """Open ``count`` instances (one per child process) on the test's store."""
        if count > POOL_SIZE:
            raise ValueError(f"at most {POOL_SIZE} child processes")
        children = _pool()[:count]
        remotes = [
            RemoteProvider(child, next(_instance_ids), index)
            for index, child in enumerate(children)
        ]
        command = {
            "op": "open",
            "cls": self.class_path,
            "url": self.store_url,
            "options": self.store_options,
            "env": dict(os.environ),
            "sys_path": [entry for entry in sys.path if entry],
        }
        for remote in remotes:
            remote.child.send({**command, "id": remote.instance_id})
        answers = await asyncio.gather(*(remote.child.answer() for remote in remotes))
        self._opened.extend(remotes)
        for answer in answers:
            if "error" in answer:
                error = answer["error"]
                raise ChildFailure(
                    f"a child process could not open {self.class_path}.from_url("
                    f"{self.store_url!r}, {self.store_options!r}): {error['type']}: "
                    f"{error['message']}"
                )
        return remotes

    async def aclose(self) -> None:
        """Close the instances this test opened."""
        opened, self._opened = self._opened, []
        for remote in opened:
            if remote.child.alive:
                try:
                    await remote.child.ask({"op": "close", "id": remote.instance_id})
                except ChildFailure:
                    pass
