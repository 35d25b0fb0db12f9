"""The program loader for ``.pb`` and ``.pbasm`` files (entry point ``durably.program_loaders``).

New run: the file is read with Playbooks' loader; a ``.pb`` is compiled (one LLM call per
agent, through durably's LLM client: a scripted client answers it from the key
``"playbooks-compiler.<Agent>"``), the PBAsm parsed with Playbooks' parser, checked
(:func:`durably_playbooks._document.build_document`) and turned into agent classes. The
program document goes in the execution header (``Program.header["playbooks"]``).

Resume: the agent classes are rebuilt from the recorded document -- no compile, no
``playbooks`` import, the interpreter contract the execution started with -- after the
file's digest is checked against the recorded one.

The compile calls are listed in the header entry ``"load_llm_calls"`` (the core's
:data:`durably._loaders.LOAD_LLM_CALLS`), which ``durably show`` prints.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from durably import Agent
from durably._loaders import LOAD_LLM_CALLS
from durably.agent import PlaybookSpec
from durably.errors import ConfigError, ProgramChangedError
from durably.llm import Finish
from durably.runner import Program
from durably_playbooks._agent import PlaybooksAgent, python_caller
from durably_playbooks._document import FORMAT, build_document
from durably_playbooks.errors import UnsupportedPlaybooksFeature

__all__ = ["COMPILER_AGENT", "build_program", "load_program"]

#: The agent name compile calls are made for (``"playbooks-compiler.<Agent>"`` in a script).
COMPILER_AGENT = "playbooks-compiler"
HEADER_KEY = "playbooks"


def load_program(
    path: Path,
    *,
    expected_digest: str | None = None,
    execution_id: str | None = None,
    header: Mapping[str, Any] | None = None,
    llm: Any = None,
    llm_options: Mapping[str, Any] | None = None,
) -> Program:
    """Load a ``.pb``/``.pbasm`` program (see :mod:`durably._loaders` for the contract)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the program: {exc.strerror}", source=str(path)) from exc
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    if expected_digest is not None and digest != expected_digest:
        whose = f"execution {execution_id!r}" if execution_id else "the execution"
        raise ProgramChangedError(
            f"the program {path} changed since {whose} started; resuming it could "
            "replay different code. Restore the original file or pass --allow-changed-program"
        )
    recorded = (header or {}).get(HEADER_KEY)
    if recorded is not None:
        if recorded.get("format") != FORMAT:
            raise ConfigError(
                f"the execution records a Playbooks program document of format "
                f"{recorded.get('format')!r}; this durably-playbooks reads format {FORMAT}",
                source=str(path),
            )
        return build_program(path, digest, recorded)
    text = raw.decode("utf-8", errors="replace")
    if any(line.lstrip().startswith("!import") for line in text.splitlines()):
        raise UnsupportedPlaybooksFeature(
            "!import is not supported yet (the digest checked on resume covers this file only)",
            feature="import",
            source=str(path),
            fix="Inline the imported file",
        )
    document, calls = _document(path, llm, llm_options)
    return build_program(path, digest, document, compile_calls=calls)


