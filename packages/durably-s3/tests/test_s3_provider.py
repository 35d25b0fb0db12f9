"""S3-specific behaviour: object format, fencing races, request costs, errors.

Everything runs against a real moto server over HTTP (see conftest.py), except the
error-mapping tests that need a misbehaving server (s3_fake_server.py, also real HTTP).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError
from s3_fake_server import Reply, error, fake_s3, ok_put
from s3_testkit import MotoS3, RequestCounter

from durably.errors import (
    AlreadyExistsError,
    ConfigError,
    CorruptObjectError,
    FencedError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
)
from durably.storage import CheckpointInfo, Lease, blob_digest
from durably_s3 import S3Backdoor, S3Provider
from durably_s3 import _format as fmt
from durably_s3._client import Precondition
from durably_s3._format import Intent

PREFIX = "app/durably"
RUN = "run-1"
LONG = 600.0
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@pytest.fixture
def bucket(moto_s3: MotoS3) -> str:
    return moto_s3.new_bucket()


@pytest.fixture
def backdoor(bucket: str, moto_s3: MotoS3) -> S3Backdoor:
    return S3Backdoor(bucket, PREFIX, endpoint_url=moto_s3.endpoint)


def _provider(bucket: str, counter: RequestCounter | None = None, **options: Any) -> S3Provider:
    return S3Provider(
        bucket, PREFIX, options, session=counter.session if counter is not None else None
    )


async def _seqs(provider: S3Provider, execution_id: str = RUN) -> list[int]:
    return [info.seq async for info in provider.iter_checkpoints(execution_id)]


# ============================================================== moto itself


def test_moto_evaluates_conditional_requests(moto_s3: MotoS3, bucket: str) -> None:
    """The server we test against answers conditional requests as S3 does (412/404/304)."""
    s3 = moto_s3.client

    def status(call: Any, **kwargs: Any) -> int:
        try:
            response = call(Bucket=bucket, **kwargs)
        except ClientError as exc:
            return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
        return int(response["ResponseMetadata"]["HTTPStatusCode"])

    first = s3.put_object(Bucket=bucket, Key="k", Body=b"1", IfNoneMatch="*")
    assert status(s3.put_object, Key="k", Body=b"2", IfNoneMatch="*") == 412
    assert status(s3.put_object, Key="k", Body=b"3", IfMatch='"0123"') == 412
    assert status(s3.put_object, Key="absent", Body=b"3", IfMatch=first["ETag"]) == 404
    assert status(s3.delete_object, Key="k", IfMatch='"0123"') == 412
    assert status(s3.head_object, Key="k", IfNoneMatch=first["ETag"]) == 304
    assert status(s3.get_object, Key="k", IfNoneMatch=first["ETag"]) == 304
    assert status(s3.put_object, Key="k", Body=b"4", IfMatch=first["ETag"]) == 200
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k")
    part = s3.upload_part(
        Bucket=bucket, Key="k", UploadId=upload["UploadId"], PartNumber=1, Body=b"z"
    )
    assert (
        status(
            s3.complete_multipart_upload,
            Key="k",
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
            IfNoneMatch="*",
        )
        == 412
    )


@pytest.mark.xfail(
    strict=True,
    reason="moto 5.2 ignores If-Match on CompleteMultipartUpload "
    "(AWS S3 evaluates it); strict: this fails loudly once moto implements it",
)
def test_moto_evaluates_if_match_on_complete_multipart(moto_s3: MotoS3, bucket: str) -> None:
    s3 = moto_s3.client
    s3.put_object(Bucket=bucket, Key="k", Body=b"1")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k")
    part = s3.upload_part(
        Bucket=bucket, Key="k", UploadId=upload["UploadId"], PartNumber=1, Body=b"z"
    )
    with pytest.raises(ClientError):
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="k",
            UploadId=upload["UploadId"],
            IfMatch='"0123"',
            MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
        )


def test_conditional_puts_race_with_one_winner(moto_s3: MotoS3, bucket: str) -> None:
    """(The harness.) Concurrent If-None-Match PUTs of one key: exactly one succeeds."""
    winners: dict[int, int] = {}
    lock = threading.Lock()

    def writer() -> None:
        for i in range(40):
            try:
                moto_s3.client.put_object(
                    Bucket=bucket, Key=f"race/{i}", Body=os.urandom(4096), IfNoneMatch="*"
                )
            except ClientError:
                continue
            with lock:
                winners[i] = winners.get(i, 0) + 1

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert winners == dict.fromkeys(range(40), 1)


# ============================================================ object format


@pytest.mark.asyncio
async def test_a_checkpoint_object_is_the_zstd_envelope(
    bucket: str,
    backdoor: S3Backdoor,
) -> None:
    """The object is the core's envelope (zstd inside), then the provider's small trailer."""
    provider = _provider(bucket)
    data = b"the same sentence, again and again. " * 2000  # compressible, > 1 KiB
    info = await provider.save_checkpoint(RUN, 0, data)
    raw = await backdoor.raw_checkpoint(RUN, 0)
    stored = provider.envelope.wrap(data)
    assert raw[:4] == b"\x89DRB"
    assert raw[5] == 1, "the envelope's codec byte says zstd"
    assert raw[40:44] == ZSTD_MAGIC, "the payload is one zstd frame"
    assert raw[: len(stored)] == stored, "the envelope is stored verbatim (not compressed twice)"
    assert len(raw) == len(stored) + fmt.TRAILER_SIZE
    assert info.size == len(stored) < len(data) // 20
    tiny = await provider.save_checkpoint(RUN, 1, b"tiny")
    raw_tiny = await backdoor.raw_checkpoint(RUN, 1)
    assert raw_tiny[5] == 0, "small payloads stay uncompressed"
    assert raw_tiny[40:44] == b"tiny"
    assert tiny.size == 44
    await provider.close()


@pytest.mark.asyncio
async def test_metadata_lives_in_s3_user_metadata_when_it_fits(
    moto_s3: MotoS3,
    bucket: str,
    backdoor: S3Backdoor,
) -> None:
    """Small metadata is percent-encoded S3 user metadata; 2 KiB of CJK goes in the object."""
    provider = _provider(bucket)
    small = {"durably.base": "3", "note": "caf\u00e9 \u2603", "spaces": "  two  spaces  "}
    big = {"text": "\u65e5\u672c" * 340}  # 2,044 bytes of UTF-8: ~6 KB percent-encoded
    await provider.save_checkpoint(RUN, 0, b"x", metadata=small)
    await provider.save_checkpoint(RUN, 1, b"y", metadata=big)
    await provider.close()

    def user_metadata(seq: int) -> dict[str, str]:
        head = moto_s3.client.head_object(Bucket=bucket, Key=backdoor.checkpoint_key(RUN, seq))
        return dict(head["Metadata"])

    first, second = user_metadata(0), user_metadata(1)
    assert all(value.isascii() and " " not in value for value in first.values())
    assert "durably-meta" in first
    assert "durably-meta-in-body" not in first
    assert "durably-meta" not in second
    assert int(second["durably-meta-in-body"]) > 2000
    for meta in (first, second):
        assert sum(len(k) + len(v) for k, v in meta.items()) <= 2048, "S3's 2 KB limit"
    fresh = _provider(bucket)  # nothing cached: metadata comes from S3
    listed = {info.seq: dict(info.metadata) async for info in fresh.iter_checkpoints(RUN)}
    assert listed == {0: small, 1: big}
    assert dict((await fresh.load_checkpoint(RUN, 1)).metadata) == big
    await fresh.close()


# ============================================================ concurrency


@pytest.mark.asyncio
async def test_two_instances_race_for_every_sequence_number(bucket: str) -> None:
    """Two instances create the same 20 seqs at once: each seq has exactly one winner."""
    one, two = _provider(bucket), _provider(bucket)
    results = await asyncio.gather(
        *(
            provider.save_checkpoint(RUN, seq, f"{name} {seq}".encode())
            for seq in range(20)
            for name, provider in (("one", one), ("two", two))
        ),
        return_exceptions=True,
    )
    for seq in range(20):
        pair = results[2 * seq : 2 * seq + 2]
        winners = [r for r in pair if isinstance(r, CheckpointInfo)]
        assert len(winners) == 1, (seq, pair)
        assert all(isinstance(r, AlreadyExistsError) for r in pair if r not in winners)
        data = (await two.load_checkpoint(RUN, seq)).data
        assert data == (b"one %d" if pair[0] in winners else b"two %d") % seq
    await one.close()
    await two.close()


# ================================================================ fencing


@pytest.mark.asyncio
async def test_a_stale_owner_is_fenced_and_its_writes_never_show(
    bucket: str,
    counter: RequestCounter,
) -> None:
    """The old holder's one-request path collides with the new claim's fence marker."""
    old_owner = _provider(bucket)
    new_owner = _provider(bucket, counter)
    old = await old_owner.claim(RUN, "worker-a", ttl=LONG)
    for seq in range(3):
        await old_owner.save_checkpoint(RUN, seq, b"a%d" % seq, lease=old)
    await old_owner.release(old)  # e.g. a timeout: worker-a believes it still works
    new = await new_owner.claim(RUN, "worker-b", ttl=LONG)
    with pytest.raises(FencedError):
        await old_owner.save_checkpoint(RUN, 3, b"zombie", lease=old)
    counter.reset()
    await new_owner.save_checkpoint(RUN, 3, b"b3", lease=new)
    assert counter.sent_to("/checkpoints/") == {"PutObject": 1}, (
        "the new owner's first write replaces its fence"
    )
    # Once per claim, before its first write: the open-index marker is read and raised
    # to the new epoch (C31); nothing else is sent.
    assert counter.sent_to(f"open/{RUN}") == {"GetObject": 1, "PutObject": 1}
    assert counter.total == 3
    with pytest.raises(FencedError):
        await old_owner.save_checkpoint(RUN, 4, b"zombie", lease=old)
    reader = _provider(bucket)
    assert await _seqs(reader) == [0, 1, 2, 3]
    latest = await reader.load_latest_checkpoint(RUN)
    assert latest is not None
    assert (latest.seq, latest.data) == (3, b"b3")
    with pytest.raises(NotFoundError):
        await reader.load_checkpoint(RUN, 4)
    for provider in (old_owner, new_owner, reader):
        await provider.close()


@pytest.mark.asyncio
async def test_a_fenced_slot_stays_occupied_when_its_checkpoint_is_deleted(
    bucket: str,
    backdoor: S3Backdoor,
) -> None:
    """Deleting the checkpoint that replaced a fence leaves a tombstone: the zombie's
    next slot never becomes free again."""
    zombie_instance, owner_instance = _provider(bucket), _provider(bucket)
    zombie = await zombie_instance.claim(RUN, "worker-a", ttl=LONG)
    for seq in range(3):
        await zombie_instance.save_checkpoint(RUN, seq, b"a", lease=zombie)
    await zombie_instance.release(zombie)
    owner = await owner_instance.claim(RUN, "worker-b", ttl=LONG)
    for seq in (3, 4, 5):
        await owner_instance.save_checkpoint(RUN, seq, b"b", lease=owner)
    assert await owner_instance.delete_checkpoint(RUN, 3, lease=owner)
    assert await owner_instance.prune(RUN, keep_last=1, lease=owner) == [0, 1, 2, 4]
    assert "executions/run-1!/checkpoints/00000000000000000003" in await backdoor.locations()
    with pytest.raises(FencedError):
        await zombie_instance.save_checkpoint(RUN, 3, b"zombie", lease=zombie)
    assert await _seqs(owner_instance) == [5]
    with pytest.raises(NotFoundError):
        await owner_instance.load_checkpoint(RUN, 3)
    await zombie_instance.close()
    await owner_instance.close()


@pytest.mark.asyncio
async def test_a_claim_settles_requests_still_in_flight(bucket: str) -> None:
    """A request whose intent was recorded before a takeover can no longer take effect.

    Stages the race by hand: the old holder records intents (create seq 5, overwrite
    seq 1, delete seq 2), another owner claims, then the old holder's requests arrive.
    """
    old_instance, new_instance = _provider(bucket), _provider(bucket)
    old = await old_instance.claim(RUN, "worker-a", ttl=LONG)
    infos = [
        await old_instance.save_checkpoint(RUN, seq, b"a%d" % seq, lease=old) for seq in range(3)
    ]
    etag1, _ = fmt.parse_version(infos[1].version)
    etag2, _ = fmt.parse_version(infos[2].version)
    create = Intent("01" * 16, {5: ""})
    overwrite = Intent("02" * 16, {1: etag1})
    delete = Intent("03" * 16, {2: etag2})
    for intent in (create, overwrite, delete):
        await old_instance._register(old, intent)
    await old_instance.release(old)
    await new_instance.claim(RUN, "worker-b", ttl=LONG)

    s3 = old_instance._s3  # the in-flight requests, exactly as the old holder sends them
    key = old_instance._layout.checkpoint
    with pytest.raises(Precondition):
        await s3.put(key(RUN, 5), b"late create", if_none_match=True)
    with pytest.raises(Precondition):
        await s3.put(key(RUN, 1), b"late overwrite", if_match=etag1)
    with pytest.raises(Precondition):
        await s3.delete(key(RUN, 2), if_match=etag2)
    reader = _provider(bucket)
    assert await _seqs(reader) == [0, 1, 2]
    assert [(await reader.load_checkpoint(RUN, seq)).data for seq in range(3)] == [
        b"a0",
        b"a1",
        b"a2",
    ]
    for provider in (old_instance, new_instance, reader):
        await provider.close()


@pytest.mark.asyncio
async def test_another_instance_with_the_lease_ends_the_one_request_path(
    bucket: str,
    counter: RequestCounter,
) -> None:
    """A write with the lease from a second instance kills the first one's chain; fencing
    still holds for both once a newer claim happened."""
    first = _provider(bucket, counter)
    second, claimer = _provider(bucket), _provider(bucket)
    lease = await first.claim(RUN, "worker-a", ttl=LONG)
    await first.save_checkpoint(RUN, 0, b"0", lease=lease)
    await first.save_checkpoint(RUN, 1, b"1", lease=lease)
    await second.save_checkpoint(RUN, 5, b"5", lease=lease)  # a gap, from elsewhere
    counter.reset()
    await first.save_checkpoint(RUN, 2, b"2", lease=lease)
    assert counter.sent["PutObject"] >= 2, "the chain is dead: the write went the slow way"
    await first.release(lease)
    await claimer.claim(RUN, "worker-b", ttl=LONG)
    with pytest.raises(FencedError):
        await first.save_checkpoint(RUN, 3, b"zombie", lease=lease)
    with pytest.raises(FencedError):
        await second.save_checkpoint(RUN, 6, b"zombie", lease=lease)
    assert await _seqs(claimer) == [0, 1, 2, 5]
    for provider in (first, second, claimer):
        await provider.close()


@pytest.mark.asyncio
async def test_the_holder_keeps_its_one_request_path_across_its_own_gaps(
    bucket: str,
    counter: RequestCounter,
) -> None:
    """Skipping sequence numbers costs a few requests once; then one PUT again. A newer
    claim still fences the holder's next slot (above the gap)."""
    holder = _provider(bucket, counter)
    claimer = _provider(bucket)
    lease = await holder.claim(RUN, "worker-a", ttl=LONG)
    await holder.save_checkpoint(RUN, 0, b"0", lease=lease)
    await holder.save_checkpoint(RUN, 5, b"5", lease=lease)
    counter.reset()
    await holder.save_checkpoint(RUN, 6, b"6", lease=lease)
    assert counter.sent == {"PutObject": 1}
    await holder.release(lease)
    await claimer.claim(RUN, "worker-b", ttl=LONG)
    with pytest.raises(FencedError):
        await holder.save_checkpoint(RUN, 7, b"zombie", lease=lease)
    assert await _seqs(claimer) == [0, 5, 6]
    await holder.close()
    await claimer.close()


