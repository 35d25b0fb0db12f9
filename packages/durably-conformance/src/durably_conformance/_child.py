"""A child process of the suite: opens provider instances and runs calls on command.

Started by :mod:`durably_conformance._processes` as ``python -m
durably_conformance._child``. It reads one JSON command per line on stdin and answers
each with one JSON line on stdout:

``{"op": "open", "id": N, "cls": "module:qualname", "url": ..., "options": {...},
"env": {...}, "sys_path": [...]}``
    Build ``cls.from_url(url, options)`` -- the way durably builds a provider from a
    store URL -- and keep it as instance ``N``; then make one read
    (``get_lease``) so that connections are open before any race starts.
``{"op": "call", "id": N, "method": name, "args": [...], "kwargs": {...}, "at": T}``
    Wait until the wall clock reads ``T`` (so that the calls of a race start together
    in every child), then await ``instance.method(*args, **kwargs)``.
``{"op": "close", "id": N}``
    Close instance ``N``.

Answers are ``{"ok": value}`` or ``{"error": {"type": ..., "message": ...}}``. The
process ends at end of input.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import time
from typing import Any

from durably_conformance._wire import decode, encode, encode_error

WARM_UP_ID = "durably-conformance-warm-up"
"""The execution whose lease a new instance reads once (it creates nothing)."""


class _Child:
    def __init__(self) -> None:
        self.instances: dict[int, Any] = {}

    async def open(self, command: dict[str, Any]) -> None:
        for entry in reversed(command.get("sys_path", [])):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        env = command.get("env")
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        module_name, _, qualname = command["cls"].partition(":")
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
        provider = target.from_url(command["url"], command["options"])
        self.instances[command["id"]] = provider
        await provider.get_lease(WARM_UP_ID)

    async def call(self, command: dict[str, Any]) -> Any:
        provider = self.instances[command["id"]]
        args = decode(command.get("args", []))
        kwargs = decode(command.get("kwargs", {}))
        at = command.get("at")
        if at is not None:
            delay = float(at) - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
        return await getattr(provider, command["method"])(*args, **kwargs)

    async def close(self, command: dict[str, Any]) -> None:
        provider = self.instances.pop(command["id"], None)
        if provider is not None:
            await provider.close()

    async def handle(self, command: dict[str, Any]) -> Any:
        op = command["op"]
        if op == "open":
            return await self.open(command)
        if op == "call":
            return await self.call(command)
        if op == "close":
            return await self.close(command)
        raise ValueError(f"unknown command {op!r}")

    async def close_all(self) -> None:
        for number in list(self.instances):
            try:
                await self.close({"id": number})
            except Exception:
                pass


async def _serve(out: Any) -> None:
    child = _Child()
    try:
        while True:
            # Read in a thread: the event loop keeps running between commands (pools,
            # background tasks of the provider).
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            if not line.strip():
                continue
            try:
                result = await child.handle(json.loads(line))
                answer: dict[str, Any] = {"ok": encode(result)}
            except Exception as exc:
                answer = {"error": encode_error(exc)}
            out.write(json.dumps(answer) + "\n")
            out.flush()
    finally:
        await child.close_all()


def main() -> None:
    """Serve commands from stdin until it ends."""
    out = sys.stdout
    # Nothing but answers may reach stdout: a provider that prints goes to stderr.
    sys.stdout = sys.stderr
    asyncio.run(_serve(out))


if __name__ == "__main__":
    main()
