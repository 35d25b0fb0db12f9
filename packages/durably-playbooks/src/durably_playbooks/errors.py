"""The error a Playbooks program gets when it uses what durably cannot make durable yet."""

from __future__ import annotations

from durably.errors import ConfigError

__all__ = ["UnsupportedPlaybooksFeature"]


class UnsupportedPlaybooksFeature(ConfigError):
    """A Playbooks feature durably cannot run durably (yet), refused when the program is
    loaded -- never run without durability. A :class:`~durably.errors.ConfigError`: the
    command exits with status 2 and prints the message, which names the agent or playbook,
    says why and what to do.

    Attributes:
        feature: A short name of the feature (``"meeting"``, ``"mcp-agent"``, ...).
    """

    def __init__(
        self,
        message: str,
        *,
        feature: str = "",
        source: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.feature = feature
        super().__init__(message, source=source, fix=fix)
