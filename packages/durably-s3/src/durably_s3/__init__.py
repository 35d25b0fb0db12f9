"""durably-s3: the S3 storage provider for durably.

``s3://bucket/prefix`` URLs open an :class:`S3Provider`: one object per checkpoint (the
core's zstd-compressed, checksummed envelope), S3 conditional writes (If-None-Match /
If-Match) for "exactly one writer wins" and for lease fencing, one PUT per checkpoint
in steady state, and a bounded number of requests to find the latest checkpoint. Works
with AWS S3 and S3-compatible stores that support conditional writes (MinIO, Cloudflare
R2, recent Ceph RGW). See ``docs/providers/s3.md``.
"""

from __future__ import annotations

from durably_s3._options import S3Options
from durably_s3._provider import S3Provider
from durably_s3.testing import S3Backdoor

__all__ = ["S3Backdoor", "S3Options", "S3Provider"]
