"""The parts of the ``durably`` command (:mod:`durably.cli` is the entry point).

``_common`` holds what every command uses (the configuration, the ``[llm]`` table,
escaping stored text, :class:`~durably._cli._common.UsageError`); one module per group of
commands -- ``_running`` (run, resume, submit), ``_inspecting`` (ls, show),
``_timetravel`` (history, diff, fork), ``_maintenance`` (gc, worker, migrate), ``_setup``
(demo, init; ``new-provider`` is :mod:`durably._scaffold`'s) -- and ``_parser`` builds
the argument parser from the handlers :mod:`durably.cli` gives it. Imports run
``durably.cli`` -> ``_parser`` and the command modules -> ``_common``; the command
modules do not import each other.
"""
