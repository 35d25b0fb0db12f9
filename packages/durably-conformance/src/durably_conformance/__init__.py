"""The conformance suite for durably storage providers.

A provider's tests subclass :class:`ProviderSuite` and supply two fixtures,
``make_provider`` and ``backdoor`` (see ``docs/guides/writing-a-provider.md``). The
pytest plugin (:mod:`durably_conformance.plugin`, loaded automatically once this
distribution is installed) registers the suite's markers and options.

Importing this package is cheap: the suite modules (and durably itself) are imported
on first access to one of the names below, so the pytest plugin costs nothing in test
runs that do not use the suite.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from durably_conformance._backdoor import Backdoor
    from durably_conformance._base import (
        CAPABILITY_MARKERS,
        ProviderFactory,
        ProviderPool,
        SuiteBase,
    )
    from durably_conformance._clauses import CLAUSES, Clause
    from durably_conformance._helpers import (
        ALL_BYTE_VALUES,
        BOUNDARY_EXECUTION_IDS,
        HOSTILE_EXECUTION_IDS,
        ProviderMaker,
        collect_pages,
        drain,
        eventually,
        gather_limited,
        random_bytes,
        sleep_past,
        with_format_version,
    )
    from durably_conformance._servers import find_server, free_port, server_or_skip
    from durably_conformance._suite import ProviderSuite
    from durably_conformance._suite_blobs import BlobSuite
    from durably_conformance._suite_checkpoints import CheckpointSuite
    from durably_conformance._suite_claim import ClaimNextSuite
    from durably_conformance._suite_executions import ExecutionSuite
    from durably_conformance._suite_instances import InstanceSuite
    from durably_conformance._suite_integrity import IntegritySuite
    from durably_conformance._suite_leases import LeaseSuite
    from durably_conformance._suite_liveness import LivenessSuite
    from durably_conformance._suite_open import OpenIndexSuite
    from durably_conformance._suite_processes import ProcessSuite

__all__ = [
    "ALL_BYTE_VALUES",
    "BOUNDARY_EXECUTION_IDS",
    "CAPABILITY_MARKERS",
    "CLAUSES",
    "HOSTILE_EXECUTION_IDS",
    "Backdoor",
    "BlobSuite",
    "CheckpointSuite",
    "ClaimNextSuite",
    "Clause",
    "ExecutionSuite",
    "InstanceSuite",
    "IntegritySuite",
    "LeaseSuite",
    "LivenessSuite",
    "OpenIndexSuite",
    "ProcessSuite",
    "ProviderFactory",
    "ProviderMaker",
    "ProviderPool",
    "ProviderSuite",
    "SuiteBase",
    "collect_pages",
    "drain",
    "eventually",
    "find_server",
    "free_port",
    "gather_limited",
    "random_bytes",
    "server_or_skip",
    "sleep_past",
    "with_format_version",
]

__version__ = "0.1.0"

_HOME = {
    "Backdoor": "_backdoor",
    "CAPABILITY_MARKERS": "_base",
    "ProviderFactory": "_base",
    "ProviderPool": "_base",
    "SuiteBase": "_base",
    "CLAUSES": "_clauses",
    "Clause": "_clauses",
    "ALL_BYTE_VALUES": "_helpers",
    "BOUNDARY_EXECUTION_IDS": "_helpers",
    "HOSTILE_EXECUTION_IDS": "_helpers",
    "ProviderMaker": "_helpers",
    "collect_pages": "_helpers",
    "drain": "_helpers",
    "eventually": "_helpers",
    "gather_limited": "_helpers",
    "random_bytes": "_helpers",
    "sleep_past": "_helpers",
    "with_format_version": "_helpers",
    "find_server": "_servers",
    "free_port": "_servers",
    "server_or_skip": "_servers",
    "ProviderSuite": "_suite",
    "BlobSuite": "_suite_blobs",
    "CheckpointSuite": "_suite_checkpoints",
    "ClaimNextSuite": "_suite_claim",
    "ExecutionSuite": "_suite_executions",
    "InstanceSuite": "_suite_instances",
    "IntegritySuite": "_suite_integrity",
    "LeaseSuite": "_suite_leases",
    "LivenessSuite": "_suite_liveness",
    "OpenIndexSuite": "_suite_open",
    "ProcessSuite": "_suite_processes",
}

# The suites' helper assertions get pytest's assertion rewriting (detailed failure
# messages). This only registers names; nothing is imported here.
pytest.register_assert_rewrite(*sorted({f"{__name__}.{home}" for home in _HOME.values()}))


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Not cached in globals(): the submodule stays the single source of truth (pytester
    # and reloaders may replace it in sys.modules).
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