# ================================================================== costs


@pytest.mark.asyncio
async def test_a_steady_state_save_is_one_request(bucket: str, counter: RequestCounter) -> None:
    provider = _provider(bucket, counter)
    await provider.save_checkpoint("plain", 0, b"first write checks the server once")
    for seq in range(1, 6):
        counter.reset()
        await provider.save_checkpoint("plain", seq, os.urandom(3000))
        assert counter.sent == {"PutObject": 1}
    lease = await provider.claim("fenced", "worker-a", ttl=LONG)
    for seq in range(5):
        counter.reset()
        await provider.save_checkpoint("fenced", seq, os.urandom(3000), lease=lease)
        if seq == 0:
            # The first write of a claim first marks the execution open (C31): the
            # marker is read, then written for the new epoch.
            assert counter.sent_to("open/fenced") == {"GetObject": 1, "PutObject": 1}
            assert counter.sent_to("/checkpoints/") == {"PutObject": 1}
            assert counter.total == 3, counter.sent
        else:
            assert counter.sent == {"PutObject": 1}, f"fenced save {seq}: {counter.sent}"
    await provider.close()


@pytest.mark.asyncio
async def test_1500_checkpoints_page_and_the_latest_costs_three_requests(
    bucket: str,
    counter: RequestCounter,
) -> None:
    """Paging past 1,000 keys; latest = GET head + one LIST + GET; prune in 2 batches."""
    writer = _provider(bucket, counter)
    semaphore = asyncio.Semaphore(16)

    async def save(seq: int) -> None:
        async with semaphore:
            await writer.save_checkpoint(RUN, seq, b"c%d" % seq)

    await asyncio.gather(*(save(seq) for seq in range(1500)))

    reader_counter = RequestCounter()
    reader = _provider(bucket, reader_counter)
    latest = await reader.load_latest_checkpoint(RUN)
    assert latest is not None
    assert (latest.seq, latest.data) == (1499, b"c1499")
    assert reader_counter.sent == {"GetObject": 2, "ListObjectsV2": 1}, reader_counter.sent
    await reader.close()

    counter.reset()
    first = await writer.list_checkpoints(RUN)
    assert len(first.items) == 1000
    assert first.next_cursor is not None
    second = await writer.list_checkpoints(RUN, cursor=first.next_cursor)
    assert [i.seq for i in first.items + second.items] == list(range(1500))
    assert second.next_cursor is None
    assert counter.sent == {"ListObjectsV2": 2}, "the metadata of its own writes is cached"
    counter.reset()
    deleted = await writer.prune(RUN, keep_last=10)
    assert deleted == list(range(1490))
    assert counter.sent == {"ListObjectsV2": 2, "DeleteObjects": 2}, counter.sent
    assert await _seqs(writer) == list(range(1490, 1500))
    await writer.close()


