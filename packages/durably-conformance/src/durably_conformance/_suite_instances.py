"""Instance clauses: persistence (C21), sharing (C22), class and lifecycle (C26), from_url (C28)."""

from __future__ import annotations

import asyncio
import inspect
import re
from importlib import metadata as importlib_metadata

import pytest

from durably.errors import (
    AlreadyExistsError,
    ConfigError,
    FencedError,
    LeaseHeldError,
    NotFoundError,
    PreconditionFailedError,
)
from durably.storage import (
    Capability,
    CheckpointInfo,
    CheckpointProvider,
    ExpectedVersion,
    Lease,
)
from durably_conformance._base import ProviderPool, SuiteBase
from durably_conformance._helpers import eventually, random_bytes, sleep_past

__all__ = ["InstanceSuite"]

RUN = "run-1"
LONG = 600.0
PROVIDER_GROUP = "durably.providers"

TEMPLATE_METHODS = (
    "save_checkpoint",
    "load_checkpoint",
    "load_checkpoints",
    "load_latest_checkpoint",
    "list_checkpoints",
    "iter_checkpoints",
    "delete_checkpoint",
    "prune",
    "list_executions",
    "iter_executions",
    "delete_execution",
    "claim",
    "renew",
    "release",
    "get_lease",
    "put_blob",
    "get_blob",
    "has_blob",
    "list_blobs",
    "delete_blob",
    "close",
    "__aenter__",
    "__aexit__",
    "_open",
)
"""Methods of CheckpointProvider a provider must not override (they validate and
wrap/unwrap envelopes before and after the provider methods)."""


async def _seqs(provider: CheckpointProvider, execution_id: str = RUN) -> list[int]:
    return [info.seq async for info in provider.iter_checkpoints(execution_id)]


