"""The mutation gallery: deliberately broken providers, each caught by the clause it breaks.

Every mutant is the example memory provider (or, for the cross-process clauses, the
filesystem provider) with one bug. The whole suite runs against it; the test checks
that

* the tests that describe the bug fail,
* no test of an unrelated clause fails, and
* each failure is reported with the text of the clause it cites (the plugin prints it
  from the specification shipped in the distribution), so an author learns *which
  promise* the provider broke.

The gallery starts with the bugs that once got past the suite: atomicity within one
process only (a process-local lock around check-and-write), an offset-based listing
cursor (for checkpoints, executions and blobs) and epochs that restart after
``delete_execution``.
"""

from __future__ import annotations

import textwrap

import pytest
from selftest_kit import clause_of, function_name, outcomes, variant_module

from durably_conformance import CLAUSES

pytest_plugins = ["pytester"]

Mutant = tuple[str, set[str], set[int]]
"""(variant source, tests that must fail, clauses allowed to fail)."""

MUTANTS: dict[str, Mutant] = {
    "create-overwrites": (
        """
        class Provider(MemoryProvider):
            async def _save(self, execution_id, seq, stored, metadata, mode, lease):
                if mode == "create":
                    mode = "overwrite"  # BUG: two creates of one seq both succeed
                return await super()._save(execution_id, seq, stored, metadata, mode, lease)
        """,
        {"test_c05_create_rejects_an_existing_seq", "test_c08_concurrent_creates_exactly_one_wins"},
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
        {
            "test_c09_a_superseded_lease_writes_nothing",
            "test_c09_a_lease_never_granted_is_fenced",
            "test_c09_takeover_fences_the_previous_owner",
        },
        {9, 15, 18, 24, 29, 32},  # C24: leases from before a deletion stay fenced; C32 fences
    ),
    "take-over-ignores-the-holder": (
        """
        class Provider(MemoryProvider):
            async def _take_over(self, lease, owner, ttl):
                # BUG: takes over whatever lease is current, not only the dead one
                current = await self._get_lease(lease.execution_id)
                return await super()._take_over(current or lease, owner, ttl)
        """,
        {
            "test_c29_a_replaced_lease_cannot_be_taken_over_again",
            "test_c29_concurrent_take_overs_exactly_one_wins",
        },
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
        {
            "test_c14_the_backdoor_sees_the_stored_envelope",
            "test_c14_a_flipped_byte_is_detected",
            "test_c14_truncation_is_detected",
            "test_c14_rewritten_bad_bytes_are_detected",
            "test_c14_an_unknown_format_version_is_refused",
        },
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
        {"test_c04_listing_is_in_ascending_seq_order", "test_c04_paging_returns_everything_once"},
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
        {
            "test_c15_the_same_owner_reclaims_with_a_higher_epoch",
            "test_c09_a_superseded_lease_writes_nothing",
        },
        {9, 15, 16, 18, 23, 29},
    ),
    "blob-put-rewrites": (
        """
        class Provider(MemoryProvider):
            async def _put_blob(self, execution_id, digest, stored):
                await self._delete_blob(execution_id, digest)  # BUG: rewrites every time
                return await super()._put_blob(execution_id, digest, stored)
        """,
        {"test_c17_put_is_idempotent", "test_c33_put_blobs_stores_every_blob"},
        {17, 33},
    ),
    "blob-batch-drops-one": (
        """
        class Provider(MemoryProvider):
            async def _put_blobs(self, execution_id, blobs):
                written = await super()._put_blobs(execution_id, dict(list(blobs.items())[1:]))
                # BUG: the first blob of a batch is reported written but never stored
                return {**dict.fromkeys(blobs, True), **written}
        """,
        {
            "test_c33_put_blobs_stores_every_blob",
            "test_c33_a_batch_of_stored_and_new_blobs",
        },
        {33},
    ),
    "blob-batch-rewrites": (
        """
        class Provider(MemoryProvider):
            async def _put_blobs(self, execution_id, blobs):
                for digest in blobs:  # BUG: a batch rewrites the blobs that are stored
                    await self._delete_blob(execution_id, digest)
                return await super()._put_blobs(execution_id, blobs)
        """,
        {"test_c33_put_blobs_stores_every_blob", "test_c33_a_batch_of_stored_and_new_blobs"},
        {33},
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
        {
            "test_c06_overwrite_replaces_data_metadata_and_version",
            "test_c06_every_write_changes_the_version",
            "test_c07_stale_version_is_rejected",
        },
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
        {
            "test_c24_delete_execution_removes_everything",
            "test_c24_delete_execution_leaves_no_location_behind",
            "test_c18_executions_live_in_separate_locations",
        },
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
        {
            "test_c26_public_methods_are_not_overridden",
            "test_c12_hostile_ids_are_rejected_everywhere",
        },
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
        {
            "test_c14_a_flipped_byte_is_detected",
            "test_c14_truncation_is_detected",
            "test_c17_a_corrupt_blob_is_detected",
            "test_c33_a_batch_of_stored_and_new_blobs",
        },
        {14, 17, 33},
    ),
    # The three bugs a provider written from the docs alone got past the suite before
    # the suite checked cursors against deletes and epochs after delete_execution.
    "offset-cursor-checkpoints": (
        """
        class Provider(MemoryProvider):
            async def _list(self, execution_id, cursor, limit, after):
                # BUG: the cursor is a position in the listing, not the last seq listed
                page = await super()._list(execution_id, None, 10**9, after)
                start = int(cursor) if cursor else 0
                more = start + limit < len(page.items)
                return Page(page.items[start:start + limit], str(start + limit) if more else None)
        """,
        {"test_c04_cursor_survives_deletes_and_inserts_before_it"},
        {4},
    ),
    "offset-cursor-executions": (
        """
        class Provider(MemoryProvider):
            async def _list_executions(self, cursor, limit):
                # BUG: the cursor is a position in the listing, not the last id listed
                page = await super()._list_executions(None, 10**9)
                start = int(cursor) if cursor else 0
                more = start + limit < len(page.items)
                return Page(page.items[start:start + limit], str(start + limit) if more else None)
        """,
        {"test_c13_cursor_survives_deletes_and_inserts_before_it"},
        {13},
    ),
    "offset-cursor-blobs": (
        """
        class Provider(MemoryProvider):
            async def _list_blobs(self, execution_id, cursor, limit):
                # BUG: the cursor is a position in the listing, not the last digest listed
                page = await super()._list_blobs(execution_id, None, 10**9)
                start = int(cursor) if cursor else 0
                more = start + limit < len(page.items)
                return Page(page.items[start:start + limit], str(start + limit) if more else None)
        """,
        {"test_c25_cursor_survives_deletes_and_inserts_before_it"},
        {25},
    ),
    "epochs-restart-after-delete": (
        """
        from durably_memory import LeaseRecord

        class Provider(MemoryProvider):
            async def _claim_if(self, execution_id, owner, ttl, dead):
                previous = self.store.leases.get(execution_id)
                lease = await super()._claim_if(execution_id, owner, ttl, dead)
                # BUG: epochs count the claims of the lease record, so they restart at 1
                # once delete_execution dropped it
                epoch = 1 if previous is None else previous.lease.epoch + 1
                lease = dataclasses.replace(lease, epoch=epoch)
                self.store.leases[execution_id] = LeaseRecord(lease)
                return lease
        """,
        {"test_c24_epochs_never_repeat_after_delete_execution"},
        {24},
    ),
    "claim-next-ignores-live-leases": (
        """
        import time

        from durably.storage import Lease
        from durably_memory import LeaseRecord

        class Provider(MemoryProvider):
            async def claim_next(self, owner, *, ttl):
                async with self.store.lock:
                    now = time.time()
                    for execution_id in sorted(self.store.open):
                        record = self.store.leases.get(execution_id)
                        # BUG: a live lease is not checked
                        epoch = self.store.next_epoch()
                        lease = Lease(execution_id, owner, epoch, now + ttl)
                        if record is None or record.lease.owner != owner:
                            self.store.leases[execution_id] = LeaseRecord(lease)
                            return lease
                    return None
        """,
        {
            "test_c32_claims_each_open_execution_nobody_holds_once",
            "test_c32_an_expired_lease_is_claimed",
            "test_c32_concurrent_claims_never_get_the_same_execution",
        },
        {32},
    ),
}


