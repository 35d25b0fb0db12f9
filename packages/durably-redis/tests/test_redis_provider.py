"""Redis-specific behaviour: atomic fencing, one round trip per save, durability settings,
the key layout and what survives a restart of the server."""

from __future__ import annotations

import asyncio
import secrets
import warnings
from typing import Any

import pytest
from redis import asyncio as aioredis
from redis.asyncio.connection import AbstractConnection

from durably.errors import (
    AlreadyExistsError,
    ConfigError,
    DurablyWarning,
    FencedError,
    NotFoundError,
    StoreError,
)
from durably.storage import CheckpointInfo, ExpectedVersion, Lease, blob_digest
from durably_redis import RedisProvider
from durably_redis._keys import seq_member
from durably_redis._scripts import SCRIPTS
from durably_redis.testing import ThrowawayRedis

from conftest import MakeStore

pytestmark = pytest.mark.filterwarnings(
    "ignore:Redis .* keeps durably's checkpoints in memory only:durably.errors.DurablyWarning"
)

RUN = "run-1"
LONG = 600.0


def _throwaway(**kwargs: Any) -> ThrowawayRedis:
    reason = ThrowawayRedis.unavailable_reason()
    if reason:
        pytest.skip(f"needs a throwaway Redis server: {reason}")
    return ThrowawayRedis(**kwargs)


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the socket writes of every redis-py connection: each is one round trip
    (a pipeline is written at once)."""
    counter = [0]
    original = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        counter[0] += 1
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return counter


# --------------------------------------------------------------------- atomicity


@pytest.mark.asyncio
async def test_fencing_is_atomic_with_a_racing_claim(make_store: MakeStore) -> None:
    """Saves of a superseded owner racing a takeover on another instance: every save
    either happened entirely before the claim or not at all.

    Versions and epochs come from the same server-side counter, so they show the
    order in which the scripts ran: a save that succeeded must have a version below
    the epoch of the claim that fenced it, and a fenced save must have left nothing.
    """
    old_worker, new_worker = make_store(pool_size=4), make_store(pool_size=4)
    mixed_rounds = 0
    for round_ in range(8):
        execution_id = f"race-{round_}"
        old = await old_worker.claim(execution_id, "worker", ttl=LONG)

        async def save(seq: int, lease: Lease = old, eid: str = execution_id) -> object:
            try:
                return await old_worker.save_checkpoint(eid, seq, b"x" * 100, lease=lease)
            except FencedError as exc:
                return exc

        saves = [asyncio.ensure_future(save(seq)) for seq in range(40)]
        await asyncio.sleep(0)  # let the first saves start
        new = await new_worker.claim(execution_id, "worker", ttl=LONG)  # a restart elsewhere
        results = await asyncio.gather(*saves)
        stored = {info.seq async for info in new_worker.iter_checkpoints(execution_id)}
        succeeded = {seq for seq, r in enumerate(results) if isinstance(r, CheckpointInfo)}
        fenced = {seq for seq, r in enumerate(results) if isinstance(r, FencedError)}
        assert succeeded | fenced == set(range(40)), results
        assert stored == succeeded, "a fenced save left something behind, or a save was lost"
        for result in results:
            if isinstance(result, CheckpointInfo):
                assert int(result.version) < new.epoch, (
                    f"save of seq {result.seq} succeeded after the claim that fenced it"
                )
        mixed_rounds += bool(succeeded and fenced)
        # After the claim returned, the old lease can never write again.
        with pytest.raises(FencedError):
            await old_worker.save_checkpoint(execution_id, 100, b"late", lease=old)
        await new_worker.save_checkpoint(execution_id, 100, b"current", lease=new)
    assert mixed_rounds, "the claim never landed in the middle of the saves"


@pytest.mark.asyncio
async def test_two_instances_creating_the_same_checkpoints(make_store: MakeStore) -> None:
    """Two instances race to create the same 50 seqs: each seq has exactly one winner
    and holds the winner's bytes."""
    one, two = make_store(), make_store()

    async def create(provider: RedisProvider, seq: int, data: bytes) -> object:
        try:
            return await provider.save_checkpoint(RUN, seq, data)
        except AlreadyExistsError as exc:
            return exc

    jobs = []
    for seq in range(50):
        jobs.append(create(one, seq, f"one {seq}".encode()))
        jobs.append(create(two, seq, f"two {seq}".encode()))
    results = await asyncio.gather(*jobs)
    for seq in range(50):
        first, second = results[2 * seq], results[2 * seq + 1]
        winners = [r for r in (first, second) if isinstance(r, CheckpointInfo)]
        assert len(winners) == 1, (seq, first, second)
        who = "one" if isinstance(first, CheckpointInfo) else "two"
        assert (await one.load_checkpoint(RUN, seq)).data == f"{who} {seq}".encode()