def _document(
    path: Path, llm: Any, llm_options: Mapping[str, Any] | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The program document of a new run, and the compile calls made for it (none for a
    ``.pbasm``)."""
    from durably_playbooks import _pb

    version = _pb.check_version()
    text, compiled = _pb.read_program(path)
    _check_frontmatter(text, path)
    calls: list[dict[str, Any]] = []
    if not compiled:
        if llm is None:
            raise ConfigError(
                "a .pb program is compiled by the LLM, and no LLM was given",
                source=str(path),
                fix="Pass --llm, or run the compiled .pbasm",
            )
        calls = _compile(text, llm, llm_options)
        text = "\n\n".join(call["response"] for call in calls)
    try:
        agents = _pb.parse_compiled(text)
    except UnsupportedPlaybooksFeature:
        raise
    except Exception as exc:
        raise ConfigError(
            f"Playbooks cannot parse the program: {type(exc).__name__}: {exc}",
            source=str(path),
            fix="Fix the program (or the compiled PBAsm)",
        ) from exc
    document = build_document(
        agents, interpreter=_pb.interpreter_prompt(), version=version, source=str(path)
    )
    return document, calls


def _check_frontmatter(text: str, path: Path) -> None:
    if text.lstrip().startswith("---"):
        raise UnsupportedPlaybooksFeature(
            "frontmatter is not supported yet (model settings come from durably's --llm)",
            feature="frontmatter",
            source=str(path),
            fix="Remove the frontmatter block",
        )


def _compile(text: str, llm: Any, llm_options: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Compile each agent of a ``.pb`` with Playbooks' compiler prompt, one call per agent in
    program order, through durably's LLM client."""
    from durably_playbooks import _pb

    template = _pb.compiler_prompt()
    delimiter = _pb.system_prompt_delimiter()
    requests = []
    for header, markdown in _pb.split_agents(text):
        name = header.split(":", 1)[0].strip()
        prompt = template.replace("{{PLAYBOOKS}}", markdown)
        if delimiter in prompt:
            system, user = prompt.split(delimiter, 1)
            messages = [
                {"role": "system", "content": system.strip()},
                {"role": "user", "content": user.strip()},
            ]
        else:
            messages = [{"role": "system", "content": ""}, {"role": "user", "content": prompt}]
        requests.append((name, messages))

    async def run_all() -> list[dict[str, Any]]:
        client = llm
        if isinstance(llm, str):
            from durably.llm import LLMLimits, open_llm

            _, options = LLMLimits.split(dict(llm_options or {}))
            client = open_llm(llm, options)
        try:
            out = []
            for name, messages in requests:
                chunks: list[str] = []
                usage: dict[str, Any] | None = None
                async for item in client.stream(
                    messages, agent=COMPILER_AGENT, playbook=name, call=0
                ):
                    if isinstance(item, Finish):
                        usage = {
                            "finish": item.reason,
                            "model": item.model,
                            "prompt_tokens": item.prompt_tokens,
                            "completion_tokens": item.completion_tokens,
                        }
                    else:
                        chunks.append(item)
                prompt_digest = hashlib.sha256(repr(messages).encode()).hexdigest()
                out.append(
                    {
                        "agent": COMPILER_AGENT,
                        "playbook": name,
                        "prompt_sha256": prompt_digest,
                        "response": "".join(chunks),
                        "usage": usage,
                    }
                )
            return out
        finally:
            close = getattr(client, "aclose", None) if isinstance(llm, str) else None
            if close is not None:
                await close()

    # Program.load is synchronous and may be called inside a running event loop (the
    # command line's): the compile calls run on their own loop in a worker thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run_all()).result()


def _llm_method(spec_box: list[PlaybookSpec]) -> Any:
    async def call(self: Agent, *args: Any, **kwargs: Any) -> Any:
        return await self._task.call_playbook(spec_box[0], args, kwargs)

    return call


def _signature(params: list[dict[str, Any]]) -> inspect.Signature:
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return inspect.Signature(
        [inspect.Parameter("self", positional)]
        + [
            inspect.Parameter(
                p["name"], positional, default=p.get("default", inspect.Parameter.empty)
            )
            for p in params
        ]
    )


def build_program(
    path: Path,
    digest: str,
    document: dict[str, Any],
    *,
    compile_calls: list[dict[str, Any]] | None = None,
) -> Program:
    """The agent classes of a program document, in a private module (as a Python program's
    are), and the :class:`Program` whose header records the document (and, on a new run
    of a ``.pb``, the compile calls: ``durably show`` lists them)."""
    name = f"durably_program_{digest[7:19]}"
    module = ModuleType(name)
    module.__file__ = str(path)
    classes: list[type[Agent]] = []
    for agent in document["agents"]:
        namespace: dict[str, Any] = {
            "__module__": name,
            "__qualname__": agent["name"],
            "__doc__": agent["description"],
            "program_document": document,
            "agent_document": agent,
        }
        for pb in agent["playbooks"]:
            triggers = tuple(t["instruction"] for t in pb["triggers"] if not t["begin"])
            if pb["llm"]:
                box: list[PlaybookSpec] = []
                stub = _llm_method(box)
                stub.__signature__ = _signature(pb["params"])
                func: Any = stub
            else:
                func = python_caller(pb["name"], pb.get("is_async", True))
                box = []
            spec = PlaybookSpec(
                name=pb["name"],
                llm=pb["llm"],
                begin=pb["begin"],
                public=pb["public"],
                steps=pb["markdown"],
                signature=pb["signature"],
                triggers=triggers,
                func=func,
            )
            box.append(spec)
            method = _llm_method([spec])
            method.__name__ = pb["name"]
            method.__durably_playbook__ = spec
            namespace[pb["name"]] = method
        cls = type(agent["name"], (PlaybooksAgent,), namespace)
        setattr(module, agent["name"], cls)
        classes.append(cls)
    sys.modules[name] = module
    return Program(
        path=path,
        digest=digest,
        module=module,
        agent_classes=tuple(classes),
        header={HEADER_KEY: document, **({LOAD_LLM_CALLS: compile_calls} if compile_calls else {})},
    )
