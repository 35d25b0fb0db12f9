"""Plugin discovery, provider lookup by scheme, and the hook facade."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from durably import hookimpl
from durably._plugins import Hooks, open_provider, reset_hooks, scheme_of
from durably.errors import ConfigError, ProviderNotFoundError


def test_scheme_of() -> None:
    assert scheme_of("file://.durably") == "file"
    assert scheme_of("S3://bucket/x") == "s3"
    assert scheme_of("postgresql://u@h/db") == "postgresql"
    assert scheme_of("relative/dir") == "file"
    with pytest.raises(ConfigError):
        scheme_of("")


def test_missing_known_scheme_says_which_package_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from durably import _plugins

    monkeypatch.setitem(_plugins.KNOWN_PACKAGES, "gs", "'durably[gcs]'")
    hooks = Hooks(load_entrypoints=False)
    with pytest.raises(ProviderNotFoundError, match=r"pip install 'durably\[gcs\]'"):
        hooks.provider_factory("gs")


def test_missing_unknown_scheme_explains_the_entry_point_group() -> None:
    hooks = Hooks(load_entrypoints=False)
    with pytest.raises(ProviderNotFoundError, match=r"durably\.providers"):
        open_provider("gopher://x", hooks=hooks)


class _Registers:
    def __init__(self, calls: list[tuple[str, Mapping[str, Any]]]) -> None:
        self.calls = calls

    @hookimpl
    def durably_register_providers(self) -> Mapping[str, Any]:
        def factory(url: str, options: Mapping[str, Any]) -> Any:
            self.calls.append((url, options))
            return "a provider"

        return {"mem": factory}


def test_providers_registered_by_hook_are_found() -> None:
    calls: list[tuple[str, Mapping[str, Any]]] = []
    hooks = Hooks(load_entrypoints=False)
    hooks.register(_Registers(calls))
    assert open_provider("mem://x", {"a": 1}, hooks=hooks) == "a provider"
    assert calls == [("mem://x", {"a": 1})]


def test_unknown_hook_in_a_plugin_is_refused() -> None:
    class Typo:
        @hookimpl
        def durably_befor_checkpoint(self) -> None: ...

    hooks = Hooks(load_entrypoints=False)
    with pytest.raises(Exception, match="unknown hook"):
        hooks.register(Typo())


def test_after_checkpoint_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Boom:
        @hookimpl
        def durably_after_checkpoint(self, execution_id: str) -> None:
            raise RuntimeError("metrics down")

    hooks = Hooks(load_entrypoints=False)
    hooks.register(Boom())
    hooks.after_checkpoint("run", info=None)  # type: ignore[arg-type]
    assert "metrics down" in caplog.text


def test_before_checkpoint_errors_propagate() -> None:
    class Veto:
        @hookimpl
        def durably_before_checkpoint(self, seq: int) -> None:
            raise PermissionError(f"no checkpoint {seq}")

    hooks = Hooks(load_entrypoints=False)
    hooks.register(Veto())
    with pytest.raises(PermissionError, match="no checkpoint 4"):
        hooks.before_checkpoint("run", 4, {})


def test_value_codec_hooks_first_result_wins() -> None:
    class A:
        @hookimpl
        def durably_encode_value(self, value: Any) -> tuple[str, Any] | None:
            return ("a.Thing", 1) if value == "thing" else None

    hooks = Hooks(load_entrypoints=False)
    assert not hooks.has_value_codecs
    hooks.register(A())
    assert hooks.has_value_codecs
    assert hooks.encode_value("thing") == ("a.Thing", 1)
    assert hooks.encode_value("other") is None


def test_filesystem_provider_is_discovered_through_the_entry_point() -> None:
    reset_hooks()
    provider = open_provider("file:///tmp/durably-test-discovery")
    assert type(provider).scheme == "file"
    assert type(provider).__module__.startswith("durably_filesystem")


def test_disabled_provider_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLY_DISABLE_PLUGINS", "file")
    with pytest.raises(ProviderNotFoundError, match="disabled by DURABLY_DISABLE_PLUGINS") as err:
        Hooks().provider_factory("file")
    # The fix names the variable, not a package to install: the provider is installed.
    assert err.value.fix == (
        "Remove 'file' from the DURABLY_DISABLE_PLUGINS environment variable to enable it"
    )