# ------------------------------------------------------------------ round trips


async def _provider_address(admin: aioredis.Redis, client_name: str) -> str:
    clients = await admin.client_list()
    found = [c["addr"] for c in clients if c.get("name") == client_name]
    assert len(found) == 1, f"expected one connection named {client_name}: {clients}"
    return str(found[0])


async def _monitored(admin_url: str, action: Any) -> list[dict[str, Any]]:
    """Run ``action()`` under MONITOR; return the commands the server executed meanwhile."""
    watcher = aioredis.Redis.from_url(admin_url)
    marker = f"durably-marker-{secrets.token_hex(4)}"
    seen: list[dict[str, Any]] = []
    try:
        async with watcher.monitor() as monitor:
            await action()
            await watcher.echo(marker)  # executed after everything the action sent
            while True:
                command = await asyncio.wait_for(monitor.next_command(), timeout=10)
                if command["command"] == f"ECHO {marker}":
                    return seen
                seen.append(dict(command))
    finally:
        await watcher.aclose()


@pytest.mark.asyncio
async def test_a_save_is_one_round_trip(
    make_store: MakeStore,
    redis_url: str,
    admin: aioredis.Redis,
    key_prefix: str,
    sends: list[int],
) -> None:
    """A fenced save is one socket write and one command (EVALSHA) on the server; the
    script does the rest (HSET, ZADD) inside Redis."""
    name = f"durably-rt-{secrets.token_hex(4)}"
    provider = make_store(f"{redis_url}?client_name={name}", pool_size=1)
    lease = await provider.claim(RUN, "worker", ttl=LONG)  # first use: connects
    address = await _provider_address(admin, name)
    counted: list[int] = []

    async def save() -> None:
        sends[0] = 0
        await provider.save_checkpoint(RUN, 0, b"payload" * 1000, lease=lease, metadata={"k": "v"})
        counted.append(sends[0])

    seen = await _monitored(redis_url, save)
    assert counted == [1], f"the save took {counted[0]} round trips"
    mine = [c for c in seen if f"{c['client_address']}:{c['client_port']}" == address]
    assert [c["command"].split()[0] for c in mine] == ["EVALSHA"], mine
    inside = [
        c["command"].split()[0]
        for c in seen
        if c["client_type"] == "lua" and key_prefix in c["command"]
    ]
    assert "HSET" in inside
    assert "ZADD" in inside
    sends[0] = 0
    assert (await provider.load_checkpoint(RUN, 0)).data == b"payload" * 1000
    assert sends[0] == 1, "a load is one round trip too"


@pytest.mark.asyncio
async def test_wait_replicas_is_pipelined_and_checked(
    make_store: MakeStore,
    redis_url: str,
    admin: aioredis.Redis,
    sends: list[int],
) -> None:
    """wait_replicas adds WAIT to the same round trip; when the server has fewer
    replicas the save raises StoreError (written, but not confirmed durable)."""
    replicas = int((await admin.info("replication"))["connected_slaves"])
    wanted = replicas + 1
    name = f"durably-wait-{secrets.token_hex(4)}"
    provider = make_store(
        f"{redis_url}?client_name={name}", pool_size=1, wait_replicas=wanted, wait_timeout_ms=50
    )
    await provider.list_executions()  # first use
    address = await _provider_address(admin, name)
    raised: list[BaseException] = []
    counted: list[int] = []

    async def save() -> None:
        sends[0] = 0
        try:
            await provider.save_checkpoint(RUN, 0, b"data")
        except StoreError as exc:
            raised.append(exc)
        counted.append(sends[0])

    seen = await _monitored(redis_url, save)
    assert counted == [1]
    mine = [
        c["command"].split()[:3]
        for c in seen
        if f"{c['client_address']}:{c['client_port']}" == address
    ]
    assert [c[0] for c in mine] == ["EVALSHA", "WAIT"]
    assert mine[1][1:] == [str(wanted), "50"]
    assert len(raised) == 1
    message = str(raised[0])
    assert f"only {replicas} of {wanted} replicas acknowledged" in message
    # The write happened; only its durability is unconfirmed.
    assert (await provider.load_checkpoint(RUN, 0)).data == b"data"
    # A rejected write wrote nothing and has nothing to wait for: the conflict wins.
    with pytest.raises(AlreadyExistsError):
        await provider.save_checkpoint(RUN, 0, b"again")


