"""``PlaybooksAgent``: a durably agent with the ``self`` API Playbooks' LLM code uses.

Everything durable is the core's (:class:`durably.Agent`: ``Step``, ``Say``, ``Yield``,
``Return``, ``LogTrigger``, ``get_or_create``); this adds Playbooks' aliases and names
(``Yld``, ``klass``), runs Python ``@playbook`` blocks in a namespace per agent (with
``self``/``agent`` and call-throughs, as Playbooks does), and refuses at run time what the
loader could not see in the source (an LLM improvising ``CreateAgent``, ``Loadfile``,
artifacts or meetings): the run fails instead of running it without durability.
"""

from __future__ import annotations

import builtins
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from durably import Agent
from durably.agent import State
from durably_playbooks._document import REFUSED_TEXT
from durably_playbooks.errors import UnsupportedPlaybooksFeature

__all__ = ["PlaybooksAgent", "PlaybooksState"]

_AGENT_API = ("Say", "Yield", "Yld", "Step", "Return", "LogTrigger")


def _playbook_decorator(func: Any = None, /, **_: Any) -> Any:
    """``@playbook`` / ``@playbook(...)`` inside a Python block: the loader already read the
    options from the source (``document.python_playbooks``); here it only marks."""
    if func is None:
        return lambda f: f
    return func


class PlaybooksState(State):
    """``self.state`` as Playbooks' LLM code uses it (a ``Box``): attribute access and,
    like a dict, ``self.state["x"]``, ``get``, ``setdefault``, ``keys``/``items``/``values``
    and ``len``. The variables are the core's (the same dict, journaled the same way);
    nested dicts are plain dicts (no attribute access)."""

    __slots__ = ()

    def __getitem__(self, name: str) -> Any:
        return self.to_dict()[name]

    def __setitem__(self, name: str, value: Any) -> None:
        setattr(self, name, value)

    def __delitem__(self, name: str) -> None:
        del self.to_dict()[name]

    def __len__(self) -> int:
        return len(self.to_dict())

    def get(self, name: str, default: Any = None) -> Any:
        return self.to_dict().get(name, default)

    def setdefault(self, name: str, default: Any = None) -> Any:
        return self.to_dict().setdefault(name, default)

    def keys(self) -> Any:
        return self.to_dict().keys()

    def items(self) -> Any:
        return self.to_dict().items()

    def values(self) -> Any:
        return self.to_dict().values()


class PlaybooksAgent(Agent):
    """Base of the agent classes generated from a Playbooks program."""

    program_document: ClassVar[dict[str, Any]] = {}
    """The whole program document (see :mod:`durably_playbooks._document`)."""
    agent_document: ClassVar[dict[str, Any]] = {}
    """This agent's entry of it."""

    def __init__(self, task: Any) -> None:
        super().__init__(task)
        self.state = PlaybooksState()

    @staticmethod
    def __durably_prompt__(task: Any, frame: Any) -> list[dict[str, str]]:
        from durably_playbooks._prompt import build_prompt

        return build_prompt(task, frame)

    @property
    def klass(self) -> str:
        """This agent's class name (Playbooks' ``self.klass``)."""
        return type(self).__name__

    async def Yld(self, target: Any = "user") -> Any:
        """Playbooks' alias of :meth:`Yield`."""
        return await self.Yield(target)

    # What the loader refuses in the source, refused again when LLM code improvises it.

    async def CreateAgent(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refused("CreateAgent")

    async def SaveArtifact(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refused("SaveArtifact")

    async def LoadArtifact(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refused("LoadArtifact")

    async def Loadfile(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refused("Loadfile")

    async def LoadFile(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refused("LoadFile")

    async def InviteToMeeting(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refused("InviteToMeeting")

    def _refused(self, name: str) -> UnsupportedPlaybooksFeature:
        """The error for LLM code calling ``name``: the feature and the reason the loader
        gives when the source names it (``_document.REFUSED_TEXT``), and this agent."""
        feature, why = REFUSED_TEXT[name]
        return UnsupportedPlaybooksFeature(
            f"agent {self.klass}: the LLM code called {name}: {why}",
            feature=feature,
            fix=(
                "the LLM improvised a call durably cannot journal (Playbooks' own prompt"
                " offers it): state the step explicitly in the program or try another"
                " model, then fork the execution before this LLM call (`durably fork"
                " --at-llm-call`) or run it again; see docs/guides/playbooks.md, 'Refused,"
                " and why'"
            ),
        )

    # ------------------------------------------------------------ Python blocks

    def python_namespace(self) -> dict[str, Any]:
        """The globals the agent's Python blocks run in: built once per agent object from
        the recorded sources (the same on resume), like Playbooks' per-agent namespace."""
        namespace: dict[str, Any] | None = self.__dict__.get("_pb_namespace")
        if namespace is None:
            namespace = {"__builtins__": builtins, "__name__": f"playbooks_{self.klass}"}
            namespace.update(self._task.execution.program_names)
            namespace["self"] = namespace["agent"] = self
            namespace["playbook"] = _playbook_decorator
            for name in _AGENT_API:
                namespace[name] = getattr(self, name)
            for name in type(self).playbooks:
                namespace[name] = getattr(self, name)
            self.__dict__["_pb_namespace"] = namespace
            for source in self.agent_document.get("python", []):
                exec(compile(source, f"<{self.klass} python block>", "exec"), namespace)
            # The functions the blocks defined, kept aside; their names call through the
            # durable path (a call from another playbook is journaled like any tool call).
            for pb in self.agent_document.get("playbooks", []):
                if not pb["llm"]:
                    namespace[f"__pb_fn_{pb['name']}"] = namespace[pb["name"]]
                    namespace[pb["name"]] = getattr(self, pb["name"])
        return namespace


def python_caller(name: str, is_async: bool) -> Callable[..., Any]:
    """The durably tool function of a Python ``@playbook``: looks the function up in the
    agent's namespace and calls it (a sync one too)."""

    async def run(agent: PlaybooksAgent, *args: Any, **kwargs: Any) -> Any:
        func = agent.python_namespace()[f"__pb_fn_{name}"]
        result = func(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    run.__name__ = name
    return run
