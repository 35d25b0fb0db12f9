"""Self-tests of the conformance suite, run through pytester.

* The example memory provider (examples/memory_provider, the reference) passes, with
  exactly the capability-gated tests skipped.
* Deliberately broken variants of it fail -- in the clause that describes their bug.
* The plugin registers its markers and options and is cheap to import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from durably.errors import ConfigError

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "memory_provider"
REFERENCE_TESTS = EXAMPLE / "tests" / "test_conformance.py"

#: Tests the reference must skip (it declares no capability and is not installed).
REFERENCE_SKIPS = {
    "test_c09_a_fenced_write_is_not_durable": "Capability.PERSISTENT",
    "test_c20_64_mib_round_trips": "Capability.LARGE_OBJECTS",
    "test_c21_everything_survives_a_new_instance": "Capability.PERSISTENT",
    "test_c21_deletes_survive_a_new_instance": "Capability.PERSISTENT",
    "test_c22_writes_are_visible_across_live_instances": "Capability.SHARED",
    "test_c22_concurrent_creates_across_instances_exactly_one_wins": "Capability.SHARED",
    "test_c22_leases_hold_across_instances": "Capability.SHARED",
    "test_c22_an_expired_lease_is_taken_over_by_another_instance": "Capability.SHARED",
    "test_c28_the_entry_point_builds_this_provider": "no installed distribution",
    "test_c29_take_overs_across_instances_exactly_one_wins": "Capability.SHARED",
    "test_c30_an_owner_lock_has_one_holder": "Capability.OWNER_LOCK",
    "test_c30_owner_locks_are_per_execution": "Capability.OWNER_LOCK",
}


@pytest.fixture(autouse=True)
def _configured(pytester: pytest.Pytester) -> None:
    """Inner runs are configured as the guide tells third parties to configure theirs."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


