"""One parse cache for the whole test session (``DURABLY_PLAYBOOKS_CACHE``), apart from the
user's: each program text is parsed by Playbooks once per session and release, and the
commands the tests start find it (:func:`helpers.durably` passes the variable on)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from durably_playbooks._parsecache import CACHE_ENV


@pytest.fixture(autouse=True, scope="session")
def _parse_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("parse-cache"))
    yield
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before
