"""Helpers for checking provider options (a ``[durability.<scheme>]`` table).

Every provider validates its own options in ``from_url``; these helpers give the errors
one shape -- the dotted key, what was wrong, and the fix::

    from durably.options import integer_option, unknown_option

    for name, value in options.items():
        key = f"durability.mystore.{name}"
        if name not in KNOWN:
            raise unknown_option(name, KNOWN, key)
        if name == "pool_size":
            value = integer_option(key, value, minimum=1)
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

from durably.errors import ConfigError

__all__ = ["did_you_mean", "integer_option", "number_option", "unknown_option"]


def did_you_mean(name: str, known: Iterable[str], *, what: str = "options") -> str:
    """``"Did you mean 'x'?"`` for a near miss, else the list of known names."""
    names = sorted(known)
    close = difflib.get_close_matches(str(name), names, n=1)
    return f"Did you mean {close[0]!r}?" if close else f"Known {what}: {', '.join(names)}"


def unknown_option(name: str, known: Iterable[str], key: str) -> ConfigError:
    """The error for an option the provider does not know (raise it)."""
    return ConfigError(f"unknown option {name!r}", key=key, fix=did_you_mean(name, known))


def integer_option(key: str, value: Any, *, minimum: int) -> int:
    """``value`` as an int of at least ``minimum`` (a boolean is not an int)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"expected an integer, got {value!r}", key=key)
    if value < minimum:
        raise ConfigError(f"must be at least {minimum}, got {value!r}", key=key)
    return value


def number_option(key: str, value: Any, *, minimum: float, allow_zero: bool = False,
                  what: str = "a number of seconds") -> float:
    """``value`` as a float of at least ``minimum`` (and not 0 unless ``allow_zero``)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or math.isnan(value)):
        raise ConfigError(f"expected {what}, got {value!r}", key=key)
    if value < minimum or (value == 0 and not allow_zero):
        raise ConfigError(f"must be at least {minimum}, got {value!r}", key=key)
    return float(value)
