"""The complete conformance suite: every clause group in one base class."""

from __future__ import annotations

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

__all__ = ["ProviderSuite"]


# pytest collects the tests of base classes last-base-first: this order runs the
# checkpoint clauses first and the multi-instance (then multi-process) ones last.
class ProviderSuite(
    ProcessSuite,
    InstanceSuite,
    ClaimNextSuite,
    OpenIndexSuite,
    LivenessSuite,
    IntegritySuite,
    BlobSuite,
    ExecutionSuite,
    LeaseSuite,
    CheckpointSuite,
):
    """Every clause of ``docs/spec/conformance.md``. Subclass it in a test module::

        import pytest
        from durably_conformance import Backdoor, ProviderSuite

        class TestMyProvider(ProviderSuite):
            @pytest.fixture
            def make_provider(self, tmp_path):
                return lambda: MyProvider(root=tmp_path / "store")

            @pytest.fixture
            def backdoor(self, tmp_path) -> Backdoor:
                return MyBackdoor(tmp_path / "store")

    ``make_provider`` returns a zero-argument callable; each call builds a new,
    not-yet-used instance on the same, initially empty store (the suite closes the
    instances it makes). ``backdoor`` returns a :class:`~durably_conformance.Backdoor`
    to that store. Override ``store_url`` (a URL ``from_url`` accepts; with
    ``store_options`` it must open the same store) to check construction and
    registration (C28) and -- required with ``Capability.SHARED`` -- to race instances
    in child processes (C22); optionally override the class attributes of
    :class:`~durably_conformance.SuiteBase` (``short_lease_ttl``, ...) to fit the backend.

    Clauses of capabilities the provider class does not declare are skipped with a
    reason. The clause groups are also available separately (``CheckpointSuite``,
    ``LeaseSuite``, ...) for running part of the suite while a provider is written.
    """
