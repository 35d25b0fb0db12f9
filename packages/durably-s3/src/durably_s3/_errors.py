"""Turning botocore errors into durably's typed errors, with what to do about them."""

from __future__ import annotations

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectionError,
    CredentialRetrievalError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from durably.errors import StoreError, StoreUnavailableError

__all__ = ["CONDITIONAL_WRITES_HELP", "map_error"]

CONDITIONAL_WRITES_HELP = (
    "durably's S3 provider needs S3 conditional writes (If-None-Match and If-Match on "
    "PutObject), which AWS S3 supports since 2024, as do MinIO, Cloudflare R2 and recent "
    "Ceph RGW; upgrade the server or use another store"
)


def map_error(
    exc: BaseException, op: str, key: str | None, *, bucket: str, endpoint: str, max_attempts: int
) -> Exception:
    """The durably error of a failed S3 request ``op`` on ``key`` (None: the bucket).

    Args:
        exc: The botocore error.
        op: The request (``"PutObject"``).
        key: The object's key, if the request had one.
        bucket: The bucket.
        endpoint: The endpoint and region, as described to the user (no secrets).
        max_attempts: The attempts botocore made (for throttling and server errors).
    """
    where = f"s3://{bucket}/{key}" if key else f"bucket {bucket!r}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = str(error.get("Message", "")) or code
        if code == "NoSuchBucket":
            return StoreUnavailableError(
                f"S3 bucket {bucket!r} does not exist ({endpoint}). Create it, or fix "
                "the bucket name in durability.store"
            )
        if (
            code
            in (
                "AccessDenied",
                "AllAccessDisabled",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "ExpiredToken",
                "InvalidToken",
                "AccountProblem",
                "InvalidSecurity",
            )
            or status == 403
        ):
            return StoreUnavailableError(
                f"S3 refused {op} on {where} ({code}: {message}; {endpoint}). Check the "
                "credentials and that their IAM policy allows s3:GetObject, s3:PutObject, "
                "s3:DeleteObject and s3:ListBucket on the bucket and prefix (see "
                "docs/providers/s3.md for a minimal policy)"
            )
        if code in (
            "PermanentRedirect",
            "TemporaryRedirect",
            "AuthorizationHeaderMalformed",
            "IllegalLocationConstraintException",
            "InvalidRegion",
        ) or status in (301, 307):
            bucket_region = error.get("Region") or exc.response.get("ResponseMetadata", {}).get(
                "HTTPHeaders", {}
            ).get("x-amz-bucket-region")
            hint = f"; the bucket is in region {bucket_region}" if bucket_region else ""
            return StoreUnavailableError(
                f"bucket {bucket!r} is not served by {endpoint} ({code}{hint}). Set "
                "region (or endpoint_url) in [durability.s3] to the bucket's"
            )
        if code == "NotImplemented" or status == 501:
            return StoreError(
                f"S3 {op} on {where} is not implemented by the server ({message}; "
                f"{endpoint}). {CONDITIONAL_WRITES_HELP}"
            )
        if (
            code
            in (
                "SlowDown",
                "ServiceUnavailable",
                "InternalError",
                "RequestTimeout",
                "Throttling",
                "ThrottlingException",
            )
            or (status or 0) >= 500
        ):
            return StoreUnavailableError(
                f"S3 {op} on {where} kept failing after {max_attempts} attempts "
                f"with backoff ({code}: {message}; {endpoint})"
            )
        if code == "InvalidObjectState":
            return StoreError(
                f"{where} is archived ({message}); durably needs objects it can read at once: "
                "do not transition its objects to GLACIER or DEEP_ARCHIVE"
            )
        return StoreError(f"S3 {op} on {where} failed: {code}: {message} ({endpoint})")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        return StoreUnavailableError(
            f"no usable AWS credentials for bucket {bucket!r} ({exc}). Set "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile (option 'profile' or "
            "AWS_PROFILE) or an instance/task role"
        )
    if isinstance(exc, NoRegionError):
        return StoreUnavailableError(
            f"no AWS region for bucket {bucket!r}: set region in [durability.s3] or "
            "AWS_DEFAULT_REGION"
        )
    if isinstance(exc, (ConnectionError, ConnectionClosedError, ReadTimeoutError)):
        return StoreUnavailableError(
            f"cannot reach S3 for bucket {bucket!r} ({endpoint}): {exc}. Check "
            "endpoint_url / AWS_ENDPOINT_URL_S3, the region and the network"
        )
    return StoreError(f"S3 {op} on {where} failed: {type(exc).__name__}: {exc}")