@pytest.mark.asyncio
async def test_wait_aof_on_this_server(make_store: MakeStore, admin: aioredis.Redis) -> None:
    """wait_aof: a clear ConfigError where WAITAOF is missing (Redis < 7.2) or the AOF
    is off; where it works, saves are confirmed."""
    info = await admin.info("server")
    version = tuple(int(n) for n in str(info["redis_version"]).split(".")[:2])
    appendonly = (await admin.config_get("appendonly"))["appendonly"]
    provider = make_store(wait_aof=True)
    if version < (7, 2):
        with pytest.raises(ConfigError, match=r"wait_aof.*has no WAITAOF.*7\.2"):
            await provider.save_checkpoint(RUN, 0, b"x")
    elif appendonly != "yes":
        with pytest.raises(ConfigError, match="appendonly"):
            await provider.save_checkpoint(RUN, 0, b"x")
    else:
        await provider.save_checkpoint(RUN, 0, b"x")
    if version < (7, 2) or appendonly != "yes":
        # Nothing was written, and the error repeats (the server did not change).
        assert await admin.exists(f"{provider.key_prefix}:x:{RUN}:seqs") == 0
        with pytest.raises(ConfigError):
            await provider.load_latest_checkpoint(RUN)


@pytest.mark.asyncio
async def test_wait_aof_confirms_writes_where_supported() -> None:
    """On a Redis >= 7.2 with appendonly yes, wait_aof saves succeed (WAITAOF 1 0)."""
    with _throwaway(args=("--appendonly", "yes")) as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            version = str((await client.info("server"))["redis_version"])
        finally:
            await client.aclose()
        if tuple(int(n) for n in version.split(".")[:2]) < (7, 2):
            pytest.skip(f"redis-server {version} has no WAITAOF (needs 7.2)")
        provider = RedisProvider.from_url(server.url, {"wait_aof": True})
        try:
            await provider.save_checkpoint(RUN, 0, b"x")
            assert (await provider.load_checkpoint(RUN, 0)).data == b"x"
        finally:
            await provider.close()


# ------------------------------------------------------------------ persistence


def _durably_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, DurablyWarning)]


@pytest.mark.asyncio
async def test_persistence_warning_matches_the_server(
    make_store: MakeStore,
    admin: aioredis.Redis,
) -> None:
    """First use warns (DurablyWarning) exactly when neither AOF nor RDB is on; the
    test server of this machine runs with persistence off."""
    config = await admin.config_get("*")
    off = config["appendonly"] == "no" and not str(config["save"]).strip()
    provider = make_store()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await provider.list_executions()
        await provider.list_executions()  # only the first use inspects the server
    found = _durably_warnings(caught)
    assert provider.server is not None
    assert provider.server.persistence.survives_restart is (not off)
    if off:
        assert len(found) == 1, found
        assert "in memory only" in found[0]
        assert "appendonly yes" in found[0]
    else:
        assert not [m for m in found if "in memory only" in m]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("args", "survives"),
    [
        (("--appendonly", "yes"), True),
        (("--save", "3600 1"), True),
        ((), False),
    ],
)
async def test_persistence_settings_are_read(args: tuple[str, ...], survives: bool) -> None:
    """AOF or RDB snapshots: no warning; neither: the warning."""
    with _throwaway(args=args) as server:
        provider = RedisProvider.from_url(server.url, {})
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                await provider.list_executions()
        finally:
            await provider.close()
    assert provider.server is not None
    assert provider.server.persistence.survives_restart is survives
    assert bool(_durably_warnings(caught)) is (not survives)


