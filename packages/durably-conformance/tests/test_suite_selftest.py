"""Self-tests of the conformance suite, run through pytester.

* The example memory provider (examples/memory_provider, the reference) passes, with
  exactly the capability-gated tests skipped.
* Deliberately broken variants of it fail -- in the clause that describes their bug
  (``test_mutation_gallery.py``).
* The plugin registers its markers and options and is cheap to import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib.metadata import EntryPoint

import pytest
from selftest_kit import EXAMPLE, function_name, outcomes, variant_module
from selftest_kit import clause_of as _clause

from durably.errors import ConfigError

pytest_plugins = ["pytester"]


#: Tests the reference must skip (it declares no capability and is not installed).
REFERENCE_SKIPS = {
    "test_c09_a_fenced_write_is_not_durable": "Capability.PERSISTENT",
    "test_c20_64_mib_round_trips": "Capability.LARGE_OBJECTS",
    "test_c21_everything_survives_a_new_instance": "Capability.PERSISTENT",
    "test_c21_deletes_survive_a_new_instance": "Capability.PERSISTENT",
    "test_c33_a_batch_survives_a_new_instance": "Capability.PERSISTENT",
    "test_c22_writes_are_visible_across_live_instances": "Capability.SHARED",
    "test_c22_concurrent_creates_across_instances_exactly_one_wins": "Capability.SHARED",
    "test_c22_leases_hold_across_instances": "Capability.SHARED",
    "test_c22_an_expired_lease_is_taken_over_by_another_instance": "Capability.SHARED",
    "test_c22_concurrent_creates_across_processes_exactly_one_wins": "Capability.SHARED",
    "test_c22_conditional_writes_across_processes": "Capability.SHARED",
    "test_c22_lease_claims_across_processes_exactly_one_wins": "Capability.SHARED",
    "test_c22_a_claim_in_one_process_fences_another": "Capability.SHARED",
    "test_c28_the_entry_point_builds_this_provider": "no installed distribution",
    "test_c29_take_overs_across_instances_exactly_one_wins": "Capability.SHARED",
    "test_c30_an_owner_lock_has_one_holder": "Capability.OWNER_LOCK",
    "test_c30_owner_locks_are_per_execution": "Capability.OWNER_LOCK",
    "test_c31_the_index_is_shared_between_instances": "Capability.SHARED",
}


@pytest.fixture(autouse=True)
def _configured(pytester: pytest.Pytester) -> None:
    """Inner runs are configured as the guide tells third parties to configure theirs."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


# --------------------------------------------------------------------- reference


def test_reference_provider_passes_with_the_expected_skips(suite_dir: pytest.Pytester) -> None:
    reprec = suite_dir.inline_run("test_reference.py")
    passed, skipped, failed = outcomes(reprec)
    assert not failed, [report.nodeid for report in failed]
    skipped_names = {function_name(report.nodeid): report for report in skipped}
    assert set(skipped_names) == set(REFERENCE_SKIPS)
    for name, report in skipped_names.items():
        assert isinstance(report.longrepr, tuple)
        assert REFERENCE_SKIPS[name] in report.longrepr[2], (name, report.longrepr)
    assert len(passed) > 100
    # Every clause has at least one test that ran and passed on the reference.
    clauses = {_clause(function_name(report.nodeid)) for report in passed}
    assert clauses == set(range(1, 34)) - {21, 22, 30}


def test_large_objects_run_when_declared_and_skip_on_request(
    suite_dir: pytest.Pytester,
) -> None:
    suite_dir.makepyfile(
        test_large=variant_module("""
        class Provider(MemoryProvider):
            capabilities = frozenset({Capability.LARGE_OBJECTS})
    """)
    )
    reprec = suite_dir.inline_run("test_large.py", "-k", "c20_64")
    reprec.assertoutcome(passed=1)
    reprec = suite_dir.inline_run("test_large.py", "-k", "c20_64", "--durably-skip-large")
    reprec.assertoutcome(skipped=1)


