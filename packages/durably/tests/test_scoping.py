"""Frame variables are visible everywhere a Python reader expects, with and without await,
and survive a checkpoint/restore. Each test documents one case."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from durably import Agent, CheckpointManager, StreamingPythonExecutor
from durably.config import DurabilityConfig

from memstore import MemoryStore


class Scratch(Agent):
    """Runs code."""


async def execute(code: str, store: MemoryStore | None = None) -> tuple[dict[str, Any], Any]:
    store = store or MemoryStore()
    manager = CheckpointManager("scope", store, config=DurabilityConfig(snapshot_every=1))
    said: list[str] = []
    agent = manager.attach(Scratch, echo=said.append)
    executor = StreamingPythonExecutor(agent)
    await executor.add_chunk(textwrap.dedent(code).lstrip("\n"))
    await executor.finish()
    assert not executor.errors, executor.errors
    return executor.namespace, said


async def resume(store: MemoryStore, more: str) -> dict[str, Any]:
    manager = CheckpointManager("scope", store, config=DurabilityConfig(snapshot_every=1))
    agent = manager.attach(Scratch, echo=lambda _: None)
    checkpoint = await manager.get_latest_checkpoint()
    executor = await StreamingPythonExecutor.resume_from_checkpoint(agent, checkpoint)
    await executor.add_chunk(textwrap.dedent(more).lstrip("\n"))
    await executor.finish()
    assert not executor.errors, executor.errors
    return executor.namespace


@pytest.mark.asyncio
async def test_generator_expression_sees_frame_locals() -> None:
    ns, _ = await execute("""
        k = 3
        total = sum(x * k for x in range(4))
    """)
    assert ns["total"] == 18


@pytest.mark.asyncio
async def test_comprehensions_see_frame_locals_with_and_without_await() -> None:
    ns, _ = await execute("""
        base = 10
        squares = [base + i * i for i in range(3)]
        table = {i: base for i in range(2)}
        seen = {base - i for i in range(2)}
        steps = [await self.Step(f"Main:0{i}:EXE") or base + i for i in range(2)]
    """)
    assert ns["squares"] == [10, 11, 14]
    assert ns["table"] == {0: 10, 1: 10}
    assert ns["seen"] == {9, 10}
    assert ns["steps"] == [10, 11]


@pytest.mark.asyncio
async def test_lambda_and_nested_def_see_locals_defined_later() -> None:
    ns, _ = await execute("""
        add = lambda v: v + offset
        def scale(v):
            return v * factor
        offset = 5
        factor = 2
        result = (add(1), scale(3))
    """)
    assert ns["result"] == (6, 6)


@pytest.mark.asyncio
async def test_nested_def_with_await_uses_self_and_locals() -> None:
    ns, said = await execute("""
        greeting = "hi"
        async def tell(name):
            await self.Say("user", f"{greeting} {name}")
            return name.upper()
        shouted = await tell("ada")
    """)
    assert ns["shouted"] == "ADA"
    assert said == ["Scratch: hi ada"]


@pytest.mark.asyncio
async def test_names_shadowing_builtins_are_kept() -> None:
    ns, _ = await execute("""
        list = [3, 1, 2]
        sum = "not a function"
        ordered = sorted(list)
    """)
    assert ns["list"] == [3, 1, 2]
    assert ns["sum"] == "not a function"
    assert ns["ordered"] == [1, 2, 3]


@pytest.mark.asyncio
async def test_class_defined_by_the_llm_is_usable() -> None:
    ns, _ = await execute("""
        unit = "min"
        class Dish:
            def __init__(self, minutes):
                self.minutes = minutes
            def label(self):
                return f"{self.minutes} {unit}"
        label = Dish(30).label()
    """)
    assert ns["label"] == "30 min"


@pytest.mark.asyncio
async def test_del_and_augmented_assignment() -> None:
    ns, _ = await execute("""
        count = 1
        count += 2
        temp = 0
        del temp
    """)
    assert ns == {"count": 3}


@pytest.mark.asyncio
async def test_await_in_loop_if_try_with_and_async_for() -> None:
    ns, said = await execute("""
        import contextlib
        hits = []
        async def numbers():
            for n in range(3):
                yield n
        async for n in numbers():
            if n % 2:
                await self.Say("user", f"odd {n}")
            else:
                hits.append(n)
        try:
            await self.Step("Main:02:EXE")
            raise KeyError("x")
        except KeyError:
            hits.append("caught")
        with contextlib.suppress(ZeroDivisionError):
            await self.Step("Main:03:EXE")
            hits.append(1 / 0)
    """)
    assert ns["hits"] == [0, 2, "caught"]
    assert said == ["Scratch: odd 1"]


@pytest.mark.asyncio
async def test_functions_lambdas_and_classes_survive_a_restore() -> None:
    store = MemoryStore()
    await execute(
        """
        factor = 3
        def triple(v):
            return v * factor
        shift = lambda v: v + factor
        class Box:
            size = 2
        await self.Step("Main:01:EXE")
    """,
        store,
    )
    ns = await resume(
        store,
        """
        factor = 4
        after = (triple(2), shift(1), Box.size)
        await self.Step("Main:02:EXE")
    """,
    )
    assert ns["after"] == (8, 5, 2)
    # ... and again: what was re-created can be checkpointed and re-created once more.
    ns = await resume(
        store,
        """
        again = (triple(1), shift(0), Box.size)
    """,
    )
    assert ns["again"] == (4, 4, 2)


@pytest.mark.asyncio
async def test_an_unserializable_variable_is_named_in_the_error() -> None:
    import socket

    from durably.errors import SerializationError

    store = MemoryStore()
    manager = CheckpointManager("scope", store, config=DurabilityConfig(snapshot_every=1))
    agent = manager.attach(Scratch, echo=lambda _: None)
    executor = StreamingPythonExecutor(agent)
    executor.frame.namespace["conn"] = socket.socket()
    try:
        with pytest.raises(SerializationError, match="Main frame local 'conn': socket is not"):
            await executor.add_chunk('await self.Step("Main:01:EXE")\n')
    finally:
        executor.frame.namespace["conn"].close()