@pytest.mark.asyncio
async def test_a_server_without_config_is_handled(caplog: pytest.LogCaptureFixture) -> None:
    """With CONFIG disabled (as on managed services) the provider works, reads the AOF
    flag from INFO, and logs that it cannot check the snapshots."""
    with _throwaway(args=("--rename-command", "CONFIG", "")) as server:
        provider = RedisProvider.from_url(server.url, {})
        try:
            with warnings.catch_warnings(record=True) as caught, caplog.at_level("WARNING"):
                warnings.simplefilter("always")
                await provider.save_checkpoint(RUN, 0, b"x")
            assert (await provider.load_checkpoint(RUN, 0)).data == b"x"
        finally:
            await provider.close()
    assert provider.server is not None
    assert provider.server.persistence.source == "INFO persistence"
    assert provider.server.persistence.appendonly is False
    assert provider.server.persistence.survives_restart is None
    assert not _durably_warnings(caught)
    assert "cannot read the persistence settings" in caplog.text


@pytest.mark.asyncio
async def test_allkeys_eviction_is_warned_about() -> None:
    with _throwaway(args=("--appendonly", "yes", "--maxmemory-policy", "allkeys-lru")) as server:
        provider = RedisProvider.from_url(server.url, {})
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                await provider.list_executions()
        finally:
            await provider.close()
    found = _durably_warnings(caught)
    assert len(found) == 1
    assert "allkeys-lru" in found[0]


@pytest.mark.asyncio
@pytest.mark.parametrize("appendonly", [True, False])
async def test_what_survives_a_crash_of_the_server(appendonly: bool) -> None:
    """Kill -9 the server and start it again: with AOF everything (checkpoints, lease,
    blobs, versions) is back and the provider reconnects by itself (reloading its
    scripts); without persistence everything is gone -- what the warning says."""
    args = ("--appendonly", "yes", "--appendfsync", "always") if appendonly else ()
    with _throwaway(args=args) as server:
        provider = RedisProvider.from_url(server.url, {})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DurablyWarning)
                lease = await provider.claim(RUN, "worker", ttl=LONG)
                info = await provider.save_checkpoint(RUN, 0, b"before the crash", lease=lease)
                digest = await provider.put_blob(RUN, b"a blob")
            server.restart(kill=True)
            if appendonly:
                got = await provider.load_checkpoint(RUN, 0)
                assert (got.data, got.info.version) == (b"before the crash", info.version)
                assert await provider.get_blob(RUN, digest) == b"a blob"
                current = await provider.get_lease(RUN)
                assert current is not None
                assert current.epoch == lease.epoch
                # The scripts were lost with the server's memory: EVALSHA gets NOSCRIPT
                # and the provider sends the script itself (EVAL), which caches it again.
                assert provider.server is not None
                sha = SCRIPTS["save"].sha(provider.server.shebang)
                client = aioredis.Redis.from_url(server.url)
                try:
                    assert await client.script_exists(sha) == [False]
                    again = await provider.save_checkpoint(
                        RUN, 0, b"after", mode=ExpectedVersion(info.version), lease=lease
                    )
                    assert await client.script_exists(sha) == [True]
                finally:
                    await client.aclose()
                assert int(again.version) > int(info.version)
                newer = await provider.claim(RUN, "worker", ttl=LONG)
                assert newer.epoch > int(again.version)
            else:
                with pytest.raises(NotFoundError):
                    await provider.load_checkpoint(RUN, 0)
                assert await provider.get_lease(RUN) is None
                assert not await provider.has_blob(RUN, digest)
        finally:
            await provider.close()


# ------------------------------------------------------------------- key layout


