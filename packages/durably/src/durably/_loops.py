"""Top-level ``for`` and ``while`` loops of an agent's bottom frame, run one iteration at
a time.

A snapshot is exact only at a quiet point: the agent's bottom frame between two
statements, nothing suspended (``docs/design/resume-model``). A ``for`` statement whose
body awaits thousands of times never reaches one, so a resume would restore the snapshot
taken before the loop and replay every operation since. Yet between two iterations of a
loop over a list, a tuple, a str or a range, the only thing a Python frame holds beyond
the namespace is the iterator's position -- and when durably runs the loop itself, with
an index into the sequence, that position is data. :class:`SteppedLoop` runs such a loop
iteration by iteration; between two iterations it records the sequence and the next
index in the frame (:class:`~durably._journal.LoopPosition`) and offers the runtime a quiet
point (:meth:`~durably._runtime.AgentTask.iteration_done`), where a snapshot may be
taken. A resume from that snapshot goes on with that iteration: the iterable is not
evaluated again, the namespace is as that iteration found it, and the operations
journaled since are replayed. So replay stays bounded by ``snapshot_every`` operations
plus one iteration's, whatever the length of the loop.

Python's semantics are kept: the iterable is evaluated once; each iteration takes item
``i`` while ``i < len(sequence)`` at that moment, as a list's iterator does (a body that
appends to the list it loops over sees the new items); the target is assigned as
Python assigns it; ``break`` skips the ``else`` clause, ``continue`` goes on. Iterables
of other types (generators, ``enumerate``, dict views, subclasses) are iterated with
``next()`` in the same way, without quiet points inside (their position cannot be
stored). The body runs as the code of a one-item ``for`` over the current item, compiled
from the statement's own syntax tree: its line numbers, and the lines of its tracebacks,
are the statement's.

A ``while`` loop is simpler: at the top of an iteration, before its condition is
evaluated, nothing but the namespace says where it stands, so its position holds no
sequence (and a resume evaluates the condition, as the loop would have).
"""

from __future__ import annotations

import ast
import inspect
from typing import TYPE_CHECKING, Any

from durably._journal import LoopPosition
from durably.errors import CorruptObjectError, SerializationError

if TYPE_CHECKING:
    from durably._journal import Frame
    from durably._runtime import AgentTask

__all__ = ["LOOP_BYTES_PER_OPERATION", "SteppedLoop", "loop_of"]

LOOP_BYTES_PER_OPERATION = 4096
"""Between two iterations, a snapshot is due once ``snapshot_every`` operations were
journaled and one per this many bytes the agent's latest snapshot took to encode (see
:meth:`~durably._runtime.AgentTask.iteration_done`)."""

_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
_ITEM = "__durably_item__"
"""The current item, in the namespace while an iteration's body runs."""
_WENT_ON = "__durably_went_on__"
"""Set by the body's wrapper when the body ended without ``break``."""
_SEQUENCES = (list, tuple, str, range)
"""Types whose iteration is ``sequence[i]`` for ``i < len(sequence)``: their position
is an index."""


def loop_of(source: str) -> ast.For | ast.While | None:
    """The statement's loop node, if it is a ``for`` loop (not ``async for``) or a
    ``while`` loop that awaits (in its body, its ``else`` clause, or a ``while``'s
    condition): the loops worth stepping."""
    if not source.startswith(("for", "while")):
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:  # the executor reports it when it compiles the statement
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.For, ast.While)):
        return None
    node = tree.body[0]
    parts: list[ast.AST] = [*node.body, *node.orelse]
    if isinstance(node, ast.While):
        parts.append(node.test)
    awaits = any(
        isinstance(inner, (ast.Await, ast.AsyncFor, ast.AsyncWith))
        for part in parts
        for inner in ast.walk(part)
    )
    return node if awaits else None


