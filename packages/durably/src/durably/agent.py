"""Agents and playbooks: what a durably program is made of.

A program is a Python file with :class:`Agent` subclasses::

    from durably import Agent, playbook

    class Concierge(Agent):
        \"\"\"You are a friendly kitchen concierge.\"\"\"

        @playbook(llm=True, begin=True)
        async def Main(self):
            \"\"\"- Welcome the user
            - Gather the user's preferences\"\"\"

        @playbook
        async def CookingTime(self, dish: str) -> int:
            return 30

An *LLM playbook* (``llm=True``) has no Python body: its docstring lists the steps, and
the LLM writes the code that runs them. A *Python playbook* (a tool) is an ordinary
coroutine whose result is journaled: on resume it is not run again.

The methods LLM code calls on ``self`` (:meth:`Agent.Say`, :meth:`Agent.Yield`, ...)
are durable operations: each completed one is journaled and checkpointed before the
code after its ``await`` runs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

if TYPE_CHECKING:
    from durably._runtime import AgentTask

__all__ = ["Agent", "AgentHandle", "PlaybookSpec", "State", "playbook"]

F = TypeVar("F", bound=Callable[..., Any])

running_agent: ContextVar[AgentTask | None] = ContextVar("durably_running_agent", default=None)
"""The agent whose LLM code runs now: a handle restored from a checkpoint has no caller of
its own and calls through this one."""


@dataclass(frozen=True)
class PlaybookSpec:
    """What :func:`playbook` records about a method."""

    name: str
    llm: bool
    begin: bool
    public: bool
    steps: str
    signature: str
    triggers: tuple[str, ...] = field(default_factory=tuple)
    func: Callable[..., Any] | None = None


@overload
def playbook(func: F, /) -> F: ...
@overload
def playbook(
    *,
    llm: bool = False,
    begin: bool = False,
    public: bool = False,
    triggers: tuple[str, ...] = (),
) -> Callable[[F], F]: ...


def playbook(
    func: Any = None,
    /,
    *,
    llm: bool = False,
    begin: bool = False,
    public: bool = False,
    triggers: tuple[str, ...] = (),
) -> Any:
    """Mark an agent method as a playbook.

    Args:
        llm: The LLM writes this playbook's code from its docstring (the steps).
        begin: Run this playbook when the program starts (an LLM playbook: a Python
            playbook runs when it is called, as a tool).
        public: Other agents may call it (``await other.Name(...)``).
        triggers: Descriptions of when it should run, shown to the LLM.
    """

    def mark(fn: F) -> F:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"playbook {fn.__qualname__} must be an 'async def'")
        if begin and not llm:
            raise TypeError(
                f"playbook {fn.__qualname__}: begin=True needs llm=True (the program starts "
                "with a playbook the LLM writes; a Python playbook runs when it is called)"
            )
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())[1:]
        shown = ", ".join(str(p) for p in params)
        spec = PlaybookSpec(
            name=fn.__name__,
            llm=llm,
            begin=begin,
            public=public,
            steps=inspect.cleandoc(fn.__doc__ or ""),
            signature=f"{fn.__name__}({shown})",
            triggers=tuple(triggers),
            func=fn,
        )

        @functools.wraps(fn)
        async def call(self: Agent, *args: Any, **kwargs: Any) -> Any:
            return await self._task.call_playbook(spec, args, kwargs)

        call.__durably_playbook__ = spec  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    if func is not None:
        return mark(func)
    return mark


class State:
    """An agent's variables (``self.state.x``); ``$x`` in Playbooks' markdown."""

    __slots__ = ("_vars",)

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_vars", dict(values or {}))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._vars[name]
        except KeyError:
            raise AttributeError(f"agent state has no variable {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._vars[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self._vars[name]
        except KeyError:
            raise AttributeError(f"agent state has no variable {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._vars

    def __iter__(self) -> Iterator[str]:
        return iter(self._vars)

    def __repr__(self) -> str:
        return f"State({self._vars!r})"

    def to_dict(self) -> dict[str, Any]:
        """The variables as a dict (the live dict: mutations show through)."""
        variables: dict[str, Any] = self._vars
        return variables


class Agent:
    """Base class of program agents.

    The class docstring is the agent's description, shown to the LLM. Agent ids are
    assigned by the runtime in creation order (``"1000"``, ``"1001"``, ...).
    """

    playbooks: ClassVar[dict[str, PlaybookSpec]] = {}
    description: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, PlaybookSpec] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                spec = getattr(value, "__durably_playbook__", None)
                if spec is not None:
                    found[name] = spec
        cls.playbooks = found
        cls.description = inspect.cleandoc(cls.__doc__ or "")

    def __init__(self, task: AgentTask) -> None:
        self._task = task
        self.state = State()

    @property
    def id(self) -> str:
        """This agent's id."""
        return self._task.agent_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id})"

    @property
    def idempotency_key(self) -> str | None:
        """Inside a Python playbook (a tool): a key unique to this call of it, the same
        when a crash makes the runtime run the call again. Pass it to external services
        that deduplicate requests. None outside a tool."""
        return self._task.idempotency_key

    # ---------------------------------------------------- durable operations

    async def Step(self, step: str) -> None:
        """Record where the playbook is (``"Main:03:YLD"``); the call stack shows ``Main:03``."""
        await self._task.op_step(str(step))

    async def Say(self, target: Any, message: Any) -> None:
        """Say ``message`` to ``"user"``, or send it to an agent (``"agent 1001"``, an id
        or an agent handle)."""
        await self._task.op_say(target, str(message))

    async def Yield(self, target: Any = "user") -> Any:
        """Wait: for the user's next input (``"user"``), for a message from an agent
        (``"agent 1001"``), for the next LLM call (``"call"``) or end the program
        (``"exit"``)."""
        return await self._task.op_yield(target)

    async def Return(self, value: Any = None) -> None:
        """End the current playbook with ``value``."""
        await self._task.op_return(value)

    async def LogTrigger(self, name: str) -> None:
        """Record that a trigger matched."""
        await self._task.op_trigger(str(name))

    @classmethod
    async def get_or_create(cls, requester: Agent) -> AgentHandle:
        """Get the agent of this class, starting one if none is running."""
        return await requester._task.op_get_or_create(cls)


class AgentHandle:
    """Another agent as seen from LLM code: its ``id`` and its public playbooks."""

    __slots__ = ("_caller", "agent_class", "id")

    def __init__(self, agent_id: str, agent_class: str, caller: AgentTask | None = None) -> None:
        self.id = agent_id
        self.agent_class = agent_class
        self._caller = caller

    def __repr__(self) -> str:
        return f"{self.agent_class}({self.id})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AgentHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("agent", self.id))

    def __getattr__(self, name: str) -> Any:
        caller = self._caller if self._caller is not None else running_agent.get()
        if name.startswith("_") or caller is None:
            raise AttributeError(name)

        async def call_public(*args: Any, **kwargs: Any) -> Any:
            return await caller.op_call_remote(self, name, args, kwargs)

        return call_public