@pytest.fixture
def suite_dir(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester directory holding the reference test module (as ``test_reference.py``)."""
    if not REFERENCE_TESTS.is_file():
        pytest.skip(f"the example provider is not in this checkout ({EXAMPLE})")
    pytester.syspathinsert(EXAMPLE / "src")
    pytester.makepyfile(test_reference=REFERENCE_TESTS.read_text())
    return pytester


def _function_name(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[-1].split("[", 1)[0]


def _clause(name: str) -> int:
    assert name.startswith("test_c"), name
    return int(name[len("test_c"):].split("_", 1)[0])


def _outcomes(
    reprec: pytest.HookRecorder,
) -> tuple[list[pytest.TestReport], list[pytest.TestReport], list[pytest.TestReport]]:
    passed, skipped, failed = reprec.listoutcomes()
    return (
        list(passed),
        list(skipped),  # type: ignore[arg-type]
        list(failed),  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------- reference


def test_reference_provider_passes_with_the_expected_skips(suite_dir: pytest.Pytester) -> None:
    reprec = suite_dir.inline_run("test_reference.py")
    passed, skipped, failed = _outcomes(reprec)
    assert not failed, [report.nodeid for report in failed]
    skipped_names = {_function_name(report.nodeid): report for report in skipped}
    assert set(skipped_names) == set(REFERENCE_SKIPS)
    for name, report in skipped_names.items():
        assert isinstance(report.longrepr, tuple)
        assert REFERENCE_SKIPS[name] in report.longrepr[2], (name, report.longrepr)
    assert len(passed) > 100
    # Every clause has at least one test that ran and passed on the reference.
    clauses = {_clause(_function_name(report.nodeid)) for report in passed}
    assert clauses == set(range(1, 31)) - {21, 22, 30}


def test_large_objects_run_when_declared_and_skip_on_request(
    suite_dir: pytest.Pytester,
) -> None:
    suite_dir.makepyfile(test_large=_variant_module("""
        class Provider(MemoryProvider):
            capabilities = frozenset({Capability.LARGE_OBJECTS})
    """))
    reprec = suite_dir.inline_run("test_large.py", "-k", "c20_64")
    reprec.assertoutcome(passed=1)
    reprec = suite_dir.inline_run("test_large.py", "-k", "c20_64", "--durably-skip-large")
    reprec.assertoutcome(skipped=1)


def test_shared_and_persistent_clauses_run_when_declared(suite_dir: pytest.Pytester) -> None:
    # Instances on one MemoryStore do share and keep data, so this variant may
    # declare both capabilities (within one process) and must pass those clauses.
    suite_dir.makepyfile(test_capable=_variant_module("""
        class Provider(MemoryProvider):
            capabilities = MemoryProvider.capabilities | {Capability.PERSISTENT,
                                                          Capability.SHARED}
    """))
    reprec = suite_dir.inline_run(
        "test_capable.py", "-m", "durably_persistent or durably_shared",
        "--durably-lease-ttl", "0.2",
    )
    passed, skipped, failed = _outcomes(reprec)
    assert not failed
    assert not skipped
    assert {_function_name(r.nodeid) for r in passed} == {
        name for name, reason in REFERENCE_SKIPS.items()
        if "PERSISTENT" in reason or "SHARED" in reason
    }


# ------------------------------------------------------------------ broken variants

BROKEN: dict[str, tuple[str, set[str], set[int]]] = {
    # name: (variant source, tests that must fail, clauses allowed to fail)
    "create-overwrites": (
        """
        class Provider(MemoryProvider):
            async def _save(self, execution_id, seq, stored, metadata, mode, lease):
                if mode == "create":
                    mode = "overwrite"  # BUG: two creates of one seq both succeed
                return await super()._save(execution_id, seq, stored, metadata, mode, lease)
        """,
        {"test_c05_create_rejects_an_existing_seq",
         "test_c08_concurrent_creates_exactly_one_wins"},
        {5, 8},
    ),
    "ignores-fencing": (
        """
        class Provider(MemoryProvider):
            async def _save(self, execution_id, seq, stored, metadata, mode, lease):
                # BUG: writes are not fenced
                return await super()._save(execution_id, seq, stored, metadata, mode, None)

            async def _delete(self, execution_id, seq, lease):
                return await super()._delete(execution_id, seq, None)

            async def _delete_many(self, execution_id, seqs, lease):
                return await super()._delete_many(execution_id, seqs, None)
        """,
        {"test_c09_a_superseded_lease_writes_nothing",
         "test_c09_a_lease_never_granted_is_fenced",
         "test_c09_takeover_fences_the_previous_owner"},
        {9, 15, 18, 29},
    ),
    "take-over-ignores-the-holder": (
        """
        class Provider(MemoryProvider):
            async def _take_over(self, lease, owner, ttl):
                # BUG: takes over whatever lease is current, not only the dead one
                current = await self._get_lease(lease.execution_id)
                return await super()._take_over(current or lease, owner, ttl)
        """,
        {"test_c29_a_replaced_lease_cannot_be_taken_over_again",
         "test_c29_concurrent_take_overs_exactly_one_wins"},
        {29},
    ),
    "re-wraps-payloads": (
        """
        from durably._envelope import unwrap

        class Provider(MemoryProvider):
            # BUG: keeps only the payload and re-wraps it on load, so the checksum is
            # recomputed over whatever is stored and corruption goes unnoticed.
            async def _save(self, execution_id, seq, stored, metadata, mode, lease):
                info = await super()._save(execution_id, seq, unwrap(stored), metadata, mode,
                                           lease)
                return info

            async def _load(self, execution_id, seq):
                found = await super()._load(execution_id, seq)
                return None if found is None else (found[0], self.envelope.wrap(found[1]))

            async def _load_latest(self, execution_id):
                found = await super()._load_latest(execution_id)
                return None if found is None else (found[0], self.envelope.wrap(found[1]))
        """,
        {"test_c14_the_backdoor_sees_the_stored_envelope",
         "test_c14_a_flipped_byte_is_detected",
         "test_c14_truncation_is_detected",
         "test_c14_rewritten_bad_bytes_are_detected",
         "test_c14_an_unknown_format_version_is_refused"},
        {2, 14, 20},
    ),
    "returns-wrong-checkpoint": (
        """
        class Provider(MemoryProvider):
            async def _load(self, execution_id, seq):
                # BUG: off by one -- returns the next checkpoint when there is one
                found = await super()._load(execution_id, seq + 1)
                return found if found is not None else await super()._load(execution_id, seq)
        """,
        {"test_c01_load_returns_what_was_saved"},
        {1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 14, 18, 19, 20, 21, 22, 24, 27},
    ),
    "lexical-seq-order": (
        """
        class Provider(MemoryProvider):
            async def _list(self, execution_id, cursor, limit, after):
                page = await super()._list(execution_id, None, 10**9, after)
                items = sorted(page.items, key=lambda info: str(info.seq))  # BUG
                return Page(tuple(items), None)
        """,
        {"test_c04_listing_is_in_ascending_seq_order",
         "test_c04_paging_returns_everything_once"},
        {3, 4, 11, 27},
    ),
    "same-owner-keeps-epoch": (
        """
        class Provider(MemoryProvider):
            async def _claim(self, execution_id, owner, ttl):
                current = await self._get_lease(execution_id)
                if current is not None and current.owner == owner and not current.expired():
                    return current  # BUG: a restarted owner does not fence its old self
                return await super()._claim(execution_id, owner, ttl)
        """,
        {"test_c15_the_same_owner_reclaims_with_a_higher_epoch",
         "test_c09_a_superseded_lease_writes_nothing"},
        {9, 15, 16, 18, 23, 29},
    ),
    "blob-put-rewrites": (
        """
        class Provider(MemoryProvider):
            async def _put_blob(self, execution_id, digest, stored):
                await self._delete_blob(execution_id, digest)  # BUG: rewrites every time
                return await super()._put_blob(execution_id, digest, stored)
        """,
        {"test_c17_put_is_idempotent"},
        {17},
    ),
    "version-kept-on-overwrite": (
        """
        class Provider(MemoryProvider):
            async def _save(self, execution_id, seq, stored, metadata, mode, lease):
                old = await self._load(execution_id, seq)
                info = await super()._save(execution_id, seq, stored, metadata, mode, lease)
                if old is None:
                    return info
                # BUG: the version does not change when the object is replaced
                kept = dataclasses.replace(info, version=old[0].version)
                record = self.store.checkpoints[execution_id][seq]
                self.store.checkpoints[execution_id][seq] = dataclasses.replace(record, info=kept)
                return kept
        """,
        {"test_c06_overwrite_replaces_data_metadata_and_version",
         "test_c06_every_write_changes_the_version",
         "test_c07_stale_version_is_rejected"},
        {6, 7, 8},
    ),
    "lease-only-executions-unlisted": (
        """
        class Provider(MemoryProvider):
            async def _list_executions(self, cursor, limit):
                page = await super()._list_executions(cursor, limit)
                # BUG: an execution that only has a lease is not listed
                items = tuple(item for item in page.items
                              if item.execution_id in self.store.checkpoints
                              or item.execution_id in self.store.blobs)
                return Page(items, page.next_cursor)
        """,
        {"test_c13_a_checkpoint_a_blob_or_a_lease_makes_an_execution"},
        {13},
    ),
    "delete-execution-keeps-lease": (
        """
        class Provider(MemoryProvider):
            async def _delete_execution(self, execution_id):
                lease = self.store.leases.get(execution_id)
                found = await super()._delete_execution(execution_id)
                if lease is not None:
                    self.store.leases[execution_id] = lease  # BUG: the lease survives
                return found
        """,
        {"test_c24_delete_execution_removes_everything",
         "test_c24_delete_execution_leaves_no_location_behind",
         "test_c18_executions_live_in_separate_locations"},
        {13, 18, 24},
    ),
    "overrides-public-method": (
        """
        class Provider(MemoryProvider):
            async def save_checkpoint(self, execution_id, seq, data, *, metadata=None,
                                      mode="create", lease=None):
                # BUG: bypasses the core's validation
                return await self._save(execution_id, seq, self.envelope.wrap(bytes(data)),
                                        dict(metadata or {}), mode, lease)
        """,
        {"test_c26_public_methods_are_not_overridden",
         "test_c12_hostile_ids_are_rejected_everywhere"},
        {9, 12, 19, 26},
    ),
    "backdoor-does-nothing": (
        """
        class Provider(MemoryProvider):
            pass

        class Backdoor(MemoryBackdoor):
            # BUG (in the test harness): the damage never reaches the store
            async def corrupt_checkpoint(self, execution_id, seq):
                pass

            async def truncate_checkpoint(self, execution_id, seq):
                pass

            async def corrupt_blob(self, execution_id, digest):
                pass
        """,
        {"test_c14_a_flipped_byte_is_detected",
         "test_c14_truncation_is_detected",
         "test_c17_a_corrupt_blob_is_detected"},
        {14, 17},
    ),
}


def _variant_module(source: str) -> str:
    """A test module running the reference suite against ``Provider`` (and ``Backdoor``)."""
    header = textwrap.dedent("""
        import dataclasses

        import pytest
        from durably.storage import Capability, Page
        from durably_memory import MemoryProvider, MemoryStore
        from test_reference import MemoryBackdoor
        from test_reference import TestMemoryProvider as Reference

        Backdoor = MemoryBackdoor
    """)
    footer = textwrap.dedent("""

        class TestVariant(Reference):
            @pytest.fixture
            def make_provider(self, store):
                return lambda: Provider(store)

            @pytest.fixture
            def backdoor(self, store):
                return Backdoor(store)
    """)
    return header + textwrap.dedent(source) + footer


@pytest.mark.parametrize("variant", sorted(BROKEN))
def test_a_broken_provider_fails_its_clause(suite_dir: pytest.Pytester, variant: str) -> None:
    source, must_fail, allowed_clauses = BROKEN[variant]
    suite_dir.makepyfile(test_variant=_variant_module(source))
    reprec = suite_dir.inline_run("test_variant.py", "--durably-lease-ttl", "0.1")
    _passed, _skipped, failed = _outcomes(reprec)
    failed_names = {_function_name(report.nodeid) for report in failed}
    assert must_fail <= failed_names, f"not caught: {sorted(must_fail - failed_names)}"
    stray = {name for name in failed_names if _clause(name) not in allowed_clauses}
    assert not stray, f"{variant} made unrelated clauses fail: {sorted(stray)}"


def test_the_example_registers_the_memory_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    pyproject = EXAMPLE / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip(f"the example provider is not in this checkout ({EXAMPLE})")
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    value = tomllib.loads(pyproject.read_text())["project"]["entry-points"][
        "durably.providers"]["memory"]
    factory = EntryPoint(name="memory", value=value, group="durably.providers").load()
    provider = factory("memory://scratch", {})
    assert type(provider).__name__ == "MemoryProvider"
    assert provider.describe() == "memory://scratch"
    with pytest.raises(ConfigError):
        factory("memory://scratch", {"no_such_option": 1})
    with pytest.raises(ConfigError):
        factory("file://elsewhere", {})


def test_a_suite_without_fixtures_explains_what_to_override(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_incomplete="""
        from durably_conformance import ProviderSuite

        class TestIncomplete(ProviderSuite):
            pass
    """)
    result = pytester.runpytest("-k", "c01_load_returns or c14_a_flipped")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*must override the make_provider fixture*"])


# -------------------------------------------------------------------------- plugin


def test_the_plugin_registers_its_markers(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "@pytest.mark.durably_clause(n): the conformance clause*",
        "@pytest.mark.durably_persistent: needs Capability.PERSISTENT*",
        "@pytest.mark.durably_shared: needs Capability.SHARED*",
        "@pytest.mark.durably_large_objects: needs Capability.LARGE_OBJECTS*",
    ], consecutive=False)


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
        [sys.executable, "-c", code], check=True, capture_output=True, text=True,
        env=_subprocess_env(),
    ).stdout.strip()
    assert out == "['durably_conformance', 'durably_conformance.plugin']"


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["-p", "durably_conformance.plugin"], {}),
        (["-p", "durably_conformance.plugin", "-p", "asyncio"],
         {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}),
    ],
    ids=["explicit-with-autoload", "explicit-without-autoload"],
)
def test_the_plugin_loads_explicitly(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str],
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