class SteppedLoop:
    """One top-level ``for`` or ``while`` statement, compiled to run an iteration at a
    time."""

    def __init__(self, node: ast.For | ast.While, filename: str) -> None:
        self._while = isinstance(node, ast.While)
        head = ast.Expression(body=node.test if isinstance(node, ast.While) else node.iter)
        # a for's iterable, evaluated once; a while's condition, before every iteration
        self._iterable = compile(head, filename, "eval", flags=_FLAGS, dont_inherit=True)
        item = ast.Name(id=_ITEM, ctx=ast.Load())
        went_on = ast.Assign(
            targets=[ast.Name(id=_WENT_ON, ctx=ast.Store())], value=ast.Constant(True)
        )
        target = node.target if isinstance(node, ast.For) else ast.Name(_ITEM, ast.Store())
        ast.copy_location(target, node)
        wrapper = ast.For(
            target=target,
            iter=ast.Tuple(elts=[item], ctx=ast.Load()),
            body=node.body,
            orelse=[went_on],
        )
        for made in (wrapper, wrapper.iter, item, went_on, *went_on.targets, went_on.value):
            ast.copy_location(made, node)
        body = ast.Module(body=[wrapper], type_ignores=[])
        self._body = compile(body, filename, "exec", flags=_FLAGS, dont_inherit=True)
        self._orelse = None
        if node.orelse:
            orelse = ast.Module(body=node.orelse, type_ignores=[])
            self._orelse = compile(orelse, filename, "exec", flags=_FLAGS, dont_inherit=True)

    async def run(self, frame: Frame, statement: int, task: AgentTask) -> None:
        """Run the loop in ``frame`` -- from the iteration its restored
        :attr:`~durably._journal.Frame.loop` names, if it names statement ``statement``
        -- offering ``task`` a quiet point after each iteration over a sequence."""
        namespace = frame.namespace
        saved, frame.loop = frame.loop, None
        if saved is not None and (
            saved.statement != statement or (saved.sequence is None) != self._while
        ):  # never written so: do not start it over
            raise CorruptObjectError(
                f"a snapshot of {frame.playbook} stopped inside the loop of statement "
                f"{saved.statement}, but statement {statement} is the next to run"
                + ("" if saved.statement != statement else ", a loop of another kind")
            )
        if self._while:
            await self._run_while(frame, statement, task, 0 if saved is None else saved.next)
            return
        if saved is not None:
            sequence: Any = saved.sequence
            index = saved.next
        else:
            sequence = await self._head(namespace)
            index = 0
        iterator = None if _indexable(sequence) else iter(sequence)
        quiet = iterator is None and (saved is not None or _storable(task, sequence))
        while True:
            if iterator is None:
                if index >= len(sequence):
                    break
                item = sequence[index]
            else:
                try:
                    item = next(iterator)
                except StopIteration:
                    break
            index += 1
            if not await self._iteration(namespace, item):  # break: no else clause
                return
            if quiet:
                await _quiet_point(frame, task, LoopPosition(statement, index, sequence))
        await self._else(namespace)

    async def _run_while(self, frame: Frame, statement: int, task: AgentTask, done: int) -> None:
        """A ``while`` loop: at the top of each iteration, before its condition is
        evaluated, everything is in the namespace, so its position is just that (and how
        many iterations ran: ``done``)."""
        namespace = frame.namespace
        while await self._head(namespace):
            if not await self._iteration(namespace, None):  # break: no else clause
                return
            done += 1
            await _quiet_point(frame, task, LoopPosition(statement, done, None))
        await self._else(namespace)

    async def _head(self, namespace: dict[str, Any]) -> Any:
        """A ``for``'s iterable or a ``while``'s condition (``for x in await f():``)."""
        value = eval(self._iterable, namespace)
        if self._iterable.co_flags & inspect.CO_COROUTINE:
            value = await value
        return value

    async def _iteration(self, namespace: dict[str, Any], item: Any) -> bool:
        """Run the body once over ``item``; False if it ended with ``break``."""
        namespace[_ITEM] = item
        try:
            await _value(eval(self._body, namespace))
            return namespace.get(_WENT_ON) is True
        finally:
            namespace.pop(_ITEM, None)
            namespace.pop(_WENT_ON, None)

    async def _else(self, namespace: dict[str, Any]) -> None:
        if self._orelse is not None:
            await _value(eval(self._orelse, namespace))


async def _quiet_point(frame: Frame, task: AgentTask, position: LoopPosition) -> None:
    """Between two iterations: where the loop stands is in the frame while the runtime
    may snapshot it, and only then."""
    frame.loop = position
    try:
        await task.iteration_done(frame)
    finally:
        frame.loop = None


def _storable(task: AgentTask, sequence: Any) -> bool:
    """Whether a snapshot can hold the loop's sequence: a loop over values the codec
    refuses (functions, say) gets no quiet points inside, so that it runs as it would
    without durably."""
    manager = task.execution.manager
    if type(sequence) not in (list, tuple) or not manager.config.enabled:
        return True
    try:
        manager.codec.encode_value(sequence)
    except SerializationError:
        return False
    return True


def _indexable(sequence: Any) -> bool:
    """Whether the loop goes through ``sequence`` by index (a range too long for
    ``len()`` is iterated)."""
    if type(sequence) not in _SEQUENCES:
        return False
    try:
        len(sequence)
    except OverflowError:
        return False
    return True


async def _value(result: Any) -> Any:
    """The value of evaluated code: awaited if the code awaits at top level."""
    if inspect.iscoroutine(result):
        return await result
    return result