@pytest.mark.asyncio
async def test_executions_are_listed_one_page_per_request(
    bucket: str,
    counter: RequestCounter,
) -> None:
    """list_executions is a delimiter listing resumed after the cursor: one LIST per page,
    in code-point order of the ids even where one id is a prefix of another."""
    provider = _provider(bucket, counter)
    ids = ["run", "run-1", "run.1", "run_1", "run0", "Run", "0", "a-b", "a.b", "a", "ab", "b"]
    for execution_id in ids:
        await provider.save_checkpoint(execution_id, 0, b"")
    await provider.put_blob("blob-only", b"b")
    await provider.claim("lease-only", "worker-a", ttl=LONG)
    counter.reset()
    pages, cursor = [], None
    while True:
        page = await provider.list_executions(cursor=cursor, limit=5)
        pages.append([item.execution_id for item in page.items])
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [i for page in pages for i in page] == sorted([*ids, "blob-only", "lease-only"])
    assert [len(p) for p in pages] == [5, 5, 4]
    assert counter.sent == {"ListObjectsV2": 3}
    await provider.close()


@pytest.mark.asyncio
async def test_1005_executions_page_past_s3s_1000_key_limit(
    bucket: str,
    counter: RequestCounter,
) -> None:
    provider = _provider(bucket, counter)
    ids = [f"exec-{i:04d}" for i in range(1005)]
    semaphore = asyncio.Semaphore(16)

    async def save(execution_id: str) -> None:
        async with semaphore:
            await provider.save_checkpoint(execution_id, 0, b"")

    await asyncio.gather(*(save(execution_id) for execution_id in ids))
    counter.reset()
    assert [info.execution_id async for info in provider.iter_executions()] == ids
    assert counter.sent == {"ListObjectsV2": 2}, "pages of 1,000, resumed after the cursor"
    await provider.close()


