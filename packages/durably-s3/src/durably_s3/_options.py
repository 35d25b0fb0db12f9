"""The ``s3://bucket/prefix`` URL and the ``[durability.s3]`` options."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from durably.config import parse_size
from durably.errors import ConfigError
from durably.options import choice_option, option_items

__all__ = ["S3Options", "parse_options", "parse_url"]

MIB = 1024 * 1024
MIN_PART = 5 * MIB
"""S3's smallest multipart part (all parts but the last)."""

STORAGE_CLASSES = frozenset(
    {
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER_IR",
        "EXPRESS_ONEZONE",
        "OUTPOSTS",
        "SNOW",
    }
)
"""Storage classes whose objects can be read at once (GLACIER and DEEP_ARCHIVE cannot)."""

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-_]{1,254}")


@dataclass(frozen=True, slots=True)
class S3Options:
    """Validated ``[durability.s3]`` options. ``None`` means "what botocore resolves"."""

    endpoint_url: str | None = None
    """Overrides the endpoint (else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / config / AWS)."""
    region: str | None = None
    profile: str | None = None
    addressing_style: str = "auto"
    storage_class: str | None = None
    """For checkpoints and blobs; leases, heads and markers stay STANDARD (they are tiny)."""
    sse: str | None = None
    kms_key_id: str | None = None
    max_attempts: int = 5
    """Attempts per request, retries with exponential backoff and jitter included."""
    retry_mode: str = "standard"
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    multipart_threshold: int = 16 * MIB
    """Objects larger than this are uploaded in parts of this size (at least 5 MiB)."""
    max_connections: int = 32

    def __post_init__(self) -> None:
        _check_choice("addressing_style", self.addressing_style, ("auto", "path", "virtual"))
        _check_choice("retry_mode", self.retry_mode, ("standard", "adaptive"))
        if self.sse is not None:
            _check_choice("sse", self.sse, ("AES256", "aws:kms"))
        if self.kms_key_id is not None and self.sse != "aws:kms":
            raise ConfigError(
                'kms_key_id needs sse = "aws:kms"',
                key="durability.s3.kms_key_id",
                fix='Add sse = "aws:kms" to [durability.s3]',
            )
        if self.storage_class is not None and self.storage_class not in STORAGE_CLASSES:
            raise ConfigError(
                f"storage class {self.storage_class!r} is not one durably can read back at once",
                key="durability.s3.storage_class",
                fix=f"Use one of {', '.join(sorted(STORAGE_CLASSES))}",
            )
        if self.max_attempts < 1:
            raise ConfigError("must be at least 1", key="durability.s3.max_attempts")
        for name in ("connect_timeout", "read_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    "must be a positive number of seconds", key=f"durability.s3.{name}"
                )
        if self.multipart_threshold < MIN_PART:
            raise ConfigError(
                "must be at least 5 MiB (S3's smallest multipart part)",
                key="durability.s3.multipart_threshold",
            )
        if self.max_connections < 1:
            raise ConfigError("must be at least 1", key="durability.s3.max_connections")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    choice_option(f"durability.s3.{name}", value, choices)


_KINDS: dict[str, str] = {
    "endpoint_url": "str",
    "region": "str",
    "profile": "str",
    "addressing_style": "str",
    "storage_class": "str",
    "sse": "str",
    "kms_key_id": "str",
    "max_attempts": "int",
    "retry_mode": "str",
    "connect_timeout": "float",
    "read_timeout": "float",
    "multipart_threshold": "size",
    "max_connections": "int",
}
assert set(_KINDS) == {f.name for f in fields(S3Options)}


def parse_options(options: Mapping[str, Any] | None) -> S3Options:
    """Validate the ``[durability.s3]`` table.

    Raises:
        ConfigError: An unknown option (named, with a suggestion) or a bad value.
    """
    values: dict[str, Any] = {}
    for name, dotted, value in option_items(options, "durability.s3", _KINDS):
        kind = _KINDS[name]
        if kind == "str":
            if not isinstance(value, str) or not value:
                raise ConfigError(f"expected a non-empty string, got {value!r}", key=dotted)
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"expected an integer, got {value!r}", key=dotted)
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"expected a number of seconds, got {value!r}", key=dotted)
            value = float(value)
        else:
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise ConfigError(
                    f"expected a size, got {value!r}",
                    key=dotted,
                    fix="Use a number of bytes or e.g. '16MiB'",
                )
            value = parse_size(value, key=dotted)
        values[name] = value
    return S3Options(**values)


def parse_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix`` into (bucket, prefix without outer slashes).

    Raises:
        ConfigError: Not an s3:// URL, no or an invalid bucket, a query, fragment, port or
            credentials in the URL.
    """
    fix = "Use s3://BUCKET or s3://BUCKET/PREFIX; put options in [durability.s3]"
    if not isinstance(url, str) or url[:5].lower() != "s3://":
        raise ConfigError(f"{url!r} is not an s3:// URL", key="durability.store", fix=fix)
    parts = urlsplit(url)
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ConfigError("the store URL has a query or fragment", key="durability.store", fix=fix)
    if "@" in parts.netloc or ":" in parts.netloc:
        raise ConfigError(
            "the store URL names a user, password or port; an s3:// URL names only a bucket",
            key="durability.store",
            fix="Set the endpoint with endpoint_url in [durability.s3] or AWS_ENDPOINT_URL_S3, "
            "and credentials the usual AWS way (environment, profile, role)",
        )
    bucket = parts.netloc
    if not bucket:
        raise ConfigError(f"the store URL {url!r} names no bucket", key="durability.store", fix=fix)
    if not _BUCKET_RE.fullmatch(bucket):
        raise ConfigError(
            f"{bucket!r} is not a valid S3 bucket name",
            key="durability.store",
            fix="Bucket names are 3-63 lower-case letters, digits, '.' and '-'",
        )
    prefix = parts.path.strip("/")
    if "//" in prefix or any(ord(c) < 0x20 or c == "\x7f" for c in prefix):
        raise ConfigError(
            f"the key prefix {prefix!r} has an empty segment or control characters",
            key="durability.store",
            fix=fix,
        )
    return bucket, prefix
