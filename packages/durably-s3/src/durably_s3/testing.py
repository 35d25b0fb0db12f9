"""Raw access to an S3 store, bypassing the provider: for tests only.

:class:`S3Backdoor` implements the conformance suite's ``Backdoor`` protocol
(``durably_conformance.Backdoor``): it reads and damages a store's objects the way bit
rot, a torn upload or an operator could, so tests can check that the provider and the
core notice. It uses its own aiobotocore client (created per call, in the running loop).
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from collections.abc import AsyncIterator
from typing import Any

from durably.errors import NotFoundError
from durably.storage import validate_execution_id
from durably_s3 import _format as fmt
from durably_s3._client import new_session

__all__ = ["S3Backdoor"]


class S3Backdoor:
    """Reads and rewrites a store's raw objects.

    Args:
        bucket: The bucket.
        prefix: The store's key prefix (as given to the provider).
        endpoint_url: The S3 endpoint (None: the standard AWS configuration chain).
        versions: Whether :meth:`locations` reports every object version and delete
            marker (``key@version``) instead of the current keys; use it on buckets with
            versioning, where a "deleted" object lingers as versions.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        versions: bool = False,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.layout = fmt.Layout(self.prefix)
        self.endpoint_url = endpoint_url
        self.versions = versions
        self._session = new_session()

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        """A fresh aiobotocore S3 client."""
        kwargs: dict[str, Any] = {}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        async with self._session.create_client("s3", **kwargs) as client:
            yield client

    # ------------------------------------------------------------------ objects

    async def get_object(self, key: str) -> tuple[bytes, dict[str, str]]:
        """The raw body and S3 user metadata of an object."""
        async with self.client() as client:
            try:
                response = await client.get_object(Bucket=self.bucket, Key=key)
            except client.exceptions.NoSuchKey as exc:
                raise NotFoundError(f"no object s3://{self.bucket}/{key}") from exc
            async with response["Body"] as stream:
                body = await stream.read()
            return body, dict(response.get("Metadata") or {})

    async def put_object(self, key: str, body: bytes, metadata: dict[str, str]) -> None:
        """Replace an object's body, keeping the given user metadata."""
        async with self.client() as client:
            await client.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=metadata)

    def checkpoint_key(self, execution_id: str, seq: int) -> str:
        return self.layout.checkpoint(validate_execution_id(execution_id), seq)

    def blob_key(self, execution_id: str, digest: str) -> str:
        return self.layout.blob(validate_execution_id(execution_id), digest.partition(":")[2])

    async def raw_checkpoint(self, execution_id: str, seq: int) -> bytes:
        """The whole checkpoint object (envelope and the provider's trailer)."""
        return (await self.get_object(self.checkpoint_key(execution_id, seq)))[0]

    # ------------------------------------------------------- Backdoor protocol

    async def read_checkpoint(self, execution_id: str, seq: int) -> bytes:
        """The stored envelope of an existing checkpoint (the trailer stripped)."""
        body, _metadata = await self.get_object(self.checkpoint_key(execution_id, seq))
        length, _nonce, _meta = fmt.decode_trailer(body, f"checkpoint {seq}")
        return body[:length]

    async def write_checkpoint(self, execution_id: str, seq: int, raw: bytes) -> None:
        """Replace a checkpoint's envelope with ``raw``, with a valid trailer and metadata."""
        key = self.checkpoint_key(execution_id, seq)
        body, metadata = await self.get_object(key)
        length, _nonce, _meta = fmt.decode_trailer(body, f"checkpoint {seq}")
        trailer = body[length:]
        # A new nonce keeps "every write changes the version" true for this write too.
        nonce = fmt.new_nonce()
        trailer = trailer[: -fmt.TRAILER_SIZE] + _retrailer(
            trailer[-fmt.TRAILER_SIZE :], trailer[: -fmt.TRAILER_SIZE], nonce
        )
        metadata = {**metadata, fmt.M_WRITE: nonce.hex()}
        await self.put_object(key, raw + trailer, metadata)

    async def corrupt_checkpoint(self, execution_id: str, seq: int) -> None:
        """Flip (XOR 0xFF) the middle byte of the stored object."""
        key = self.checkpoint_key(execution_id, seq)
        body, metadata = await self.get_object(key)
        middle = len(body) // 2
        await self.put_object(
            key, body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :], metadata
        )

    async def truncate_checkpoint(self, execution_id: str, seq: int) -> None:
        """Keep the first half of the stored object."""
        key = self.checkpoint_key(execution_id, seq)
        body, metadata = await self.get_object(key)
        await self.put_object(key, body[: len(body) // 2], metadata)

    async def corrupt_blob(self, execution_id: str, digest: str) -> None:
        """Flip (XOR 0xFF) the middle byte of a stored blob."""
        key = self.blob_key(execution_id, digest)
        body, metadata = await self.get_object(key)
        middle = len(body) // 2
        await self.put_object(
            key, body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :], metadata
        )

    async def locations(self) -> list[str]:
        """Every key of per-execution state under the store's prefix (``key@version`` of
        every version, with ``versions``), relative to the prefix.

        Store-wide bookkeeping is left out: the epoch counter (``epochs``) and the open
        index's ``open-ready`` belong to no execution and stay when every execution is
        deleted.
        """
        start = self.layout.base
        bookkeeping = (self.layout.epochs, self.layout.open_ready)
        found: list[str] = []
        async with self.client() as client:
            if self.versions:
                paginator = client.get_paginator("list_object_versions")
                async for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
                    for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                        if item["Key"] not in bookkeeping:
                            found.append(f"{item['Key'][len(start) :]}@{item['VersionId']}")
            else:
                paginator = client.get_paginator("list_objects_v2")
                async for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
                    found.extend(
                        item["Key"][len(start) :]
                        for item in page.get("Contents", [])
                        if item["Key"] not in bookkeeping
                    )
        return found


def _retrailer(tail: bytes, meta_bytes: bytes, nonce: bytes) -> bytes:
    """The fixed trailer part again, with a new nonce and a matching check."""
    _old_nonce, meta_len, _check, magic = struct.unpack("<16sI8s4s", tail)
    length = struct.pack("<I", meta_len)
    check = hashlib.blake2b(meta_bytes + nonce + length, digest_size=8).digest()
    return struct.pack("<16sI8s4s", nonce, meta_len, check, magic)

    async def add_open_entry(self, execution_id: str) -> None:
        """Leave an open-index marker for the execution, as a crash between its final
        write and the marker's deletion would, written long enough ago (an hour) that
        ``forget_if_finished`` may judge it (C31)."""
        import time

        from durably_s3._open import encode_open_marker

        async with self.client() as client:
            await client.put_object(
                Bucket=self.bucket,
                Key=self.layout.open_entry(execution_id),
                Body=encode_open_marker(0, time.time() - 3600),
            )