@pytest.mark.asyncio
async def test_an_existing_blob_is_not_uploaded_again(
    bucket: str,
    counter: RequestCounter,
) -> None:
    provider = _provider(bucket, counter, multipart_threshold="5MiB")
    small = os.urandom(20_000)
    large = os.urandom(6 * 1024 * 1024)
    await provider.put_blob(RUN, small)
    counter.reset()
    assert await provider._put_blob(RUN, blob_digest(small), provider.envelope.wrap(small)) is False
    assert counter.sent == {"HeadObject": 1}
    counter.reset()
    digest = await provider.put_blob(RUN, large)
    assert counter.sent["UploadPart"] == 2
    assert counter.sent["CompleteMultipartUpload"] == 1
    counter.reset()
    await provider.put_blob(RUN, large)
    assert counter.sent == {"HeadObject": 1}
    assert await provider.get_blob(RUN, digest) == large
    await provider.close()


@pytest.mark.asyncio
async def test_large_checkpoints_use_conditional_multipart_uploads(
    bucket: str,
    counter: RequestCounter,
) -> None:
    provider = _provider(bucket, counter, multipart_threshold="5MiB")
    data = os.urandom(11 * 1024 * 1024)
    await provider.save_checkpoint(RUN, 0, b"warm up")
    counter.reset()
    await provider.save_checkpoint(RUN, 1, data)
    assert counter.sent["UploadPart"] == 3
    assert counter.sent["CompleteMultipartUpload"] == 1
    with pytest.raises(AlreadyExistsError):
        await provider.save_checkpoint(RUN, 1, data)
    assert (await provider.load_checkpoint(RUN, 1)).data == data
    await provider.close()


