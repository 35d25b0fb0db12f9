"""A program file, loaded: its digest checked before anything of it runs, its agents found.

:class:`Program` is what ``durably run`` starts and ``durably resume`` re-imports (the
recorded fingerprint must match unless ``--allow-changed-program``). Re-exported by
:mod:`durably.runner`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from durably.agent import Agent
from durably.errors import ConfigError, ProgramChangedError

__all__ = ["Program"]


@dataclass(frozen=True)
class Program:
    """A program file and the agent classes it defines."""

    path: Path
    digest: str
    module: ModuleType
    agent_classes: tuple[type[Agent], ...]
    header: Mapping[str, Any] = field(default_factory=dict)
    """Entries a program loader adds to the execution header (see ``durably._loaders``)."""

    @property
    def names(self) -> dict[str, Any]:
        """The names LLM code sees besides ``self``: the program's agent classes."""
        return {cls.__name__: cls for cls in self.agent_classes}

    @property
    def begin_classes(self) -> tuple[type[Agent], ...]:
        """The agent classes with a playbook that runs at the beginning, in the program's
        order: an execution starts one agent of each, numbered from the first agent id
        in this order (see :meth:`durably._execution.Execution.begin_agents`)."""
        return tuple(
            cls for cls in self.agent_classes if any(spec.begin for spec in cls.playbooks.values())
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        expected_digest: str | None = None,
        execution_id: str | None = None,
        header: Mapping[str, Any] | None = None,
        llm: Any = None,
        llm_options: Mapping[str, Any] | None = None,
    ) -> Program:
        """Import a program file (under a private module name) and find its agents.

        The file is read once; its digest is computed from those bytes and, with
        ``expected_digest``, checked *before* anything of it runs, and the very bytes that
        were checked are compiled and executed (no second read).

        Args:
            path: The program file.
            expected_digest: The fingerprint the file must have (``sha256:<hex>``, as
                recorded when an execution started). A different file is never imported.
            execution_id: The execution it is loaded for (named in the error).
            header, llm, llm_options: For a program loader (a file that is not Python,
                e.g. ``.pb``: see :mod:`durably._loaders`); ignored for a Python file.

        Raises:
            ProgramChangedError: The file's digest is not ``expected_digest``.
            ConfigError: The file cannot be read, does not compile (the message names the
                line), or defines no agent that begins.
        """
        file = Path(path).resolve()
        from durably._loaders import program_loader_for

        loader = program_loader_for(file)
        if loader is not None:
            loaded: Program = loader(
                file,
                expected_digest=expected_digest,
                execution_id=execution_id,
                header=header,
                llm=llm,
                llm_options=llm_options,
            )
            return loaded
        try:
            source = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the program: {exc.strerror}", source=str(file)) from exc
        digest = "sha256:" + hashlib.sha256(source).hexdigest()
        if expected_digest is not None and digest != expected_digest:
            whose = f"execution {execution_id!r}" if execution_id else "the execution"
            raise ProgramChangedError(
                f"the program {file} changed since {whose} started; resuming it could "
                "replay different code. Restore the original file or pass "
                "--allow-changed-program"
            )
        name = f"durably_program_{digest[7:19]}"
        try:
            code = compile(source, str(file), "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            where = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) and exc.lineno else ""
            reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
            text = (exc.text or "").strip() if isinstance(exc, SyntaxError) else ""
            shown = f": {text[:120]}" if text else ""
            raise ConfigError(
                f"the program does not compile{where}: {reason}{shown}",
                source=str(file),
                fix="Fix the program file",
            ) from None
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise ConfigError("not a Python file", source=str(file))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            exec(code, module.__dict__)
        except Exception as exc:
            del sys.modules[name]
            raise _load_error(file, exc) from exc
        except BaseException:
            del sys.modules[name]
            raise
        classes = tuple(
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, Agent)
            and value is not Agent
            and value.__module__ == name
        )
        if not classes:
            raise ConfigError("defines no Agent subclass", source=str(file))
        if not any(spec.begin for c in classes for spec in c.playbooks.values()):
            raise ConfigError(
                "no playbook runs at the beginning",
                source=str(file),
                fix="Mark one with @playbook(llm=True, begin=True)",
            )
        return cls(file, digest, module, classes)


def _load_error(file: Path, exc: Exception) -> ConfigError:
    """What importing a program raised, as one line: the program's line that raised (the
    innermost one in the file), the exception and the offending source line."""
    import traceback

    where = ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(file)]
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:  # an imported module's
        where = f" ({exc.filename}, line {exc.lineno})"
    elif frames:
        line = (frames[-1].line or "").strip()
        where = f" (line {frames[-1].lineno}{f': {line[:120]}' if line else ''})"
    reason = "".join(traceback.format_exception_only(exc)).strip().splitlines()[-1]
    return ConfigError(
        f"the program raised while loading{where}: {reason}",
        source=str(file),
        fix="Fix the program file or install what it imports",
    )
