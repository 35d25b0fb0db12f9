"""Helpers for checking provider options (a ``[durability.<scheme>]`` table).

Every provider validates its own options in ``from_url``; these helpers give the errors
one shape -- the dotted key, what was wrong, and the fix::

    from durably.options import integer_option, option_items

    for name, key, value in option_items(options, "durability.mystore", KNOWN):
        if name == "pool_size":
            value = integer_option(key, value, minimum=1)

(The helpers live in :mod:`durably._providerkit` with the other shared provider parts.)
"""

from __future__ import annotations

from durably._providerkit import (
    bool_option,
    choice_option,
    did_you_mean,
    integer_option,
    number_option,
    option_items,
    redact_url,
    string_option,
    unknown_option,
)

__all__ = [
    "bool_option",
    "choice_option",
    "did_you_mean",
    "integer_option",
    "number_option",
    "option_items",
    "redact_url",
    "string_option",
    "unknown_option",
]
