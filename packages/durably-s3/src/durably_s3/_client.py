"""A thin async S3 client: the requests the provider makes, with errors made typed.

Every botocore failure leaves here as a :mod:`durably.errors` exception (``raise ...
from exc``), except the outcomes the provider decides about itself: a failed
precondition (:class:`Precondition`) and "not modified" (``NOT_MODIFIED``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    IncompleteReadError,
    ResponseStreamingError,
)
from botocore.loaders import Loader, create_loader

from durably.errors import CorruptObjectError, StoreError, StoreUnavailableError
from durably_s3._errors import CONDITIONAL_WRITES_HELP, map_error
from durably_s3._options import S3Options

__all__ = [
    "CONDITIONAL_WRITES_HELP",
    "NOT_MODIFIED",
    "Listing",
    "ObjectInfo",
    "Precondition",
    "S3Client",
    "new_session",
]

T = TypeVar("T")


class Precondition(Exception):
    """A conditional request failed: 412, or 404 for If-Match on a missing object."""


class _NotModified:
    def __repr__(self) -> str:
        return "NOT_MODIFIED"


NOT_MODIFIED = _NotModified()

_CONFLICT_ATTEMPTS = 6
_RETRY_READS = 2
_DELETE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """An object's headers (HEAD, or the headers of a GET)."""

    key: str
    etag: str
    size: int
    metadata: dict[str, str]
    last_modified: float
    version_id: str | None = None


@dataclass(frozen=True, slots=True)
class Listed:
    """One key of a listing."""

    key: str
    size: int
    etag: str
    last_modified: float


@dataclass(frozen=True, slots=True)
class Listing:
    """One page of ListObjectsV2."""

    objects: list[Listed]
    prefixes: list[str]
    truncated: bool
    token: str | None


_loader: Loader | None = None


def new_session(profile: str | None = None) -> AioSession:
    """A new aiobotocore session (its own credentials chain) sharing parsed service models.

    Loading and parsing the S3 service model costs tens of milliseconds per session;
    the loader only caches read-only data files, so sessions can share it.
    """
    global _loader
    if _loader is None:
        _loader = create_loader()
    session = AioSession(profile=profile)
    session.register_component("data_loader", _loader)
    return session


def _etag(value: str | None) -> str:
    return (value or "").strip('"')


def _quoted(etag: str) -> str:
    return f'"{etag}"'


