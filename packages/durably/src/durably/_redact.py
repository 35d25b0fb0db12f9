"""Secrets out of every message and log line: the one home of durably's redaction.

:func:`redact` removes what commonly leaks into error messages: the password (and, for
http(s), a token used as user name) in a URL's user info, ``Authorization`` header values,
bearer tokens, API keys echoed by a server (``"api_key": "..."``, ``x-api-key: ...``,
``sk-...``), and any exact secret the caller knows (the configured API key).

:class:`RedactingFilter` applies it to log records; :func:`redact_logs` installs it on the
handlers that print durably's logs in the ``durably`` command.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["RedactingFilter", "redact", "redact_logs", "redact_url"]

MASK = "***"

_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/@:?#]*)(?::(?P<password>[^\s/@?#]*))?@"
)
_AUTH_HEADER = re.compile(
    r"(?i)(?P<key>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n]+"
)
_KEY_VALUE = re.compile(
    r"(?i)(?P<key>\b(?:x-)?(?:api[-_]?key|access[-_]?token|refresh[-_]?token|id[-_]?token"
    r"|client[-_]?secret|secret[-_]?key|secret|password|passwd|pwd|token)"
    r"[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\"'\s,;&}<>]+)"
)
_BEARER = re.compile(r"(?i)\b(?P<kind>bearer)\s+[A-Za-z0-9._~+/=-]{6,}")
_KNOWN_KEYS = re.compile(
    r"\b(?P<prefix>sk-(?:proj-|ant-)?|xox[abprs]-|gh[pousr]_|AKIA|AIza)[A-Za-z0-9_\-]{8,}"
)


def _userinfo(match: re.Match[str]) -> str:
    scheme, user, password = match["scheme"], match["user"], match["password"]
    if password is not None:
        return f"{scheme}{user}:{MASK}@"
    if scheme.lower().startswith(("http", "ws")) and user:
        return f"{scheme}{MASK}@"  # a token used as the user name
    return match[0]


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with secrets replaced by ``***``.

    Args:
        text: A message, a log line, or a body a server sent back.
        secrets: Exact values to remove wherever they appear (e.g. the API key in use);
            values shorter than 4 characters are ignored (they would mask ordinary text).

    Returns:
        The redacted text (unchanged if it holds nothing secret-looking).
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(_userinfo, text)
    text = _AUTH_HEADER.sub(lambda m: m["key"] + MASK, text)
    text = _KEY_VALUE.sub(lambda m: m["key"] + MASK, text)
    text = _BEARER.sub(lambda m: f"{m['kind']} {MASK}", text)
    return _KNOWN_KEYS.sub(lambda m: m["prefix"] + MASK, text)


def redact_url(url: str) -> str:
    """A URL fit to show: its password (and an http(s) user-name token) replaced."""
    return _USERINFO.sub(_userinfo, url)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's formatted message (and traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's error path
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactingFilter()


def redact_logs() -> None:
    """Redact everything the root logger's handlers (and Python's last-resort handler,
    which prints warnings when nothing is configured) write. Idempotent."""
    handlers = [*logging.getLogger().handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
