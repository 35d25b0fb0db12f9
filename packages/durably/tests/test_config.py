"""Configuration sources, precedence and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from durably.config import DEFAULT_STORE, load_config, parse_size
from durably.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "DURABLY_STORE",
        "DURABLY_ENABLED",
        "DURABLY_COMPRESSION_LEVEL",
        "DURABLY_KEEP_LAST",
        "DURABLY_LEASE_TTL",
        "DURABLY_CONFIG",
    ):
        monkeypatch.delenv(var, raising=False)


def test_defaults_without_any_file(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config.store == DEFAULT_STORE == "file://.durably"
    assert config.enabled is True
    assert config.sources == ()


def test_durably_toml(tmp_path: Path) -> None:
    (tmp_path / "durably.toml").write_text(
        '[durability]\nstore = "s3://bucket/runs"\nkeep_last = 5\n'
        'max_checkpoint_size = "8MiB"\n[durability.s3]\nregion = "eu-west-1"\n'
    )
    config = load_config(tmp_path)
    assert config.store == "s3://bucket/runs"
    assert config.keep_last == 5
    assert config.max_checkpoint_size == 8 * 1024 * 1024
    assert config.provider_options() == {"region": "eu-west-1"}


def test_precedence_argument_over_env_over_durably_toml_over_pyproject_over_playbooks(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "playbooks.toml").write_text(
        '[durability]\nstore = "file://from-playbooks"\nkeep_last = 1\nlease_ttl = 7\n'
        "compression_level = 9\n"
    )
    (tmp_path / "pyproject.toml").write_text(
        '[tool.durably]\nstore = "file://from-pyproject"\nkeep_last = 2\nlease_ttl = 8\n'
    )
    (tmp_path / "durably.toml").write_text(
        '[durability]\nstore = "file://from-durably-toml"\nkeep_last = 3\n'
    )
    config = load_config(tmp_path)
    assert (config.store, config.keep_last, config.lease_ttl, config.compression_level) == (
        "file://from-durably-toml",
        3,
        8,
        9,
    )
    monkeypatch.setenv("DURABLY_STORE", "file://from-env")
    assert load_config(tmp_path).store == "file://from-env"
    assert load_config(tmp_path, overrides={"store": "file://from-arg"}).store == "file://from-arg"
    assert load_config(tmp_path, overrides={"store": None}).store == "file://from-env"


def test_provider_tables_merge_key_by_key(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.durably]\nstore="postgresql://db"\n[tool.durably.postgres]\n'
        'schema = "a"\npool_max_size = 4\n'
    )
    (tmp_path / "durably.toml").write_text('[durability.postgres]\nschema = "b"\n')
    assert load_config(tmp_path).provider_options() == {"schema": "b", "pool_max_size": 4}


def test_unknown_key_names_file_key_and_suggests_fix(tmp_path: Path) -> None:
    (tmp_path / "durably.toml").write_text('[durability]\nstroe = "file://x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    message = str(info.value)
    assert "durably.toml" in message
    assert "durability.stroe" in message
    assert "Did you mean 'store'?" in message


def test_wrong_type_is_reported(tmp_path: Path) -> None:
    (tmp_path / "durably.toml").write_text('[durability]\nkeep_last = "many"\n')
    with pytest.raises(ConfigError, match=r"durability\.keep_last.*expected int"):
        load_config(tmp_path)


def test_boolean_is_not_an_int(tmp_path: Path) -> None:
    (tmp_path / "durably.toml").write_text("[durability]\nkeep_last = true\n")
    with pytest.raises(ConfigError, match="boolean"):
        load_config(tmp_path)


def test_bad_choice(tmp_path: Path) -> None:
    (tmp_path / "durably.toml").write_text('[durability]\non_completion = "burn"\n')
    with pytest.raises(ConfigError, match="keep, prune, delete"):
        load_config(tmp_path)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "durably.toml").write_text("[durability\n")
    with pytest.raises(ConfigError, match=r"durably\.toml.*not valid TOML"):
        load_config(tmp_path)


def test_unknown_top_level_table_in_durably_toml(tmp_path: Path) -> None:
    (tmp_path / "durably.toml").write_text("[durabilty]\nstore='x'\n")
    with pytest.raises(ConfigError, match="unknown table"):
        load_config(tmp_path)


def test_bad_env_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLY_ENABLED", "perhaps")
    with pytest.raises(ConfigError, match="DURABLY_ENABLED"):
        load_config(tmp_path)
    monkeypatch.setenv("DURABLY_ENABLED", "off")
    assert load_config(tmp_path).enabled is False


def test_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path, config_file=tmp_path / "nope.toml")


def test_empty_store_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="store URL is empty"):
        load_config(tmp_path, overrides={"store": " "})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0),
        (1024, 1024),
        ("64MiB", 64 * 1024**2),
        ("10 MB", 10_000_000),
        ("1.5KiB", 1536),
    ],
)
def test_parse_size(text: int | str, expected: int) -> None:
    assert parse_size(text) == expected


def test_parse_size_rejects_garbage() -> None:
    with pytest.raises(ConfigError, match="64MiB"):
        parse_size("lots")
