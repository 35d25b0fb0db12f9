"""The pytest plugin of the conformance suite: its markers and command-line options.

Installed as the ``durably_conformance`` entry point of the ``pytest11`` group, so
pytest loads it in every run of an environment where durably-conformance is
installed. It therefore only registers markers and options: it imports nothing but
pytest, defines no fixtures and changes no collection. The suite itself lives in the
base classes a provider's tests subclass (``durably_conformance.ProviderSuite``).

Options:

``--durably-skip-large``
    Skip the 64 MiB round-trips that run when a provider declares
    ``Capability.LARGE_OBJECTS`` (they are the slowest tests against a remote store).
``--durably-lease-ttl=SECONDS``
    The TTL of the leases the lease-expiry tests let expire (default: the suite
    class's ``short_lease_ttl``, 0.5 s). Raise it for a backend whose clock or
    timestamps are coarse.

Markers (select with ``-m``, e.g. ``-m "not durably_shared"``):

``durably_clause(n)``
    The clause ``[Cn]`` of ``docs/spec/conformance.md`` a test checks (test names
    carry it too: ``-k c07``).
``durably_persistent`` / ``durably_shared`` / ``durably_large_objects`` /
``durably_takeover`` / ``durably_owner_lock`` / ``durably_open_index`` / ``durably_claim_next``
    The test needs that capability; it is skipped when the provider class does not
    declare it.

A failing test that carries ``durably_clause(n)`` gets the text of its clause (from the
specification shipped with the suite) as a report section, printed under the failure.
The child processes of the cross-process clauses are stopped when the session ends.

When plugin autoloading is disabled (``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``), load it with
``-p durably_conformance.plugin``; that also works when autoloading is on.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Generator

import pytest

ENTRY_POINT_NAME = "durably_conformance"
"""The name of this plugin's ``pytest11`` entry point."""

MARKERS = (
    "durably_clause(n): the conformance clause [Cn] (docs/spec/conformance.md; its text is "
    "printed when the test fails) this test checks",
    "durably_persistent: needs Capability.PERSISTENT; skipped unless the provider declares it",
    "durably_shared: needs Capability.SHARED; skipped unless the provider declares it",
    "durably_large_objects: needs Capability.LARGE_OBJECTS (64 MiB objects); skipped unless "
    "the provider declares it, or with --durably-skip-large",
    "durably_takeover: needs Capability.TAKEOVER; skipped unless the provider declares it",
    "durably_owner_lock: needs Capability.OWNER_LOCK; skipped unless the provider declares it",
    "durably_open_index: needs Capability.OPEN_INDEX; skipped unless the provider declares it",
    "durably_claim_next: needs Capability.CLAIM_NEXT; skipped unless the provider declares it",
)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("durably", "durably storage-provider conformance suite")
    group.addoption(
        "--durably-skip-large",
        action="store_true",
        default=False,
        dest="durably_skip_large",
        help="skip the 64 MiB round-trips of providers that declare LARGE_OBJECTS",
    )
    group.addoption(
        "--durably-lease-ttl",
        type=_positive_seconds,
        default=None,
        dest="durably_lease_ttl",
        metavar="SECONDS",
        help="TTL of the leases the lease-expiry tests wait out (default: the suite "
        "class's short_lease_ttl, 0.5)",
    )


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)


def pytest_plugin_registered(plugin: object, manager: pytest.PytestPluginManager) -> None:
    """Let ``-p durably_conformance.plugin`` coexist with the autoloaded entry point.

    ``-p`` registers this module under its module name before pytest autoloads
    entry points; the entry point would then register the same module again under
    ``durably_conformance`` and pytest would abort ("Plugin already registered under a
    different name"). Blocking the entry-point name makes the autoloader skip it.
    """
    if plugin is not sys.modules.get(__name__):
        return
    name = manager.get_name(plugin)
    if name != ENTRY_POINT_NAME and manager.get_plugin(ENTRY_POINT_NAME) is None:
        manager.set_blocked(ENTRY_POINT_NAME)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
    call: pytest.CallInfo[None],
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the text of the clause a failing test checks to its report."""
    report = yield
    if report.failed:
        marker = item.get_closest_marker("durably_clause")
        if marker is not None and marker.args:
            from durably_conformance._clauses import CLAUSES

            clause = CLAUSES.get(int(marker.args[0]))
            if clause is not None:
                report.sections.append(
                    (f"durably conformance clause {clause.tag}", clause.explain())
                )
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the child processes of the cross-process clauses, if any were started."""
    processes = sys.modules.get("durably_conformance._processes")
    if processes is not None:
        processes.shutdown()