class InstanceSuite(SuiteBase):
    """Clauses C21, C22, C26 and C28."""

    # -------------------------------------------------------- C21 persistence

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(21)
    @pytest.mark.durably_persistent
    async def test_c21_everything_survives_a_new_instance(
        self,
        provider_pool: ProviderPool,
    ) -> None:
        """[C21] Checkpoints, metadata, versions, blobs and leases survive a new instance."""
        first = provider_pool.first
        data = {seq: random_bytes(3000, seed=210 + seq) for seq in range(3)}
        infos: dict[int, CheckpointInfo] = {}
        lease = await first.claim(RUN, "worker-a", ttl=LONG)
        for seq, payload in data.items():
            infos[seq] = await first.save_checkpoint(
                RUN,
                seq,
                payload,
                metadata={"seq": str(seq), "note": "\u00e9\U0001f389"},
                lease=lease,
            )
        digest = await first.put_blob(RUN, b"blob bytes")
        await first.save_checkpoint("run-2", 0, b"other")
        await first.close()

        second = provider_pool.new()
        for seq, payload in data.items():
            got = await second.load_checkpoint(RUN, seq)
            assert got.data == payload
            assert dict(got.metadata) == {"seq": str(seq), "note": "\u00e9\U0001f389"}
            assert got.info.version == infos[seq].version
        latest = await second.load_latest_checkpoint(RUN)
        assert latest is not None
        assert latest.seq == 2
        assert await _seqs(second) == [0, 1, 2]
        assert await second.get_blob(RUN, digest) == b"blob bytes"
        assert [e.execution_id async for e in second.iter_executions()] == [RUN, "run-2"]
        current = await second.get_lease(RUN)
        assert current is not None
        assert (current.owner, current.epoch) == ("worker-a", lease.epoch)
        with pytest.raises(LeaseHeldError):
            await second.claim(RUN, "worker-b", ttl=LONG)
        # Versions and epochs carry over: conditional writes and fencing still work.
        await second.save_checkpoint(
            RUN,
            2,
            b"replaced",
            mode=ExpectedVersion(infos[2].version),
            lease=lease,
        )
        again = await second.claim(RUN, "worker-a", ttl=LONG)
        assert again.epoch > lease.epoch
        with pytest.raises(FencedError):
            await second.save_checkpoint(RUN, 3, b"x", lease=lease)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(21)
    @pytest.mark.durably_persistent
    async def test_c21_deletes_survive_a_new_instance(self, provider_pool: ProviderPool) -> None:
        """[C21] Deleted checkpoints, blobs and executions stay deleted in a new instance."""
        first = provider_pool.first
        for seq in range(3):
            await first.save_checkpoint(RUN, seq, b"x")
        digest = await first.put_blob(RUN, b"blob")
        await first.save_checkpoint("run-2", 0, b"x")
        assert await first.delete_checkpoint(RUN, 2)
        assert await first.delete_blob(RUN, digest)
        assert await first.delete_execution("run-2")
        await first.close()

        second = provider_pool.new()
        assert await _seqs(second) == [0, 1]
        assert not await second.has_blob(RUN, digest)
        assert await second.load_latest_checkpoint("run-2") is None
        assert [e.execution_id async for e in second.iter_executions()] == [RUN]

    # ------------------------------------------------------------ C22 sharing

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(22)
    @pytest.mark.durably_shared
    async def test_c22_writes_are_visible_across_live_instances(
        self,
        provider_pool: ProviderPool,
    ) -> None:
        """[C22] What one live instance writes or deletes, another sees at once."""
        one, two = provider_pool.first, provider_pool.new()
        info = await one.save_checkpoint(RUN, 0, b"from one", metadata={"by": "one"})
        got = await two.load_checkpoint(RUN, 0)
        assert (got.data, got.info.version) == (b"from one", info.version)
        await two.save_checkpoint(RUN, 0, b"from two", mode=ExpectedVersion(info.version))
        assert (await one.load_checkpoint(RUN, 0)).data == b"from two"
        with pytest.raises(AlreadyExistsError):
            await one.save_checkpoint(RUN, 0, b"again")
        with pytest.raises(PreconditionFailedError):
            await one.save_checkpoint(RUN, 0, b"stale", mode=ExpectedVersion(info.version))
        digest = await two.put_blob(RUN, b"blob")
        assert await one.get_blob(RUN, digest) == b"blob"
        assert await one.delete_checkpoint(RUN, 0)
        with pytest.raises(NotFoundError):
            await two.load_checkpoint(RUN, 0)
        assert [e.execution_id async for e in two.iter_executions()] == [RUN]

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(22)
    @pytest.mark.durably_shared
    async def test_c22_concurrent_creates_across_instances_exactly_one_wins(
        self,
        provider_pool: ProviderPool,
    ) -> None:
        """[C22] (C8 across instances) Of concurrent creates of one seq, exactly one wins."""
        instances = [provider_pool.first] + [provider_pool.new() for _ in range(5)]
        for seq in range(4):
            payloads = [f"seq {seq} from {i}".encode() for i in range(len(instances))]
            results = await asyncio.gather(
                *(
                    p.save_checkpoint(RUN, seq, data)
                    for p, data in zip(instances, payloads, strict=True)
                ),
                return_exceptions=True,
            )
            winners = [i for i, r in enumerate(results) if isinstance(r, CheckpointInfo)]
            assert len(winners) == 1, f"seq {seq}: {len(winners)} instances succeeded: {results}"
            assert all(
                isinstance(r, AlreadyExistsError)
                for r in results
                if not isinstance(r, CheckpointInfo)
            ), results
            for p in instances:
                assert (await p.load_checkpoint(RUN, seq)).data == payloads[winners[0]]

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(22)
    @pytest.mark.durably_shared
    async def test_c22_leases_hold_across_instances(self, provider_pool: ProviderPool) -> None:
        """[C22] Claims exclude and fence across instances; concurrent claims: one winner."""
        instances = [provider_pool.first] + [provider_pool.new() for _ in range(4)]
        results = await asyncio.gather(
            *(p.claim(RUN, f"worker-{i}", ttl=LONG) for i, p in enumerate(instances)),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, Lease)]
        assert len(winners) == 1, f"{len(winners)} instances got the lease: {results}"
        assert all(isinstance(r, LeaseHeldError) for r in results if not isinstance(r, Lease))
        holder = winners[0]
        holder_instance = instances[int(holder.owner.rsplit("-", 1)[1])]
        other_instance = next(p for p in instances if p is not holder_instance)
        current = await other_instance.get_lease(RUN)
        assert current is not None
        assert current.epoch == holder.epoch
        # The same owner restarts on another instance: the old incarnation is fenced.
        again = await other_instance.claim(RUN, holder.owner, ttl=LONG)
        assert again.epoch > holder.epoch
        with pytest.raises(FencedError):
            await holder_instance.save_checkpoint(RUN, 0, b"zombie", lease=holder)
        with pytest.raises(FencedError):
            await holder_instance.renew(holder, ttl=LONG)
        await other_instance.save_checkpoint(RUN, 0, b"current", lease=again)
        assert (await holder_instance.load_checkpoint(RUN, 0)).data == b"current"

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(22)
    @pytest.mark.durably_shared
    async def test_c22_an_expired_lease_is_taken_over_by_another_instance(
        self,
        provider_pool: ProviderPool,
        lease_ttl: float,
    ) -> None:
        """[C22] After expiry another instance claims; the first is fenced and cannot renew."""
        one, two = provider_pool.first, provider_pool.new()
        # The second instance's first request may start its client (S3's loads botocore's
        # service model), which on a loaded machine can outlast the short lease: start it
        # before the lease does, so the refusal below is timed on a request, not a start-up.
        assert await two.get_lease(RUN) is None
        old = await one.claim(RUN, "worker-a", ttl=lease_ttl)
        with pytest.raises(LeaseHeldError):
            await two.claim(RUN, "worker-b", ttl=LONG)
        await sleep_past(old.expires_at)
        new = await eventually(
            lambda: two.claim(RUN, "worker-b", ttl=LONG),
            retry_on=LeaseHeldError,
            within=self.expiry_grace,
        )
        assert new.epoch > old.epoch
        with pytest.raises(FencedError):
            await one.save_checkpoint(RUN, 0, b"zombie", lease=old)
        with pytest.raises(FencedError):
            await one.renew(old, ttl=LONG)
        with pytest.raises(NotFoundError):
            await two.load_checkpoint(RUN, 0)

    # ------------------------------------------------- C26 class and lifecycle

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(26)
    async def test_c26_the_class_declares_scheme_capabilities_and_from_url(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C26] The class has a URL scheme, a frozenset of Capability, a from_url, describe()."""
        cls = type(provider)
        assert isinstance(cls.scheme, str)
        assert re.fullmatch(r"[a-z][a-z0-9+.-]*", cls.scheme), (
            f"scheme must be a lower-case URL scheme, not {cls.scheme!r}"
        )
        assert isinstance(cls.capabilities, frozenset)
        assert all(isinstance(c, Capability) for c in cls.capabilities), cls.capabilities
        from_url = getattr(cls, "from_url", None)
        assert callable(from_url), f"{cls.__name__} has no from_url class method"
        assert isinstance(_inherited(cls, "from_url"), classmethod), (
            "from_url must be a classmethod"
        )
        parameters = list(inspect.signature(from_url).parameters.values())
        assert [(p.name, p.kind) for p in parameters] == [
            ("url", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            ("options", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ], f"from_url must take (url, options), like CheckpointProvider.from_url: {parameters}"
        assert not inspect.isabstract(cls), (
            f"{cls.__name__} leaves abstract methods: {sorted(cls.__abstractmethods__)}"
        )
        description = provider.describe()
        assert isinstance(description, str)
        assert description, "describe() must name the store"

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(26)
    async def test_c26_public_methods_are_not_overridden(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C26] The public (validating, enveloping) methods are the base class's own."""
        cls = type(provider)
        overridden = [
            name
            for name in TEMPLATE_METHODS
            if getattr(cls, name) is not getattr(CheckpointProvider, name)
        ]
        assert not overridden, (
            f"{cls.__name__} overrides {', '.join(overridden)}; implement the _-prefixed "
            "provider methods instead"
        )

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(26)
    async def test_c26_close_is_idempotent(self, provider_pool: ProviderPool) -> None:
        """[C26] close() may be called twice, on a used and on a never-used instance."""
        used = provider_pool.first
        await used.save_checkpoint(RUN, 0, b"x")
        await used.close()
        await used.close()
        unused = provider_pool.new()
        await unused.close()
        await unused.close()

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(26)
    async def test_c26_an_instance_is_an_async_context_manager(
        self,
        provider_pool: ProviderPool,
    ) -> None:
        """[C26] ``async with provider:`` yields the provider and closes it on exit."""
        instance = provider_pool.new()
        async with instance as entered:
            assert entered is instance
            await entered.save_checkpoint(RUN, 0, b"x")
            assert (await entered.load_checkpoint(RUN, 0)).data == b"x"

    # ------------------------------------------------------------ C28 from_url

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(28)
    async def test_c28_from_url_builds_an_instance(
        self,
        provider: CheckpointProvider,
        store_url: str | None,
    ) -> None:
        """[C28] from_url(url, {}) returns an instance of the class, without doing I/O."""
        url = _require_url(store_url)
        cls = type(provider)
        built = cls.from_url(url, {})
        try:
            assert type(built) is cls
        finally:
            await built.close()

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(28)
    async def test_c28_from_url_rejects_unknown_options(
        self,
        provider: CheckpointProvider,
        store_url: str | None,
    ) -> None:
        """[C28] from_url raises ConfigError for an option it does not know."""
        url = _require_url(store_url)
        with pytest.raises(ConfigError):
            type(provider).from_url(
                url,
                {"durably_conformance_no_such_option": 1},
            )

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(28)
    async def test_c28_the_entry_point_builds_this_provider(
        self,
        provider: CheckpointProvider,
        store_url: str | None,
    ) -> None:
        """[C28] The ``durably.providers`` entry point for the scheme builds this class."""
        url = _require_url(store_url)
        cls = type(provider)
        found = importlib_metadata.entry_points(group=PROVIDER_GROUP, name=cls.scheme)
        if not found:
            pytest.skip(
                f"no installed distribution registers {cls.scheme!r} in {PROVIDER_GROUP!r} "
                "(run the suite against an installed distribution to check it)"
            )
        factory = next(iter(found)).load()
        built = factory(url, {})
        try:
            assert type(built) is cls, (
                f"the {cls.scheme!r} entry point built {type(built).__name__}, not {cls.__name__}"
            )
        finally:
            await built.close()


def _inherited(cls: type, name: str) -> object:
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None


def _require_url(store_url: str | None) -> str:
    if store_url is None:
        pytest.skip("override the store_url fixture to check from_url and registration")
    return store_url
