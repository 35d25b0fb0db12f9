"""The supported playbooks versions: the installed one is among them, the package's pin is
the same range, and a program loaded with another version is refused with a clear error.

The nox session ``playbooks`` runs this suite once per supported version (the lower bound
installed over the lock's); it names the version it installed in
``DURABLY_PLAYBOOKS_EXPECTED``, so that a session that silently ran another one fails.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from durably.errors import ConfigError
from durably.runner import Program
from durably_playbooks import UnsupportedPlaybooksFeature, _pb

from helpers import HERE, PROGRAMS


def test_the_installed_version_is_supported() -> None:
    installed = _pb.playbooks_version()
    assert installed in _pb.SUPPORTED
    assert _pb.check_version() == installed
    expected = os.environ.get("DURABLY_PLAYBOOKS_EXPECTED")
    if expected:
        assert installed == expected


def test_the_pin_is_the_supported_range() -> None:
    project = tomllib.loads((HERE.parent / "pyproject.toml").read_text())
    pins = [Requirement(d) for d in project["project"]["dependencies"]]
    (pin,) = [r for r in pins if r.name == "playbooks"]
    assert pin == Requirement(_pb.REQUIREMENT)
    for version in _pb.SUPPORTED:
        assert pin.specifier.contains(version)
    # The releases around the range are outside it (0.7.2 exists; 0.7.5 is not tested).
    for version in ("0.7.2", "0.7.5", "0.8.0"):
        assert not pin.specifier.contains(version)


@pytest.mark.parametrize("version", ["0.7.2", "0.7.5", "0.8.0"])
def test_another_version_is_refused_with_a_clear_error(
    version: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_pb, "playbooks_version", lambda: version)
    with pytest.raises(UnsupportedPlaybooksFeature) as raised:
        _pb.check_version()
    message = str(raised.value)
    assert f"playbooks {version} is installed" in message
    assert "0.7.3 and 0.7.4" in message
    assert _pb.REQUIREMENT in message
    assert raised.value.feature == "playbooks-version"
    # Loading a program for a new run says the same (a ConfigError: `durably run` exits 2).
    with pytest.raises(ConfigError, match=f"playbooks {version} is installed"):
        Program.load(PROGRAMS / "library.pbasm")
