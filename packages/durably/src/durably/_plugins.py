"""Plugin discovery and the typed facade the core calls hooks through."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pluggy

from durably import hookspecs
from durably.errors import ConfigError, ProviderNotFoundError

if TYPE_CHECKING:
    from durably.storage import CheckpointInfo, CheckpointProvider

log = logging.getLogger("durably.plugins")

HOOK_GROUP = "durably"
PROVIDER_GROUP = "durably.providers"
DISABLE_ENV = "DURABLY_DISABLE_PLUGINS"

#: What to install for the schemes we know of.
KNOWN_PACKAGES = {
    "file": "durably-filesystem (it ships with `pip install durably`)",
    "s3": "'durably[s3]'",
    "postgresql": "'durably[postgres]'",
    "postgres": "'durably[postgres]'",
    "redis": "'durably[redis]'",
    "rediss": "'durably[redis]'",
}


def disabled_plugins() -> frozenset[str]:
    """Names listed in ``DURABLY_DISABLE_PLUGINS`` (comma or space separated)."""
    raw = os.environ.get(DISABLE_ENV, "")
    return frozenset(part.strip() for part in raw.replace(",", " ").split() if part.strip())


class Hooks:
    """The typed facade over pluggy through which the core calls every hook.

    One instance per process is returned by :func:`get_hooks`; tests may build their
    own with ``Hooks(load_entrypoints=False)`` and :meth:`register` plugins on it.
    """

    def __init__(self, *, load_entrypoints: bool = True) -> None:
        self.pm = pluggy.PluginManager("durably")
        self.pm.add_hookspecs(hookspecs)
        self._providers: dict[str, Callable[[str, Mapping[str, Any]], CheckpointProvider]] | None
        self._providers = None
        self._skipped: dict[str, str] = {}
        self._implemented_cache: dict[str, bool] = {}
        if load_entrypoints:
            self._load_entrypoints()
        self.pm.check_pending()

    def _load_entrypoints(self) -> None:
        blocked = disabled_plugins()
        for name in blocked:
            self.pm.set_blocked(name)
        for ep in importlib_metadata.entry_points(group=HOOK_GROUP):
            if ep.name in blocked or self.pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not take durably down
                self._skipped[ep.name] = f"{type(exc).__name__}: {exc}"
                log.warning("durably plugin %r skipped: it failed to import (%s)", ep.name, exc)
                continue
            self.pm.register(plugin, name=ep.name)

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object and check that it only implements known hooks."""
        self.pm.register(plugin, name=name)
        self.pm.check_pending()
        self._providers = None
        self._implemented_cache.clear()

    @property
    def skipped(self) -> Mapping[str, str]:
        """Plugins and providers that failed to load, with the reason."""
        return dict(self._skipped)

    # ---------------------------------------------------------------- providers

    def provider_factory(
        self,
        scheme: str,
    ) -> Callable[[str, Mapping[str, Any]], CheckpointProvider]:
        """Return the factory for a URL scheme, loading its entry point lazily."""
        if self._providers is None:
            self._providers = {}
            for mapping in reversed(self.pm.hook.durably_register_providers()):
                for key, factory in mapping.items():
                    if key in self._providers:
                        log.warning("storage scheme %r registered twice; the later wins", key)
                    self._providers[key] = factory
        factory = self._providers.get(scheme)
        if factory is not None:
            return factory
        blocked = disabled_plugins()
        reason = None
        disabled_as: str | None = None
        for ep in importlib_metadata.entry_points(group=PROVIDER_GROUP, name=scheme):
            dist = ep.dist.name if ep.dist is not None else None
            if scheme in blocked or (dist is not None and dist in blocked):
                reason = f"it is disabled by {DISABLE_ENV}"
                disabled_as = scheme if scheme in blocked else dist
                continue
            try:
                factory = ep.load()  # a factory(url, options) -> CheckpointProvider
            except Exception as exc:
                reason = f"{ep.value} failed to import: {type(exc).__name__}: {exc}"
                self._skipped[f"{PROVIDER_GROUP}:{scheme}"] = reason
                log.warning("storage provider for %r skipped: %s", scheme, reason)
                continue
            self._providers[scheme] = factory
            return self._providers[scheme]
        package = KNOWN_PACKAGES.get(scheme)
        if reason is not None:
            message = f"the storage provider for '{scheme}://' is installed but unusable: {reason}"
        else:
            message = f"no storage provider is installed for '{scheme}://' URLs"
        fix = (
            f"Remove {disabled_as!r} from the {DISABLE_ENV} environment variable to enable it"
            if disabled_as is not None and reason is not None and DISABLE_ENV in reason
            else f"Install it with: pip install {package}"
            if package
            else f"Install a package that registers the '{scheme}' scheme in the "
            f"'{PROVIDER_GROUP}' entry-point group"
        )
        raise ProviderNotFoundError(message, key="durability.store", fix=fix)

    # ------------------------------------------------------ checkpoint lifecycle

    def _implemented(self, name: str) -> bool:
        """Whether any plugin implements hook ``name`` (cached: checkpoint hooks run at
        every await, and calling a hook nobody implements still costs)."""
        cache = self._implemented_cache
        found = cache.get(name)
        if found is None:
            found = cache[name] = bool(getattr(self.pm.hook, name).get_hookimpls())
        return found

    def before_checkpoint(self, execution_id: str, seq: int, metadata: Mapping[str, str]) -> None:
        if self._implemented("durably_before_checkpoint"):
            self.pm.hook.durably_before_checkpoint(
                execution_id=execution_id, seq=seq, metadata=metadata
            )

    def after_checkpoint(self, execution_id: str, info: CheckpointInfo) -> None:
        if not self._implemented("durably_after_checkpoint"):
            return
        try:
            self.pm.hook.durably_after_checkpoint(execution_id=execution_id, info=info)
        except Exception:
            log.exception("a durably_after_checkpoint hook failed; ignored")

    def on_checkpoint_error(self, execution_id: str, seq: int, error: BaseException) -> None:
        self.pm.hook.durably_on_checkpoint_error(execution_id=execution_id, seq=seq, error=error)

    # -------------------------------------------------------- recovery lifecycle

    def before_recover(self, execution_id: str, seq: int) -> None:
        self.pm.hook.durably_before_recover(execution_id=execution_id, seq=seq)

    def after_recover(self, execution_id: str, seq: int, replayed: int) -> None:
        self.pm.hook.durably_after_recover(execution_id=execution_id, seq=seq, replayed=replayed)

    def on_recover_error(self, execution_id: str, error: BaseException) -> None:
        self.pm.hook.durably_on_recover_error(execution_id=execution_id, error=error)

    # ------------------------------------------------------------ value encoding

    def encode_value(self, value: Any) -> tuple[str, Any] | None:
        result: tuple[str, Any] | None = self.pm.hook.durably_encode_value(value=value)
        return result

    def decode_value(self, tag: str, payload: Any) -> Any | None:
        return self.pm.hook.durably_decode_value(tag=tag, payload=payload)

    @property
    def has_value_codecs(self) -> bool:
        return bool(self.pm.hook.durably_encode_value.get_hookimpls())

    # --------------------------------------------------------------- LLM clients

    def llm_client_factories(self) -> dict[str, Callable[..., Any]]:
        found: dict[str, Callable[..., Any]] = {}
        for mapping in reversed(self.pm.hook.durably_register_llm_clients()):
            found.update(mapping)
        return found


