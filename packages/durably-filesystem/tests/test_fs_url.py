"""from_url parsing, options, and discovery through the ``durably.providers`` entry point."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import durably
from durably._plugins import Hooks
from durably.errors import ConfigError
from durably_filesystem import FilesystemCheckpointProvider, FilesystemProvider


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No durably configuration from the environment or the current directory."""
    for name in list(os.environ):
        if name.startswith("DURABLY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("file://.durably", ".durably"),
        ("file://relative/dir", "relative/dir"),
        ("file://./x", "x"),
        ("FILE://upper", "upper"),
        ("file:///tmp/abs/store", "/tmp/abs/store"),
        ("file:///tmp/with space/x", "/tmp/with space/x"),
    ],
)
def test_from_url_paths(url: str, expected: str, tmp_path: Path) -> None:
    provider = FilesystemProvider.from_url(url, {})
    assert provider.root == (expected if expected.startswith("/") else str(tmp_path / expected))
    assert provider.describe() == f"file://{provider.root}"


def test_from_url_expands_the_home_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert FilesystemProvider.from_url("file://~/stores/x", {}).root == str(
        tmp_path / "home" / "stores" / "x"
    )


@pytest.mark.parametrize(
    "url",
    [
        "file://",
        "s3://bucket/x",
        "/no/scheme",
        "file:/one/slash",
        "file://x?fsync=false",
        "file://x#frag",
        "file://a\x00b",
    ],
)
def test_from_url_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        FilesystemProvider.from_url(url, {})
    assert caught.value.key == "durability.store"


def test_from_url_options(tmp_path: Path) -> None:
    with pytest.warns(durably.DurablyWarning, match="fsync disabled"):
        provider = FilesystemProvider.from_url(
            "file://s", {"fsync": False, "compact_threshold": "4MiB"}
        )
    assert provider.fsync is False
    assert provider.compact_threshold == 4 * 1024 * 1024
    assert (
        FilesystemProvider.from_url("file://s", {"compact_threshold": 123}).compact_threshold == 123
    )


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"fsycn": True}, "durability.file.fsycn"),
        ({"region": "eu"}, "durability.file.region"),
        ({"fsync": "yes"}, "durability.file.fsync"),
        ({"compact_threshold": True}, "durability.file.compact_threshold"),
        ({"compact_threshold": "lots"}, "durability.file.compact_threshold"),
        ({"compact_threshold": -1}, "durability.file.compact_threshold"),
    ],
)
def test_from_url_rejects_bad_options(options: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        FilesystemProvider.from_url("file://s", options)
    assert caught.value.key == key
    assert key in str(caught.value)


def test_from_url_does_no_io(tmp_path: Path) -> None:
    provider = FilesystemProvider.from_url(f"file://{tmp_path}/lazy/store", {})
    assert not (tmp_path / "lazy").exists()
    assert provider.root == str(tmp_path / "lazy" / "store")


def test_the_default_store_is_dot_durably_in_the_current_directory(tmp_path: Path) -> None:
    assert FilesystemProvider().root == str(tmp_path / ".durably")
    assert FilesystemCheckpointProvider is FilesystemProvider
    assert FilesystemCheckpointProvider().root == str(tmp_path / ".durably")


@pytest.mark.asyncio
async def test_the_seed_api_writes_into_dot_durably(tmp_path: Path) -> None:
    async with FilesystemCheckpointProvider() as provider:
        await provider.save_checkpoint("run-1", 0, b"hello")
    assert (tmp_path / ".durably" / "executions" / "run-1" / "log").is_file()
    async with FilesystemProvider(".durably") as provider:
        assert (await provider.load_checkpoint("run-1", 0)).data == b"hello"


@pytest.mark.asyncio
@pytest.mark.parametrize("form", ["url", "bare path", "default"])
async def test_open_store_finds_the_provider_through_its_entry_point(
    tmp_path: Path,
    form: str,
) -> None:
    hooks = Hooks()  # a fresh registry: discovery happens now, from the entry points
    factory = hooks.provider_factory("file")
    assert factory == FilesystemProvider.from_url
    url = {"url": f"file://{tmp_path}/a", "bare path": str(tmp_path / "a"), "default": None}[form]
    store = durably.open_store(url)
    try:
        assert type(store) is FilesystemProvider
        expected = tmp_path / (".durably" if form == "default" else "a")
        assert store.describe() == f"file://{expected}"
        await store.save_checkpoint("run-1", 0, b"via open_store")
        assert (await store.load_checkpoint("run-1", 0)).data == b"via open_store"
        assert (expected / "executions" / "run-1" / "log").is_file()
    finally:
        await store.close()


def test_open_store_passes_the_file_table_and_rejects_unknown_keys(tmp_path: Path) -> None:
    (tmp_path / "durably.toml").write_text(
        '[durability]\nstore = "file://custom"\n[durability.file]\ncompact_threshold = "2MiB"\n'
    )
    store = durably.open_store()
    assert isinstance(store, FilesystemProvider)
    assert store.root == str(tmp_path / "custom")
    assert store.compact_threshold == 2 * 1024 * 1024
    (tmp_path / "durably.toml").write_text(
        '[durability]\nstore = "file://custom"\n[durability.file]\nfsnyc = false\n'
    )
    with pytest.raises(ConfigError, match=r"durability\.file\.fsnyc"):
        durably.open_store()