@pytest.mark.asyncio
async def test_key_layout(make_store: MakeStore, admin: aioredis.Redis, key_prefix: str) -> None:
    """The keys documented in docs/providers/redis.md, and nothing else."""
    provider = make_store()
    lease = await provider.claim(RUN, "worker", ttl=LONG)
    info = await provider.save_checkpoint(RUN, 7, b"data", metadata={"a": "b"}, lease=lease)
    digest = await provider.put_blob(RUN, b"blob")
    keys = sorted([k.decode() async for k in admin.scan_iter(match=f"{key_prefix}:*")])
    base = f"{key_prefix}:x:{RUN}"
    assert keys == sorted(
        [
            f"{key_prefix}:counter",
            f"{key_prefix}:executions",
            f"{key_prefix}:open",
            f"{base}:seqs",
            f"{base}:c:{seq_member(7)}",
            f"{base}:blobs",
            f"{base}:b:{digest}",
            f"{base}:lease",
        ]
    )
    checkpoint = await admin.hgetall(f"{base}:c:{seq_member(7)}")
    assert set(checkpoint) == {b"d", b"v", b"t", b"m"}
    assert checkpoint[b"d"] == provider.envelope.wrap(b"data")
    assert checkpoint[b"v"] == info.version.encode()
    assert float(checkpoint[b"t"]) == info.created_at
    assert checkpoint[b"m"] == b'{"a":"b"}'
    assert await admin.zrange(f"{base}:seqs", 0, -1) == [seq_member(7).encode()]
    assert await admin.zrange(f"{key_prefix}:executions", 0, -1) == [RUN.encode()]
    assert await admin.zrange(f"{key_prefix}:open", 0, -1) == [RUN.encode()]  # no status
    lease_hash = await admin.hgetall(f"{base}:lease")
    assert lease_hash[b"owner"] == b"worker"
    assert int(lease_hash[b"epoch"]) == lease.epoch
    assert lease_hash[b"released"] == b"0"
    assert await admin.get(f"{key_prefix}:counter") == info.version.encode()
    # Deleting the execution leaves only the counter (versions are never reused).
    assert await provider.delete_execution(RUN)
    keys = sorted([k.decode() async for k in admin.scan_iter(match=f"{key_prefix}:*")])
    assert keys == [f"{key_prefix}:counter"]


@pytest.mark.asyncio
async def test_prefixes_keep_stores_apart(
    make_store: MakeStore, redis_url: str, key_prefix: str
) -> None:
    mine = make_store()
    other_prefix = f"{key_prefix}-other"
    other = make_store(key_prefix=other_prefix)
    try:
        await mine.save_checkpoint(RUN, 0, b"mine")
        await other.save_checkpoint(RUN, 0, b"other")
        await other.claim(RUN, "someone", ttl=LONG)
        assert (await mine.load_checkpoint(RUN, 0)).data == b"mine"
        assert await mine.get_lease(RUN) is None
        assert await other.delete_execution(RUN)
        assert (await mine.load_checkpoint(RUN, 0)).data == b"mine"
    finally:
        from durably_redis.testing import delete_prefix

        delete_prefix(redis_url, other_prefix)


@pytest.mark.asyncio
async def test_an_execution_without_checkpoints_blobs_or_lease_is_not_listed(
    make_store: MakeStore,
) -> None:
    provider = make_store()
    await provider.save_checkpoint("a", 0, b"x")
    digest = await provider.put_blob("b", b"blob")
    await provider.save_checkpoint("b", 0, b"x")
    assert [e.execution_id async for e in provider.iter_executions()] == ["a", "b"]
    assert await provider.delete_checkpoint("a", 0)
    assert await provider.delete_checkpoint("b", 0)
    assert [e.execution_id async for e in provider.iter_executions()] == ["b"]
    assert await provider.delete_blob("b", digest)
    assert [e.execution_id async for e in provider.iter_executions()] == []


@pytest.mark.asyncio
async def test_deleting_a_large_execution_in_batches(
    make_store: MakeStore,
    admin: aioredis.Redis,
    key_prefix: str,
) -> None:
    """More checkpoints than one delete script handles: everything still goes."""
    provider = make_store()
    count = 2500
    semaphore = asyncio.Semaphore(32)

    async def save(seq: int) -> None:
        async with semaphore:
            await provider.save_checkpoint(RUN, seq, b"")

    await asyncio.gather(*(save(seq) for seq in range(count)))
    for i in range(3):
        await provider.put_blob(RUN, f"blob {i}".encode())
    await provider.claim(RUN, "worker", ttl=LONG)
    assert await provider.prune(RUN, keep_last=1200) == list(range(count - 1200))
    assert await provider.delete_execution(RUN) is True
    keys = [k async for k in admin.scan_iter(match=f"{key_prefix}:x:*")]
    assert keys == []
    assert await provider.delete_execution(RUN) is False


