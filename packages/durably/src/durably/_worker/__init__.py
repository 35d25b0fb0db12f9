"""The parts of ``durably worker`` (:mod:`durably.worker` is the entry point).

``_scan`` finds resumable executions by listing them; ``_children`` runs one attempt in a
child process and is that child; ``_supervisor`` claims work, starts attempts and counts
their failures. Imports run ``_supervisor`` -> ``_children`` -> ``_scan``.
"""