def _check_caught(
    reprec: pytest.HookRecorder,
    must_fail: set[str],
    allowed_clauses: set[int],
    name: str,
) -> None:
    _passed, _skipped, failed = outcomes(reprec)
    reports = {function_name(report.nodeid): report for report in failed}
    missed = sorted(must_fail - set(reports))
    assert not missed, f"{name} was not caught by: {missed}"
    stray = {test for test in reports if clause_of(test) not in allowed_clauses}
    assert not stray, f"{name} made unrelated clauses fail: {sorted(stray)}"
    for test in sorted(must_fail):
        clause = CLAUSES[clause_of(test)]
        sections = dict(reports[test].sections)
        cited = sections.get(f"durably conformance clause {clause.tag}")
        assert cited == clause.explain(), (
            f"{test} failed without citing {clause.tag}; its report sections: {sorted(sections)}"
        )
        assert "MUST" in cited


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_a_broken_provider_fails_its_clause(suite_dir: pytest.Pytester, mutant: str) -> None:
    source, must_fail, allowed_clauses = MUTANTS[mutant]
    suite_dir.makepyfile(test_variant=variant_module(source))
    reprec = suite_dir.inline_run("test_variant.py", "--durably-lease-ttl", "0.1")
    _check_caught(reprec, must_fail, allowed_clauses, mutant)


