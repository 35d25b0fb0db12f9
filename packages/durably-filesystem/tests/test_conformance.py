"""The conformance suite, run against the filesystem provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from durably_conformance import Backdoor, ProviderSuite
from durably_filesystem import FilesystemBackdoor, FilesystemProvider


class TestFilesystemProvider(ProviderSuite):
    @pytest.fixture
    def make_provider(self, tmp_path: Path) -> object:
        return lambda: FilesystemProvider(tmp_path / "store")

    @pytest.fixture
    def backdoor(self, tmp_path: Path) -> Backdoor:
        return FilesystemBackdoor(tmp_path / "store")

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str | None:
        return f"file://{tmp_path / 'store'}"