@pytest.mark.asyncio
async def test_latest_is_found_below_a_stale_head_hint(bucket: str) -> None:
    """Deleting checkpoints above the head hint: the latest is searched further down."""
    provider = _provider(bucket)
    for seq in range(70):
        await provider.save_checkpoint(RUN, seq, b"%d" % seq)
    await provider.close()  # the head hint now says 69 (or more)
    for seq in range(69, 2, -1):
        assert await provider.delete_checkpoint(RUN, seq)
    reader = _provider(bucket)
    latest = await reader.load_latest_checkpoint(RUN)
    assert latest is not None
    assert (latest.seq, latest.data) == (2, b"2")
    await reader.close()
    await provider.close()


# ======================================================= options and setup


@pytest.mark.asyncio
async def test_storage_class_and_encryption_apply_to_data_objects(
    moto_s3: MotoS3,
    bucket: str,
    backdoor: S3Backdoor,
) -> None:
    provider = _provider(bucket, storage_class="STANDARD_IA", sse="AES256")
    lease = await provider.claim(RUN, "worker-a", ttl=LONG)
    await provider.save_checkpoint(RUN, 0, b"x", lease=lease)
    await provider.close()
    data = moto_s3.client.head_object(Bucket=bucket, Key=backdoor.checkpoint_key(RUN, 0))
    assert data.get("StorageClass") == "STANDARD_IA"
    assert data.get("ServerSideEncryption") == "AES256"
    lease_object = moto_s3.client.head_object(
        Bucket=bucket, Key=f"{PREFIX}/executions/{RUN}!/lease"
    )
    assert lease_object.get("StorageClass", "STANDARD") == "STANDARD"
    assert lease_object.get("ServerSideEncryption") == "AES256"


