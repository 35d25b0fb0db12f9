"""The fixtures every suite class shares: provider instances, capabilities, options."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, ClassVar, TypeAlias

import pytest
import pytest_asyncio

from durably.storage import Capability, CheckpointProvider
from durably_conformance._backdoor import Backdoor

__all__ = ["CAPABILITY_MARKERS", "ProviderFactory", "ProviderPool", "SuiteBase"]

ProviderFactory: TypeAlias = Callable[[], CheckpointProvider]
"""What a ``make_provider`` fixture returns: each call builds a new, unused provider
instance on the same store."""

CAPABILITY_MARKERS: dict[Capability, str] = {
    Capability.PERSISTENT: "durably_persistent",
    Capability.SHARED: "durably_shared",
    Capability.LARGE_OBJECTS: "durably_large_objects",
    Capability.TAKEOVER: "durably_takeover",
    Capability.OWNER_LOCK: "durably_owner_lock",
    Capability.OPEN_INDEX: "durably_open_index",
    Capability.CLAIM_NEXT: "durably_claim_next",
}
"""The marker that makes a test need a capability."""


class ProviderPool:
    """The provider instances one test made; closes them all at teardown.

    Args:
        factory: The test class's ``make_provider``.
    """

    def __init__(self, factory: ProviderFactory) -> None:
        self._factory = factory
        self._made: list[CheckpointProvider] = []

    def new(self) -> CheckpointProvider:
        """A new provider instance on the store (closed at teardown, or earlier by the test)."""
        provider = self._factory()
        if not isinstance(provider, CheckpointProvider):
            pytest.fail(
                f"make_provider() returned {type(provider).__name__}, not a CheckpointProvider",
                pytrace=False,
            )
        if any(provider is made for made in self._made):
            pytest.fail(
                "make_provider() returned an instance it had returned before; each call "
                "must build a new instance (on the same store)",
                pytrace=False,
            )
        self._made.append(provider)
        return provider

    @property
    def first(self) -> CheckpointProvider:
        """The instance the ``provider`` fixture hands to tests."""
        return self._made[0] if self._made else self.new()

    async def aclose(self) -> None:
        """Close every instance, newest first; re-raise the first failure."""
        errors: list[BaseException] = []
        for provider in reversed(self._made):
            try:
                await provider.close()
            except Exception as exc:
                errors.append(exc)
        self._made.clear()
        if errors:
            raise errors[0]


class SuiteBase:
    """Fixtures and settings of the conformance suites.

    A provider's test class overrides ``make_provider`` and ``backdoor`` (and
    ``store_url``, with ``store_options`` if needed), and may tune the class attributes
    below.
    """

    short_lease_ttl: ClassVar[float] = 0.5
    """TTL in seconds of the leases that lease-expiry tests let expire (each such test
    waits this long). Raise it for a provider whose clock is coarse; the command-line
    option ``--durably-lease-ttl`` overrides it."""

    clock_tolerance: ClassVar[float] = 60.0
    """How far (seconds) a provider's timestamps (``created_at``, ``expires_at``) may be
    from this machine's ``time.time()``. Generous: it catches wrong units, not skew."""

    expiry_grace: ClassVar[float] = 5.0
    """How long after a lease expired by our clock the provider may still treat it as
    live (its clock may lag ours)."""

    write_concurrency: ClassVar[int] = 16
    """How many writes the bulk tests (1,100 checkpoints or executions) keep in flight."""

    # ------------------------------------------------------------------ to override

    @pytest.fixture
    def make_provider(self) -> ProviderFactory:
        """Override: return a zero-argument callable building new instances on one store."""
        pytest.fail(
            f"{type(self).__name__} must override the make_provider fixture: return a "
            "zero-argument callable that builds a new provider instance on the same "
            "(initially empty) store at each call",
            pytrace=False,
        )

    @pytest.fixture
    def backdoor(self) -> Backdoor:
        """Override: return a :class:`Backdoor` to the store ``make_provider`` uses."""
        pytest.fail(
            f"{type(self).__name__} must override the backdoor fixture: return an object "
            "implementing durably_conformance.Backdoor for the store make_provider uses",
            pytrace=False,
        )

    @pytest.fixture
    def store_url(self) -> str | None:
        """Override: a store URL ``from_url`` accepts (C28). With ``Capability.SHARED``
        it is required: child processes open the test's store with
        ``from_url(store_url, store_options)`` (C22)."""
        return None

    @pytest.fixture
    def store_options(self) -> Mapping[str, Any]:
        """Optionally override: the options that, with ``store_url``, open the very store
        ``make_provider`` uses (e.g. ``{"schema": ...}`` for a per-test schema). Default:
        none."""
        return {}

    # ---------------------------------------------------------------- suite fixtures

    @pytest_asyncio.fixture(loop_scope="function")
    async def provider_pool(
        self,
        request: pytest.FixtureRequest,
        make_provider: ProviderFactory,
    ) -> AsyncIterator[ProviderPool]:
        """The instances of one test; skips tests whose capabilities are not declared."""
        pool = ProviderPool(make_provider)
        try:
            provider_class = type(pool.first)
            _skip_unless_capable(request, provider_class)
            yield pool
        finally:
            await pool.aclose()

    @pytest.fixture
    def provider(self, provider_pool: ProviderPool) -> CheckpointProvider:
        """A provider instance on an empty store."""
        return provider_pool.first

    @pytest.fixture
    def checked_backdoor(self, backdoor: Backdoor) -> Backdoor:
        """``backdoor``, checked to implement the protocol."""
        if not isinstance(backdoor, Backdoor):
            missing = [
                name
                for name in (
                    "read_checkpoint",
                    "write_checkpoint",
                    "corrupt_checkpoint",
                    "truncate_checkpoint",
                    "corrupt_blob",
                    "locations",
                )
                if not callable(getattr(backdoor, name, None))
            ]
            pytest.fail(
                f"the backdoor fixture returned {type(backdoor).__name__}, which lacks "
                f"{', '.join(missing)}",
                pytrace=False,
            )
        return backdoor

    @pytest.fixture
    def lease_ttl(self, request: pytest.FixtureRequest) -> float:
        """The short TTL of the lease-expiry tests (``--durably-lease-ttl`` wins)."""
        option = request.config.getoption("durably_lease_ttl", default=None)
        return float(option) if option is not None else float(self.short_lease_ttl)


def _skip_unless_capable(
    request: pytest.FixtureRequest,
    provider_class: type[CheckpointProvider],
) -> None:
    declared = provider_class.capabilities
    for capability, marker in CAPABILITY_MARKERS.items():
        if request.node.get_closest_marker(marker) is None:
            continue
        if capability not in declared:
            pytest.skip(
                f"provider does not declare Capability.{capability.name} "
                f"({provider_class.__name__}.capabilities)"
            )
        if capability is Capability.LARGE_OBJECTS and request.config.getoption(
            "durably_skip_large", default=False
        ):
            pytest.skip("64 MiB round-trips skipped by --durably-skip-large")
