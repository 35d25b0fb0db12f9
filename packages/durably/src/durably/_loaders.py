"""Program loaders for program files that are not Python (``.pb``, ``.pbasm``, ...).

A distribution registers a loader in the ``durably.program_loaders`` entry-point group,
named by the file suffix it reads without the dot::

    [project.entry-points."durably.program_loaders"]
    pb = "durably_playbooks.program:load_program"
    pbasm = "durably_playbooks.program:load_program"

``Program.load`` (:mod:`durably.runner`) calls the loader for a file with that suffix
instead of importing the file::

    loader(path, *, expected_digest, execution_id, header, llm, llm_options) -> Program

* ``path``: the resolved program file.
* ``expected_digest``: on resume, the fingerprint recorded when the execution started; the
  loader must raise :class:`~durably.errors.ProgramChangedError` if the file differs.
* ``header``: on resume, the execution header recorded at the start (None on a new run).
  Whatever the loader put in :attr:`Program.header` is in it, so a loader can rebuild the
  program from what it recorded instead of compiling it again.
* ``llm``, ``llm_options``: the run's LLM spec (or client) and its options, for a loader
  whose compile step asks the LLM (None when unknown, e.g. on resume).

The loader returns a :class:`durably.runner.Program`; its ``header`` entries are stored in
the execution header.

LLM calls a loader makes before the execution exists (a compile step) are not in the
journal. A loader lists them under the header entry :data:`LOAD_LLM_CALLS`
(``"load_llm_calls"``), a list of plain JSON objects::

    {"agent": "playbooks-compiler", "playbook": "Greeter",
     "prompt_sha256": "<hex>", "response": "..."}

``durably show`` prints them, and ``show --json`` gives them as ``"load_llm_calls"``, next
to the journaled ``llm_calls`` (neither numbered nor counted with them: a resume never
asks them again). Reading them is inert, as for every stored value: the entry is data
only, nothing it names is imported or run.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from durably.errors import ConfigError

__all__ = ["LOADER_GROUP", "LOAD_LLM_CALLS", "program_loader_for"]

LOADER_GROUP = "durably.program_loaders"

#: The header entry listing the LLM calls a loader made (see the module's docstring).
LOAD_LLM_CALLS = "load_llm_calls"

#: Suffixes a known distribution loads, and what installs it (for the error message).
KNOWN = {
    "pb": "durably-playbooks (Python >= 3.12): pip install 'durably[playbooks]'",
    "pbasm": "durably-playbooks (Python >= 3.12): pip install 'durably[playbooks]'",
}


def program_loader_for(path: Path) -> Callable[..., Any] | None:
    """The registered loader for ``path``'s suffix; None for a Python file.

    Raises:
        ConfigError: The suffix is one a known distribution loads, and it is not installed.
    """
    suffix = path.suffix.lstrip(".").lower()
    if not suffix or suffix == "py":
        return None
    for ep in importlib_metadata.entry_points(group=LOADER_GROUP, name=suffix):
        loader: Callable[..., Any] = ep.load()
        return loader
    if suffix in KNOWN:
        raise ConfigError(
            f"a .{suffix} program needs {KNOWN[suffix]}",
            source=str(path),
            fix="Install durably-playbooks, or run a Python program",
        )
    return None