@pytest.mark.asyncio
async def test_the_endpoint_option_overrides_the_environment(
    bucket: str,
    moto_s3: MotoS3,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{_closed_port()}")
    provider = S3Provider.from_url(f"s3://{bucket}/{PREFIX}", {"endpoint_url": moto_s3.endpoint})
    await provider.save_checkpoint(RUN, 0, b"x")
    assert (await provider.load_checkpoint(RUN, 0)).data == b"x"
    await provider.close()


def test_unknown_and_invalid_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown option 'regoin'.*Did you mean 'region'"):
        S3Provider.from_url("s3://bucket", {"regoin": "eu-west-1"})
    bad: list[dict[str, Any]] = [
        {"addressing_style": "diagonal"},
        {"sse": "rot13"},
        {"kms_key_id": "k"},
        {"max_attempts": 0},
        {"multipart_threshold": "1MiB"},
        {"storage_class": "GLACIER"},
        {"connect_timeout": "soon"},
        {"region": 5},
    ]
    for options in bad:
        with pytest.raises(ConfigError):
            S3Provider.from_url("s3://bucket", options)
    for url in (
        "s3://",
        "s3:///prefix",
        "s3://b?x=1",
        "s3://user:pw@bucket/p",
        "s3://bucket:9000/p",
        "file:///tmp",
        "s3://Bad_Bucket!",
    ):
        with pytest.raises(ConfigError):
            S3Provider.from_url(url, {})


@pytest.mark.asyncio
async def test_from_url_does_no_io_and_close_without_use_is_fine() -> None:
    provider = S3Provider.from_url(
        "s3://never-contacted/p",
        {
            "endpoint_url": f"http://127.0.0.1:{_closed_port()}",
            "region": "eu-west-1",
            "sse": "aws:kms",
            "kms_key_id": "alias/durably",
            "multipart_threshold": "64MiB",
        },
    )
    assert provider.describe().startswith("s3://never-contacted/p")
    await provider.close()


# ================================================================= errors


@pytest.mark.asyncio
async def test_a_missing_bucket_is_store_unavailable_and_named(moto_s3: MotoS3) -> None:
    provider = _provider("no-such-bucket-for-durably")
    with pytest.raises(StoreUnavailableError, match=r"no-such-bucket-for-durably.*does not exist"):
        await provider.save_checkpoint(RUN, 0, b"x")
    with pytest.raises(StoreUnavailableError, match="no-such-bucket-for-durably"):
        await provider.list_checkpoints(RUN)
    await provider.close()


@pytest.mark.asyncio
async def test_a_closed_port_is_store_unavailable_and_names_the_endpoint() -> None:
    port = _closed_port()
    provider = _provider(
        "some-bucket", endpoint_url=f"http://127.0.0.1:{port}", connect_timeout=0.5, max_attempts=1
    )
    with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}"):
        await provider.load_latest_checkpoint(RUN)
    await provider.close()