def _safe_url(url: str | None) -> str | None:
    """``url`` without user info (never print credentials)."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


class S3Client:
    """One bucket, one lazily created aiobotocore client.

    Args:
        bucket: The bucket name.
        options: Validated options.
        session: An aiobotocore session to create the client from (default: a new one,
            which reads the standard AWS configuration chain). Tests pass their own to
            register event hooks.
    """

    def __init__(self, bucket: str, options: S3Options, session: AioSession | None = None) -> None:
        self.bucket = bucket
        self.options = options
        self._session = session
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --------------------------------------------------------------- lifecycle

    def describe_endpoint(self) -> str:
        """The endpoint and region, for error messages (no secrets)."""
        endpoint = _safe_url(self.options.endpoint_url)
        region = self.options.region
        if self._client is not None:
            endpoint = _safe_url(self._client.meta.endpoint_url)
            region = self._client.meta.region_name
        return f"endpoint {endpoint or 'resolved by botocore'}, region {region or 'default'}"

    async def client(self) -> Any:
        """The aiobotocore client, created on first use in the running loop."""
        if self._client is not None:
            return self._client
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        async with self._lock:
            if self._client is None:
                opts = self.options
                session = self._session or new_session(opts.profile)
                config = AioConfig(
                    retries={"mode": opts.retry_mode, "total_max_attempts": opts.max_attempts},
                    connect_timeout=opts.connect_timeout,
                    read_timeout=opts.read_timeout,
                    s3={"addressing_style": opts.addressing_style},
                    max_pool_connections=opts.max_connections,
                )
                kwargs: dict[str, Any] = {"config": config}
                if opts.endpoint_url:
                    kwargs["endpoint_url"] = opts.endpoint_url
                if opts.region:
                    kwargs["region_name"] = opts.region
                stack = contextlib.AsyncExitStack()
                try:
                    self._client = await stack.enter_async_context(
                        session.create_client("s3", **kwargs)
                    )
                except BotoCoreError as exc:
                    await stack.aclose()
                    raise self._map(exc, "CreateClient", None) from exc
                except ValueError as exc:  # e.g. a malformed endpoint URL
                    await stack.aclose()
                    raise StoreUnavailableError(
                        f"cannot create an S3 client for bucket {self.bucket!r} "
                        f"({self.describe_endpoint()}): {exc}"
                    ) from exc
                self._stack = stack
        return self._client

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def _map(self, exc: BaseException, op: str, key: str | None) -> Exception:
        return map_error(
            exc,
            op,
            key,
            bucket=self.bucket,
            endpoint=self.describe_endpoint(),
            max_attempts=self.options.max_attempts,
        )

    async def _call(self, op: str, key: str | None, call: Callable[[Any], Awaitable[T]]) -> T:
        client = await self.client()
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                return await call(client)
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = str(error.get("Code", ""))
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code == "PreconditionFailed" or status == 412:
                    raise Precondition(code) from exc
                if code in ("304", "NotModified") or status == 304:
                    raise _NotModifiedSignal from exc
                if code == "ConditionalRequestConflict" or status == 409:
                    # A concurrent conditional write to the same key is in flight: S3 asks
                    # us to retry; after a few tries report it as a lost precondition.
                    if attempt + 1 < _CONFLICT_ATTEMPTS:
                        await asyncio.sleep(random.uniform(0, 0.05 * 2**attempt))
                        continue
                    raise Precondition(code) from exc
                if code in ("NoSuchKey", "NoSuchVersion", "404") or (
                    status == 404 and code != "NoSuchBucket"
                ):
                    raise _Missing from exc
                raise self._map(exc, op, key) from exc
            except (TimeoutError, BotoCoreError) as exc:
                if isinstance(exc, (IncompleteReadError, ResponseStreamingError)):
                    raise
                raise self._map(exc, op, key) from exc
            except aiohttp.ClientPayloadError as exc:  # a body cut short
                raise ResponseStreamingError(error=exc) from exc
            except aiohttp.ClientError as exc:
                raise StoreUnavailableError(
                    f"S3 {op} on s3://{self.bucket}/{key or ''} failed in transit "
                    f"({self.describe_endpoint()}): {type(exc).__name__}: {exc}"
                ) from exc
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ objects

    async def put(
        self,
        key: str,
        body: bytes,
        *,
        metadata: dict[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
        data: bool = True,
    ) -> tuple[str, str | None]:
        """Write an object; return (ETag, VersionId).

        Args:
            if_none_match: Only create (If-None-Match: *).
            if_match: Only replace the object with this ETag.
            data: A checkpoint or blob (gets storage class and server-side encryption);
                small bookkeeping objects stay in STANDARD.

        Raises:
            Precondition: The condition failed (412, or 404 for If-Match).
        """
        extra: dict[str, Any] = {}
        if metadata:
            extra["Metadata"] = metadata
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        if if_match is not None:
            extra["IfMatch"] = _quoted(if_match)
        opts = self.options
        if opts.sse:
            extra["ServerSideEncryption"] = opts.sse
            if opts.kms_key_id:
                extra["SSEKMSKeyId"] = opts.kms_key_id
        if data and opts.storage_class:
            extra["StorageClass"] = opts.storage_class
        if len(body) > opts.multipart_threshold:
            return await self._put_multipart(key, body, extra)

        async def call(client: Any) -> tuple[str, str | None]:
            response = await client.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)
            return _etag(response.get("ETag")), response.get("VersionId")

        try:
            return await self._call("PutObject", key, call)
        except _Missing as exc:
            raise Precondition("NoSuchKey") from exc

    async def _put_multipart(
        self,
        key: str,
        body: bytes,
        extra: dict[str, Any],
    ) -> tuple[str, str | None]:
        conditions = {k: extra.pop(k) for k in ("IfNoneMatch", "IfMatch") if k in extra}
        created = await self._call(
            "CreateMultipartUpload",
            key,
            lambda c: c.create_multipart_upload(Bucket=self.bucket, Key=key, **extra),
        )
        upload_id = created["UploadId"]
        part_size = self.options.multipart_threshold
        chunks = [body[i : i + part_size] for i in range(0, len(body), part_size)]
        semaphore = asyncio.Semaphore(4)

        async def upload(number: int, chunk: bytes) -> dict[str, Any]:
            async with semaphore:
                response = await self._call(
                    "UploadPart",
                    key,
                    lambda c: c.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                    ),
                )
                return {"ETag": response["ETag"], "PartNumber": number}

        try:
            parts = await asyncio.gather(*(upload(i + 1, chunk) for i, chunk in enumerate(chunks)))
            response = await self._call(
                "CompleteMultipartUpload",
                key,
                lambda c: c.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": list(parts)},
                    **conditions,
                ),
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self.abort_upload(key, upload_id)
            raise
        return _etag(response.get("ETag")), response.get("VersionId")

    async def get(
        self,
        key: str,
        *,
        if_none_match: str | None = None,
        byte_range: str | None = None,
    ) -> tuple[ObjectInfo, bytes] | _NotModified | None:
        """Read an object (None if missing, NOT_MODIFIED if its ETag is ``if_none_match``).

        A body shorter than announced is read again, then reported as corrupt.
        """
        extra: dict[str, Any] = {}
        if if_none_match is not None:
            extra["IfNoneMatch"] = _quoted(if_none_match)
        if byte_range is not None:
            extra["Range"] = byte_range

        async def call(client: Any) -> tuple[ObjectInfo, bytes]:
            response = await client.get_object(Bucket=self.bucket, Key=key, **extra)
            async with response["Body"] as stream:
                body = await stream.read()
            length = response.get("ContentLength")
            if length is not None and len(body) != length:
                raise IncompleteReadError(actual_bytes=len(body), expected_bytes=length)
            total = (
                length
                if byte_range is None
                else _total_from_range(response.get("ContentRange"), len(body))
            )
            info = ObjectInfo(
                key=key,
                etag=_etag(response.get("ETag")),
                size=total,
                metadata=dict(response.get("Metadata") or {}),
                last_modified=response["LastModified"].timestamp(),
                version_id=response.get("VersionId"),
            )
            return info, body

        for attempt in range(_RETRY_READS + 1):
            try:
                return await self._call("GetObject", key, call)
            except _Missing:
                return None
            except _NotModifiedSignal:
                return NOT_MODIFIED
            except (IncompleteReadError, ResponseStreamingError) as exc:
                if attempt == _RETRY_READS:
                    raise CorruptObjectError(
                        f"s3://{self.bucket}/{key} kept arriving truncated: {exc}"
                    ) from exc
        raise AssertionError("unreachable")

    async def head(self, key: str) -> ObjectInfo | None:
        """An object's headers, or None if it does not exist."""

        async def call(client: Any) -> ObjectInfo:
            response = await client.head_object(Bucket=self.bucket, Key=key)
            return ObjectInfo(
                key=key,
                etag=_etag(response.get("ETag")),
                size=int(response["ContentLength"]),
                metadata=dict(response.get("Metadata") or {}),
                last_modified=response["LastModified"].timestamp(),
                version_id=response.get("VersionId"),
            )

        try:
            return await self._call("HeadObject", key, call)
        except _Missing:
            return None

    async def delete(
        self, key: str, *, if_match: str | None = None, version_id: str | None = None
    ) -> None:
        """Delete an object (a missing one is fine unless ``if_match`` is given)."""
        extra: dict[str, Any] = {}
        if if_match is not None:
            extra["IfMatch"] = _quoted(if_match)
        if version_id is not None:
            extra["VersionId"] = version_id
        try:
            await self._call(
                "DeleteObject", key, lambda c: c.delete_object(Bucket=self.bucket, Key=key, **extra)
            )
        except _Missing as exc:
            if if_match is not None:
                raise Precondition("NoSuchKey") from exc

    async def delete_many(
        self,
        objects: Iterable[tuple[str, str | None]],
        *,
        versions: bool = False,
    ) -> set[str]:
        """DeleteObjects in batches of 1,000; return the keys S3 reports deleted.

        Args:
            objects: (key, ETag or None) pairs -- or (key, VersionId) with ``versions``.
                An ETag makes that key's delete conditional (S3 evaluates it since 2025;
                servers that do not, ignore it).
        """
        items = list(objects)
        deleted: set[str] = set()
        for start in range(0, len(items), _DELETE_BATCH):
            batch = []
            for key, tag in items[start : start + _DELETE_BATCH]:
                entry: dict[str, str] = {"Key": key}
                if tag is not None:
                    entry["VersionId" if versions else "ETag"] = tag if versions else _quoted(tag)
                batch.append(entry)
            request = {"Objects": batch, "Quiet": False}
            response = await self._call(
                "DeleteObjects", batch[0]["Key"], functools.partial(self._delete_objects, request)
            )
            deleted.update(item["Key"] for item in response.get("Deleted", []))
            for error in response.get("Errors", []):
                if error.get("Code") not in ("PreconditionFailed", "NoSuchKey"):
                    raise StoreError(
                        f"S3 DeleteObjects could not delete s3://{self.bucket}/{error.get('Key')}: "
                        f"{error.get('Code')}: {error.get('Message')}"
                    )
        return deleted

    async def _delete_objects(self, request: dict[str, Any], client: Any) -> Any:
        return await client.delete_objects(Bucket=self.bucket, Delete=request)

    # ----------------------------------------------------------------- listings

    async def list_page(
        self,
        prefix: str,
        *,
        start_after: str | None = None,
        delimiter: str | None = None,
        max_keys: int = 1000,
        token: str | None = None,
    ) -> Listing:
        """One page of ListObjectsV2."""
        extra: dict[str, Any] = {"Prefix": prefix, "MaxKeys": max(1, min(max_keys, 1000))}
        if start_after and not token:
            extra["StartAfter"] = start_after
        if delimiter:
            extra["Delimiter"] = delimiter
        if token:
            extra["ContinuationToken"] = token
        response = await self._call(
            "ListObjectsV2", prefix, lambda c: c.list_objects_v2(Bucket=self.bucket, **extra)
        )
        objects = [
            Listed(
                item["Key"],
                int(item["Size"]),
                _etag(item.get("ETag")),
                item["LastModified"].timestamp(),
            )
            for item in response.get("Contents", [])
        ]
        prefixes = [item["Prefix"] for item in response.get("CommonPrefixes", [])]
        truncated = bool(response.get("IsTruncated"))
        return Listing(
            objects,
            prefixes,
            truncated,
            response.get("NextContinuationToken") if truncated else None,
        )

    async def list_all(
        self, prefix: str, *, start_after: str | None = None, stop_at: str | None = None
    ) -> list[Listed]:
        """Every key under ``prefix`` after ``start_after`` and before ``stop_at``."""
        found: list[Listed] = []
        token: str | None = None
        while True:
            page = await self.list_page(prefix, start_after=start_after, token=token)
            for item in page.objects:
                if stop_at is not None and item.key >= stop_at:
                    return found
                found.append(item)
            if not page.truncated:
                return found
            token = page.token

    async def list_versions(self, prefix: str) -> list[tuple[str, str]]:
        """(key, VersionId) of every version and delete marker under ``prefix``."""
        found: list[tuple[str, str]] = []
        extra: dict[str, Any] = {"Prefix": prefix}
        while True:
            response = await self._call(
                "ListObjectVersions",
                prefix,
                lambda c: c.list_object_versions(Bucket=self.bucket, **extra),
            )
            for item in [*response.get("Versions", []), *response.get("DeleteMarkers", [])]:
                found.append((item["Key"], item["VersionId"]))
            if not response.get("IsTruncated"):
                return found
            extra["KeyMarker"] = response.get("NextKeyMarker")
            extra["VersionIdMarker"] = response.get("NextVersionIdMarker")

    async def abort_uploads(self, prefix: str) -> None:
        """Abort the incomplete multipart uploads under ``prefix``."""
        response = await self._call(
            "ListMultipartUploads",
            prefix,
            lambda c: c.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix),
        )
        for upload in response.get("Uploads", []):
            key, upload_id = upload["Key"], upload["UploadId"]
            with contextlib.suppress(StoreError):
                await self.abort_upload(key, upload_id)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort one multipart upload."""
        await self._call(
            "AbortMultipartUpload",
            key,
            lambda c: c.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id),
        )

    async def versioning(self) -> str | None:
        """The bucket's versioning status: None, "Enabled" or "Suspended"."""
        response = await self._call(
            "GetBucketVersioning", None, lambda c: c.get_bucket_versioning(Bucket=self.bucket)
        )
        status = response.get("Status")
        return str(status) if status else None


class _Missing(Exception):
    """404 for an object (internal)."""


class _NotModifiedSignal(Exception):
    """304 (internal)."""


def _total_from_range(content_range: str | None, fallback: int) -> int:
    """The object size from ``Content-Range: bytes a-b/total``."""
    if content_range and "/" in content_range:
        total = content_range.rpartition("/")[2]
        if total.isdigit():
            return int(total)
    return fallback
