"""Secrets never reach a message or a log line."""

from __future__ import annotations

import logging

import pytest

from durably._redact import RedactingFilter, redact, redact_url
from durably.cli import main


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("postgresql://app:hunter22@db:5432/x", "hunter22", "postgresql://app:***@db:5432/x"),
        ("http://user:pw%40x@proxy/v1 failed", "pw%40x", "http://user:***@proxy/v1 failed"),
        (
            "https://ghp_tokentoken1234@github.com/x",
            "ghp_tokentoken1234",
            "https://***@github.com/x",
        ),
        (
            "Authorization: Bearer sk-abcdefgh12345678\r\nHost: x",
            "sk-abcdefgh",
            "Authorization: ***\r\nHost: x",
        ),
        (
            '{"headers": {"authorization": "Bearer abc.def.ghi"}}',
            "abc.def",
            '"authorization": "***"',
        ),
        ('{"error": "bad key", "api_key": "k-12345678"}', "k-12345678", '"api_key": "***"'),
        ("x-api-key: 0123456789abcdef", "0123456789abcdef", "x-api-key: ***"),
        ("echo: bearer AbCdEf123456", "AbCdEf123456", "bearer ***"),
        ("key sk-ant-0123456789abcdef rejected", "0123456789abcdef", "key sk-ant-*** rejected"),
        ("?password=s3cr3t&user=a", "s3cr3t", "password=***&user=a"),
    ],
)
def test_secrets_are_redacted(text: str, secret: str, kept: str) -> None:
    out = redact(text)
    assert secret not in out
    assert kept in out


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://app@db:5432/x (schema durably)",
        "password authentication failed for user 'app'",
        "the response used max_tokens: 500 of 4096",
        "unexpected token in line 3",
        "checkpoint 7 is missing",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact(text) == text


def test_known_secrets_are_removed_anywhere() -> None:
    assert redact("it said my-own-key back", ["my-own-key", None, "ab"]) == "it said *** back"
    assert redact_url("redis://:pw123@h:6379/0") == "redis://:***@h:6379/0"


def test_log_records_are_redacted() -> None:
    record = logging.LogRecord(
        "durably.worker",
        logging.ERROR,
        __file__,
        1,
        "could not reach %s",
        ("http://u:topsecret@h/v1",),
        None,
    )
    assert RedactingFilter().filter(record)
    assert "topsecret" not in record.getMessage()


def test_the_command_never_prints_a_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import durably.cli
    from durably.errors import DurablyError, StoreUnavailableError

    code = main(["ls", "--store", "nosuchscheme://admin:topsecret@example.invalid/x"])
    assert code == 2
    assert "topsecret" not in capsys.readouterr().err
    for error in (
        StoreUnavailableError("cannot reach postgresql://u:topsecret@h/db"),
        DurablyError("server said: Authorization: Bearer topsecret-token-1"),
    ):

        async def fail(args: object, error: Exception = error) -> int:
            logging.getLogger("durably.test").warning("while failing: %s", error)
            raise error

        monkeypatch.setattr(durably.cli, "_ls", fail)
        assert main(["ls"]) in (1, 2)
        err = capsys.readouterr().err
        assert "durably: " in err
        assert "topsecret" not in err