_hooks: Hooks | None = None


def get_hooks() -> Hooks:
    """The process-wide :class:`Hooks`, created (and plugins discovered) on first use."""
    global _hooks
    if _hooks is None:
        _hooks = Hooks()
    return _hooks


def reset_hooks() -> None:
    """Forget the process-wide hooks (tests; after changing ``DURABLY_DISABLE_PLUGINS``)."""
    global _hooks
    _hooks = None


def scheme_of(url: str) -> str:
    """The scheme of a store URL; a bare path means ``file``."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(
            "the store URL is empty",
            key="durability.store",
            fix="Set it to e.g. 'file://.durably' or 's3://bucket/prefix'",
        )
    if "://" not in url:
        # ``postgresql:/host/db`` (one slash), ``s3:bucket``: a mistyped URL, never a
        # directory of that name (a drive letter, ``C:\\...``, is one character).
        typo = re.match(r"([A-Za-z][A-Za-z0-9+.-]+):", url)
        if typo:
            raise ConfigError(
                f"the store URL starts with {typo[1]!r}: but not {typo[1]}://, so it is "
                "neither a URL nor a directory",
                key="durability.store",
                fix=f"Write it as {typo[1]}://... (two slashes); a local directory is "
                "file://PATH or a plain path",
            )
        return "file"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError as exc:
        raise ConfigError(
            f"cannot parse store URL: {exc}",
            key="durability.store",
            fix="Check the URL (brackets around an IPv6 address, the port, the scheme)",
        ) from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise ConfigError(f"cannot read a scheme from store URL {url!r}", key="durability.store")
    return scheme


def open_provider(
    url: str,
    options: Mapping[str, Any] | None = None,
    *,
    hooks: Hooks | None = None,
) -> CheckpointProvider:
    """Create the provider for a store URL (no I/O happens until it is first used).

    Args:
        url: ``file://...``, ``s3://bucket/prefix``, ``postgresql://...``, or a bare path.
        options: The provider's options (the ``[durability.<scheme>]`` table).
        hooks: The plugin facade to look providers up in (default: the process-wide one).

    Raises:
        ProviderNotFoundError: No provider for the scheme; says what to install.
        ConfigError: The provider rejected the URL or an option.
    """
    hooks = hooks or get_hooks()
    scheme = scheme_of(url)
    if "://" not in url:
        url = f"file://{url}"
    factory = hooks.provider_factory(scheme)
    return factory(url, dict(options or {}))