PROCESS_LOCAL_LOCK = """
    import asyncio
    import weakref

    import pytest
    from durably.errors import AlreadyExistsError
    from durably_conformance import ProviderSuite
    from durably_filesystem import FilesystemBackdoor, FilesystemProvider

    _locks = weakref.WeakKeyDictionary()


    class Provider(FilesystemProvider):
        async def _save(self, execution_id, seq, stored, metadata, mode, lease):
            if mode != "create":
                return await super()._save(execution_id, seq, stored, metadata, mode, lease)
            # BUG: check-then-write under a lock of this process (shared by all its
            # instances): atomic in one process, not between processes
            lock = _locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
            async with lock:
                if await self._load(execution_id, seq) is not None:
                    raise AlreadyExistsError(f"checkpoint {seq} of {execution_id!r} exists")
                await asyncio.sleep(0.02)  # a network round trip between check and write
                return await super()._save(execution_id, seq, stored, metadata, "overwrite",
                                           lease)


    class TestVariant(ProviderSuite):
        @pytest.fixture
        def make_provider(self, tmp_path):
            return lambda: Provider(tmp_path / "store")

        @pytest.fixture
        def backdoor(self, tmp_path):
            return FilesystemBackdoor(tmp_path / "store")

        @pytest.fixture
        def store_url(self, tmp_path):
            return f"file://{tmp_path / 'store'}"
"""


def test_a_process_local_lock_fails_the_cross_process_clause(pytester: pytest.Pytester) -> None:
    """Atomicity "in one or several processes" (C22): a provider whose create is a
    check-then-write under a process-local lock passes every in-process race (C8, and
    C22 across instances of one process) and fails the races between processes."""
    pytest.importorskip("durably_filesystem")
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_variant=textwrap.dedent(PROCESS_LOCAL_LOCK))
    # C28's entry-point test is left out: the mutant is no registered distribution.
    reprec = pytester.inline_run(
        "test_variant.py",
        "--durably-lease-ttl",
        "0.2",
        "--durably-skip-large",
        "-k",
        "not c28_the_entry_point",
    )
    passed, _skipped, _failed = outcomes(reprec)
    passed_names = {function_name(report.nodeid) for report in passed}
    # The in-process races pass: the lock does its job within one process.
    assert {
        "test_c08_concurrent_creates_exactly_one_wins",
        "test_c22_concurrent_creates_across_instances_exactly_one_wins",
    } <= passed_names
    _check_caught(
        reprec,
        {"test_c22_concurrent_creates_across_processes_exactly_one_wins"},
        {22},
        "process-local-lock",
    )