def _no_conditions(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
    """A server that ignores If-None-Match / If-Match: every PUT succeeds."""
    if method == "PUT":
        return ok_put(body)
    if method == "DELETE":
        return Reply(204)
    return error(404, "NoSuchKey")


@pytest.mark.asyncio
async def test_a_server_without_conditional_writes_is_refused() -> None:
    with fake_s3(_no_conditions) as server:
        provider = _provider("bucket", endpoint_url=server.endpoint, max_attempts=1)
        with pytest.raises(StoreError, match=r"accepted If-None-Match.*conditional writes"):
            await provider.save_checkpoint(RUN, 0, b"x")
        await provider.close()
    assert not any(path.endswith("/00000000000000000000") for _m, path, _h in server.requests)


@pytest.mark.asyncio
async def test_a_server_that_rejects_conditional_headers_is_refused() -> None:
    def script(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if method == "PUT" and "if-none-match" in headers:
            return error(
                501,
                "NotImplemented",
                "A header you provided implies functionality that is not implemented",
            )
        return _no_conditions(method, path, headers, body)

    with fake_s3(script) as server:
        provider = _provider("bucket", endpoint_url=server.endpoint, max_attempts=1)
        with pytest.raises(StoreError, match="If-None-Match and If-Match"):
            await provider.claim(RUN, "worker-a", ttl=60)
        await provider.close()


@pytest.mark.asyncio
async def test_throttling_is_retried_then_reported() -> None:
    calls = {"n": 0}

    def script(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        calls["n"] += 1
        if calls["n"] <= 1:
            return error(503, "SlowDown", "Please reduce your request rate.")
        return error(404, "NoSuchKey")

    with fake_s3(script) as server:
        provider = _provider("bucket", endpoint_url=server.endpoint, max_attempts=2)
        assert await provider.get_lease(RUN) is None, "the second attempt got through"
        assert calls["n"] == 2
        calls["n"] = -100  # from now on: throttled for good
        with pytest.raises(StoreUnavailableError, match="SlowDown"):
            await provider.get_lease(RUN)
        assert calls["n"] == -98, "two attempts, then the error"
        await provider.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("reply", "pattern"),
    [
        (error(403, "AccessDenied", "Access Denied"), "IAM policy"),
        (
            error(400, "AuthorizationHeaderMalformed", "wrong region", Region="eu-west-1"),
            "region eu-west-1",
        ),
        (
            Reply(
                301,
                error(
                    301,
                    "PermanentRedirect",
                    "use the right endpoint",
                    Endpoint="bucket.s3.eu-west-1.amazonaws.com",
                ).body,
                {"x-amz-bucket-region": "eu-west-1", "Content-Type": "application/xml"},
            ),
            "not served by.*eu-west-1",
        ),
        (error(404, "NoSuchBucket", "The specified bucket does not exist"), "does not exist"),
    ],
)
async def test_access_and_region_errors_are_store_unavailable(reply: Reply, pattern: str) -> None:
    with fake_s3(lambda *_: reply) as server:
        provider = _provider("bucket", endpoint_url=server.endpoint, max_attempts=1)
        with pytest.raises(StoreUnavailableError, match=pattern):
            await provider.load_latest_checkpoint(RUN)
        await provider.close()


@pytest.mark.asyncio
async def test_missing_credentials_are_store_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with fake_s3(lambda *_: error(404, "NoSuchKey")) as server:
        provider = _provider("bucket", endpoint_url=server.endpoint, max_attempts=1)
        with pytest.raises(StoreUnavailableError, match="no usable AWS credentials"):
            await provider.get_lease(RUN)
        await provider.close()
    assert server.requests == [], "nothing is sent without credentials"


@pytest.mark.asyncio
async def test_a_body_cut_short_is_retried_then_corrupt() -> None:
    gets = {"n": 0}

    def script(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if method == "GET" and path.endswith("/checkpoints/00000000000000000000"):
            gets["n"] += 1
            return Reply(
                200,
                b"x" * 50,
                {"ETag": '"abc"', "Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT"},
                content_length=100,
            )
        return error(404, "NoSuchKey")

    with fake_s3(script) as server:
        provider = _provider("bucket", endpoint_url=server.endpoint, max_attempts=1)
        with pytest.raises(CorruptObjectError, match="truncated"):
            await provider.load_checkpoint(RUN, 0)
        assert gets["n"] == 3, "read again twice before giving up"
        await provider.close()


@pytest.mark.asyncio
async def test_a_stale_lease_from_a_fresh_instance_is_fenced(bucket: str) -> None:
    provider = _provider(bucket)
    lease = await provider.claim(RUN, "worker-a", ttl=LONG)
    await provider.claim(RUN, "worker-a", ttl=LONG)
    await provider.close()
    fresh = _provider(bucket)
    with pytest.raises(FencedError):
        await fresh.save_checkpoint(RUN, 0, b"x", lease=lease)
    with pytest.raises(FencedError):
        await fresh.save_checkpoint(
            RUN, 0, b"x", lease=Lease(RUN, "worker-a", 99, time.time() + 60)
        )
    assert await _seqs(fresh) == []
    await fresh.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.asyncio
async def test_the_puts_of_a_blob_batch_run_concurrently(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """put_blobs (C33) sends a batch's PUTs concurrently, a bounded number in flight."""
    provider = _provider(bucket)
    await provider.put_blob(RUN, b"first use: connects and probes")
    in_flight = most = 0
    put = provider._s3.put

    async def slow_put(*args: Any, **kwargs: Any) -> Any:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            await asyncio.sleep(0.05)
            return await put(*args, **kwargs)
        finally:
            in_flight -= 1

    monkeypatch.setattr(provider._s3, "put", slow_put)
    payloads = [bytes([i]) * 2000 for i in range(40)]
    batch = {blob_digest(p): p for p in payloads}
    assert await provider.put_blobs(RUN, batch) == dict.fromkeys(batch, True)
    assert 8 <= most <= 16, f"{most} PUTs in flight at once"
    assert await provider.put_blobs(RUN, batch) == dict.fromkeys(batch, False)
    for digest, data in batch.items():
        assert await provider.get_blob(RUN, digest) == data
    await provider.close()
