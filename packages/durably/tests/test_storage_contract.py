"""Argument validation the base class does for every provider."""

from __future__ import annotations

import pytest

from durably.errors import InvalidExecutionIdError
from durably.storage import blob_digest, validate_execution_id, validate_metadata

HOSTILE = [
    "",
    "../x",
    "..",
    ".",
    "/etc/passwd",
    "a/b",
    "a\\b",
    ".hidden",
    "x\x00y",
    "a" * 129,
    "-rf",
    "é",
    " x",
    "x\n",
]


@pytest.mark.parametrize("bad", HOSTILE)
def test_hostile_execution_ids_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidExecutionIdError, match="invalid execution id"):
        validate_execution_id(bad)


@pytest.mark.parametrize("bad", [None, 3, b"abc"])
def test_non_string_ids_are_rejected(bad: object) -> None:
    with pytest.raises(InvalidExecutionIdError):
        validate_execution_id(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("good", ["a", "run-1", "2026.11.26_x", "A" * 128, "0"])
def test_safe_ids_pass_unchanged(good: str) -> None:
    assert validate_execution_id(good) == good


def test_invalid_id_is_also_a_value_error() -> None:
    with pytest.raises(ValueError):
        validate_execution_id("../x")


def test_metadata_rules() -> None:
    assert validate_metadata({"durably.status": "running", "agents": "2"}) == {
        "durably.status": "running",
        "agents": "2",
    }
    assert validate_metadata(None) == {}
    with pytest.raises(ValueError, match="key"):
        validate_metadata({"Bad Key": "x"})
    with pytest.raises(TypeError):
        validate_metadata({"k": 3})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="limit"):
        validate_metadata({"k": "é" * 2000})


def test_metadata_rules_hold_for_keys_seen_before() -> None:
    """Keys that passed once are not matched again, but every other rule still holds."""
    assert validate_metadata({"durably.kind": "delta"}) == {"durably.kind": "delta"}
    with pytest.raises(TypeError):
        validate_metadata({"durably.kind": 3})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="Unicode"):
        validate_metadata({"durably.kind": "\ud800"})
    assert validate_metadata({"durably.kind": "x" * 2036})  # 12 + 2036 bytes: the limit
    with pytest.raises(ValueError, match="limit"):
        validate_metadata({"durably.kind": "x" * 2037})
    with pytest.raises(ValueError, match="limit"):
        validate_metadata({"durably.kind": "é" * 1100})  # 2,200 bytes of UTF-8

    class Key(str):
        __slots__ = ()

    with pytest.raises(ValueError, match="key"):
        validate_metadata({Key("Bad Key"): "x"})
    assert validate_metadata({Key("durably.kind"): "x"}) == {"durably.kind": "x"}


def test_blob_digest_is_sha256() -> None:
    assert blob_digest(b"") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
