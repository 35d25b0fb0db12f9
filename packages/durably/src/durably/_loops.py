"""Top-level ``for`` and ``while`` loops of an agent's bottom frame, run one iteration at
a time.

A snapshot is exact only at a quiet point: the agent's bottom frame between two
statements, nothing suspended (``docs/design/resume-model``). A ``for`` statement whose
body awaits thousands of times never reaches one, so a resume would restore the snapshot
taken before the loop and replay every operation since. Yet between two iterations of a
loop over a list, a tuple, a str or a range, the only thing a Python frame holds beyond
the namespace is the iterator's position -- and when durably runs the loop itself, with
an index into the sequence, that position is data. :class:`SteppedLoop` runs such a loop
iteration by iteration; between two iterations it is at a quiet point, where a snapshot
may be taken with the sequence and the next index in the frame
(:class:`~durably._journal.LoopPosition`). A resume from that snapshot goes on with the
next iteration: the iterable is not
evaluated again, the namespace is as that iteration found it, and the operations
journaled since are replayed. So replay stays bounded by the snapshot interval
(:meth:`~durably._runtime.AgentTask.snapshot_interval`) plus one iteration's operations,
whatever the length of the loop.

Python's semantics are kept: the iterable is evaluated once; each iteration takes item
``i`` while ``i < len(sequence)`` at that moment, as a list's iterator does (a body that
appends to the list it loops over sees the new items); the target is assigned as
Python assigns it; ``break`` skips the ``else`` clause, ``continue`` goes on. A loop
over ``enumerate(sequence[, start])``, with the built-in ``enumerate`` and a sequence of
those types, is stepped the same way, its position holding the start. Iterables of other
types (generators, other calls, dict views, subclasses) are iterated with ``next()`` in
the same way, without quiet points inside (their position cannot be stored); so is a
sequence once it holds a value no snapshot can (checked when a snapshot is due, whatever
``on_unserializable`` says). The body runs as the code of a one-item ``for`` over the
current item, compiled from the statement's own syntax tree: its line numbers, and the
lines of its tracebacks, are the statement's.

A ``while`` loop is simpler: at the top of an iteration, before its condition is
evaluated, nothing but the namespace says where it stands, so its position holds no
sequence (and a resume evaluates the condition, as the loop would have).
"""

from __future__ import annotations

import ast
import builtins
import inspect
from types import CodeType
from typing import TYPE_CHECKING, Any

from durably._journal import LoopPosition
from durably.errors import CorruptObjectError, SerializationError

if TYPE_CHECKING:
    from durably._journal import Frame
    from durably._runtime import AgentTask

__all__ = ["SteppedLoop", "loop_of"]

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
        # a for's iterable, evaluated once; a while's condition, before every iteration
        self._iterable = _expression(
            node.test if isinstance(node, ast.While) else node.iter, filename
        )
        self._enumerate: _Enumerate | None = None
        if isinstance(node, ast.For):
            self._enumerate = _Enumerate.of(node.iter, filename)
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
            saved.statement != statement
            or (saved.sequence is None) != self._while
            or (saved.start is not None and self._enumerate is None)
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
            index, start = saved.next, saved.start
        else:
            index = 0
            if self._enumerate is None:
                sequence, start = await self._head(namespace), None
            else:
                sequence, start = await self._enumerate.evaluate(namespace)
        iterator = None if _indexable(sequence) else iter(sequence)
        quiet = iterator is None
        while True:
            if iterator is None:
                if index >= len(sequence):
                    break
                item = sequence[index] if start is None else (start + index, sequence[index])
            else:
                try:
                    item = next(iterator)
                except StopIteration:
                    break
            index += 1
            if not await self._iteration(namespace, item):  # break: no else clause
                return
            if quiet:
                position = LoopPosition(statement, index, sequence, start)
                quiet = await _quiet_point(frame, task, position)
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
        return await _evaluate(self._iterable, namespace)

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


class _Enumerate:
    """A ``for`` loop's iterable written ``enumerate(sequence[, start])``: stepped over
    ``sequence`` (with ``start``) when the name is the built-in and the sequence one the
    loop goes through by index; otherwise the call is made as written."""

    def __init__(self, parts: list[CodeType], keyword: bool) -> None:
        self._parts = parts  # the callee, the iterable and the start, in Python's order
        self._keyword = keyword  # the start passed as ``start=``

    @classmethod
    def of(cls, node: ast.expr, filename: str) -> _Enumerate | None:
        """The iterable's parts, if ``node`` is such a call."""
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "enumerate"
            and 1 <= len(node.args) + len(node.keywords) <= 2
            and not any(isinstance(arg, ast.Starred) for arg in node.args)
        ):
            return None
        args = list(node.args)
        keyword = False
        if node.keywords:
            if len(args) != 1 or node.keywords[0].arg != "start":
                return None
            args.append(node.keywords[0].value)
            keyword = True
        return cls([_expression(part, filename) for part in (node.func, *args)], keyword)

    async def evaluate(self, namespace: dict[str, Any]) -> tuple[Any, int | None]:
        """(sequence, start) to step through, or (the call's value, None) to iterate."""
        values = [await _evaluate(part, namespace) for part in self._parts]
        function, iterable, *rest = values
        start = rest[0] if rest else 0
        if function is builtins.enumerate and type(start) is int and _indexable(iterable):
            return iterable, start
        if not rest:
            return function(iterable), None
        if self._keyword:
            return function(iterable, start=start), None
        return function(iterable, start), None


async def _quiet_point(frame: Frame, task: AgentTask, position: LoopPosition) -> bool:
    """Between two iterations: snapshot the agent if one is due, with where the loop
    stands in the frame (there only while the snapshot is taken). False if the sequence
    now holds a value no snapshot can (a function; a regex match an iteration put in an
    item): the loop then goes on without quiet points, as it would without durably."""
    if not task.snapshot_due:
        return True
    if not _storable(task, position.sequence):
        return False
    frame.loop = position
    try:
        await task.snapshot()
    finally:
        frame.loop = None
    return True


def _storable(task: AgentTask, sequence: Any) -> bool:
    """Whether a snapshot can hold the loop's sequence, checked whatever
    ``on_unserializable`` says: skipping a value of the position would lose the frame."""
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


def _expression(node: ast.expr, filename: str) -> CodeType:
    """``node`` compiled on its own (its line numbers are the statement's)."""
    code: CodeType = compile(
        ast.Expression(body=node), filename, "eval", flags=_FLAGS, dont_inherit=True
    )
    return code


async def _evaluate(code: CodeType, namespace: dict[str, Any]) -> Any:
    """An expression's value (``await f()`` awaited)."""
    value = eval(code, namespace)
    if code.co_flags & inspect.CO_COROUTINE:
        value = await value
    return value


async def _value(result: Any) -> Any:
    """The value of evaluated code: awaited if the code awaits at top level."""
    if inspect.iscoroutine(result):
        return await result
    return result