@pytest.mark.asyncio
async def test_listing_beyond_the_largest_sequence_number(make_store: MakeStore) -> None:
    provider = make_store()
    top = 2**63 - 1
    for seq in (top - 1, top):
        await provider.save_checkpoint(RUN, seq, b"x")
    assert [i.seq for i in (await provider.list_checkpoints(RUN, after=top - 1)).items] == [top]
    assert list((await provider.list_checkpoints(RUN, after=top)).items) == []
    assert list((await provider.list_checkpoints(RUN, after=2**64)).items) == []
    assert [i.seq for i in (await provider.list_checkpoints(RUN, after=-5)).items] == [top - 1, top]
    with pytest.raises(ValueError, match="cursor"):
        await provider.list_checkpoints(RUN, cursor="not-a-seq")


@pytest.mark.asyncio
async def test_owners_and_metadata_keep_every_character(make_store: MakeStore) -> None:
    provider = make_store()
    owner = 'worker \u00e9\U0001f389 \u65e5 "quoted" \\ \n'
    lease = await provider.claim(RUN, owner, ttl=LONG)
    current = await provider.get_lease(RUN)
    assert current is not None
    assert current.owner == owner
    metadata = {"astral": "\U0010fffd", "nul": "\x00", "quote": '"}', "esc": "\\u0041"}
    await provider.save_checkpoint(RUN, 0, b"x", metadata=metadata, lease=lease)
    assert dict((await provider.load_checkpoint(RUN, 0)).metadata) == metadata
    renewed = await provider.renew(lease, ttl=LONG)
    assert renewed.owner == owner


@pytest.mark.asyncio
async def test_a_closed_provider_refuses_work(make_store: MakeStore) -> None:
    provider = make_store()
    await provider.save_checkpoint(RUN, 0, b"x")
    await provider.close()
    with pytest.raises(StoreError, match="closed"):
        await provider.load_checkpoint(RUN, 0)


@pytest.mark.asyncio
async def test_release_keeps_the_record_and_lets_others_claim(make_store: MakeStore) -> None:
    provider = make_store()
    lease = await provider.claim(RUN, "a", ttl=LONG)
    await provider.release(lease)
    released = await provider.get_lease(RUN)
    assert released is not None
    assert released.expired(), "a released lease reports an expiry in the past"
    taken = await provider.claim(RUN, "b", ttl=LONG)
    assert taken.epoch > lease.epoch


@pytest.mark.asyncio
async def test_a_store_without_the_open_index_is_indexed_once(
    make_store: MakeStore,
    admin: aioredis.Redis,
    key_prefix: str,
) -> None:
    """A store written before the open index existed: the first listing builds it (C31)."""
    provider = make_store()
    for n in range(3):
        await provider.save_checkpoint(f"open-{n}", 0, b"a", metadata={"durably.status": "x"})
        await provider.save_checkpoint(
            f"done-{n}", 0, b"a", metadata={"durably.status": "completed"}
        )
    await admin.delete(f"{key_prefix}:open", f"{key_prefix}:open-ready")  # as before
    fresh = make_store()
    assert [e.execution_id async for e in fresh.iter_open_executions()] == [
        "open-0",
        "open-1",
        "open-2",
    ]
    assert await admin.get(f"{key_prefix}:open-ready") == b"1"
    await admin.zrem(f"{key_prefix}:open", "open-0")  # once ready, trusted as it is
    assert [e.execution_id async for e in make_store().iter_open_executions()] == [
        "open-1",
        "open-2",
    ]


@pytest.mark.asyncio
async def test_a_batch_of_blobs_is_one_round_trip(make_store: MakeStore, sends: list[int]) -> None:
    """put_blobs (C33) stores a batch with one script call; a re-put reports nothing
    written, a mixed batch only the new blobs."""
    provider = make_store()
    await provider.put_blob(RUN, b"first use: connects")
    payloads = [bytes([i]) * 3000 for i in range(29)]
    batch = {blob_digest(p): p for p in payloads}
    sends[0] = 0
    assert await provider.put_blobs(RUN, batch) == dict.fromkeys(batch, True)
    assert sends[0] == 1, f"the batch took {sends[0]} round trips"
    assert await provider.put_blobs(RUN, batch) == dict.fromkeys(batch, False)
    extra = {blob_digest(b"new one"): b"new one"}
    written = await provider.put_blobs(RUN, {**batch, **extra})
    assert written == {**dict.fromkeys(batch, False), **dict.fromkeys(extra, True)}
    for digest, data in {**batch, **extra}.items():
        assert await provider.get_blob(RUN, digest) == data