def test_shared_and_persistent_clauses_run_when_declared(suite_dir: pytest.Pytester) -> None:
    # Instances on one MemoryStore do share and keep data within one process, so this
    # variant must pass those clauses -- except the cross-process races of C22, whose
    # child processes each get a new, empty store from from_url (the gallery checks
    # that a provider shared only within one process fails them).
    suite_dir.makepyfile(
        test_capable=variant_module("""
        class Provider(MemoryProvider):
            capabilities = MemoryProvider.capabilities | {Capability.PERSISTENT,
                                                          Capability.SHARED}
    """)
    )
    reprec = suite_dir.inline_run(
        "test_capable.py",
        "-m",
        "durably_persistent or durably_shared",
        "-k",
        "not process",
        "--durably-lease-ttl",
        "0.2",
    )
    passed, skipped, failed = outcomes(reprec)
    assert not failed
    assert not skipped
    assert {function_name(r.nodeid) for r in passed} == {
        name
        for name, reason in REFERENCE_SKIPS.items()
        if ("PERSISTENT" in reason or "SHARED" in reason) and "process" not in name
    }


def test_the_example_registers_the_memory_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    pyproject = EXAMPLE / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip(f"the example provider is not in this checkout ({EXAMPLE})")
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    value = tomllib.loads(pyproject.read_text())["project"]["entry-points"]["durably.providers"][
        "memory"
    ]
    factory = EntryPoint(name="memory", value=value, group="durably.providers").load()
    provider = factory("memory://scratch", {})
    assert type(provider).__name__ == "MemoryProvider"
    assert provider.describe() == "memory://scratch"
    with pytest.raises(ConfigError):
        factory("memory://scratch", {"no_such_option": 1})
    with pytest.raises(ConfigError):
        factory("file://elsewhere", {})


def test_a_suite_without_fixtures_explains_what_to_override(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_incomplete="""
        from durably_conformance import ProviderSuite

        class TestIncomplete(ProviderSuite):
            pass
    """
    )
    result = pytester.runpytest("-k", "c01_load_returns or c14_a_flipped")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*must override the make_provider fixture*"])


# -------------------------------------------------------------------------- plugin


def test_the_plugin_registers_its_markers(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.durably_clause(n): the conformance clause*",
            "@pytest.mark.durably_persistent: needs Capability.PERSISTENT*",
            "@pytest.mark.durably_shared: needs Capability.SHARED*",
            "@pytest.mark.durably_large_objects: needs Capability.LARGE_OBJECTS*",
        ],
        consecutive=False,
    )


def test_the_plugin_registers_its_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--durably-skip-large*", "*--durably-lease-ttl=SECONDS*"])
    result = pytester.runpytest("--durably-lease-ttl", "-1")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*must be a positive number of seconds*"])


def _subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [p for p in sys.path if p]  # whatever made durably_conformance importable here
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra or {})
    return env


def test_importing_the_plugin_imports_nothing_else() -> None:
    code = (
        "import sys; import durably_conformance.plugin; "
        "print(sorted(m for m in sys.modules if m.startswith('durably')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env=_subprocess_env(),
    ).stdout.strip()
    assert out == "['durably_conformance', 'durably_conformance.plugin']"


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["-p", "durably_conformance.plugin"], {}),
        (
            ["-p", "durably_conformance.plugin", "-p", "asyncio"],
            {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        ),
    ],
    ids=["explicit-with-autoload", "explicit-without-autoload"],
)
def test_the_plugin_loads_explicitly(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
) -> None:
    for key, value in _subprocess_env(env).items():
        monkeypatch.setenv(key, value)
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess(*args, "--markers")
    assert result.ret == 0, result.stderr.str()
    result.stdout.fnmatch_lines(["@pytest.mark.durably_clause(n)*"])
    result = pytester.runpytest_subprocess(*args, "test_plain.py")
    result.assert_outcomes(passed=1)
