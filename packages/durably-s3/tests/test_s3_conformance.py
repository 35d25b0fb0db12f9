"""The conformance suite against a real (moto) S3 server, with and without versioning."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import pytest
from s3_testkit import MotoS3

from durably_conformance import Backdoor, ProviderSuite
from durably_s3 import S3Backdoor, S3Provider

PREFIX = "store/x"


class _S3Suite(ProviderSuite):
    versioning: ClassVar[bool]

    @pytest.fixture
    def bucket(self, moto_s3: MotoS3) -> str:
        return moto_s3.new_bucket(versioning=self.versioning)

    @pytest.fixture
    def make_provider(self, bucket: str) -> Callable[[], S3Provider]:
        # No endpoint option: the endpoint comes from AWS_ENDPOINT_URL_S3 (the standard
        # AWS configuration chain), as it would in production.
        return lambda: S3Provider(bucket, PREFIX)

    @pytest.fixture
    def backdoor(self, bucket: str, moto_s3: MotoS3) -> Backdoor:
        return S3Backdoor(bucket, PREFIX, endpoint_url=moto_s3.endpoint, versions=self.versioning)

    @pytest.fixture
    def store_url(self, bucket: str) -> str:
        return f"s3://{bucket}/{PREFIX}"


_SAME_WITH_VERSIONING = (
    "listing is the same requests with and without versioning (only delete_execution "
    "differs); TestS3Versioned runs this clause, about 40 s of moto's CPU"
)


class TestS3Unversioned(_S3Suite):
    """A bucket without versioning."""

    versioning = False

    @pytest.mark.skip(reason=_SAME_WITH_VERSIONING)
    def test_c04_paging_past_1000_with_default_page_size(self) -> None: ...

    @pytest.mark.skip(reason=_SAME_WITH_VERSIONING)
    def test_c13_paging_past_1000_executions(self) -> None: ...


class TestS3Versioned(_S3Suite):
    """A bucket with versioning enabled (the backdoor sees every version)."""

    versioning = True
