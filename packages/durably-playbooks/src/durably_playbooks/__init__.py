"""Run Playbooks programs (``.pb``, ``.pbasm``) durably.

Installing this distribution registers a program loader for ``.pb`` and ``.pbasm`` files
(entry-point group ``durably.program_loaders``), so ``durably run hello.pb --llm ...`` and
``durably resume`` work on Playbooks programs. See ``docs/guides/playbooks.md``.

The program is parsed (and a ``.pb`` compiled) with Playbooks' own parser and compiler
prompt, and its playbooks are run by durably's runtime with Playbooks' interpreter
contract as the system prompt. ``playbooks`` is imported only when a program is loaded for
a new run: a resume rebuilds the program from the document recorded in the execution.
"""

from __future__ import annotations

from durably_playbooks._program import load_program
from durably_playbooks.errors import UnsupportedPlaybooksFeature

__all__ = ["UnsupportedPlaybooksFeature", "__version__", "load_program"]

__version__ = "0.1.0"
