"""Typed key-provider configuration: which provider a vault uses, and with what credentials.

:class:`LocalKeys` (the embedded default: record keys sealed to a custodian
key held by officers) or :class:`OpenBaoKeys` (HashiCorp Vault / OpenBao
Transit, with :class:`OpenBaoCredentials` for the acting user). Pass one to
:meth:`Vault.init`; pass credentials to :meth:`Vault.open`. On disk the
choice stays the ``provider`` name and ``vault`` settings object of
``config.json``; :func:`keys_from_config` is the one place that reads them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from childvault._i18n import _t
from childvault.keys import ConfigError, KeyProvider, LocalProvider, UsageError, VaultSettings
from childvault.vault._config import Config


def _check_credentials(where: str, token: object, approle: object) -> None:
    """Types of a token / AppRole pair (fail fast, naming the argument)."""
    if token is not None and not isinstance(token, str):
        raise UsageError(_t("{where}: 'token' must be a string or None", where=where))
    if approle is not None and not (
        isinstance(approle, tuple)
        and len(approle) == 2
        and all(isinstance(p, str) for p in approle)
    ):
        raise UsageError(
            _t("{where}: 'approle' must be a (role_id, secret_id) pair of strings", where=where)
        )


@dataclass(frozen=True)
class OpenBaoCredentials:
    """How the acting user authenticates to OpenBao / Vault.

    ``token`` (default: ``VAULT_TOKEN`` in the environment) or
    ``approle=(role_id, secret_id)``; at most one of them.
    """

    token: str | None = field(default=None, repr=False)
    approle: tuple[str, str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_credentials("OpenBaoCredentials", self.token, self.approle)
        if self.token is not None and self.approle is not None:
            raise ConfigError(_t("give an OpenBao token or an AppRole login, not both"))


@dataclass(frozen=True)
class LocalKeys:
    """The embedded provider: no server; officers hold the custodian key in their key slots."""

    #: The ``provider`` name in ``config.json``.
    name: ClassVar[str] = "local"

    @classmethod
    def from_config(cls, config: Config) -> LocalKeys:
        """From a vault's ``config.json``."""
        return cls()

    def settings_json(self) -> dict[str, Any] | None:
        """The ``vault`` object of ``config.json`` (none for local keys)."""
        return None

    def provider_type(self) -> type[KeyProvider]:
        """The provider class, so its capabilities can be asked before one is built."""
        return LocalProvider

    def connect(self, vault_id: str, credentials: OpenBaoCredentials | None) -> KeyProvider | None:
        """No provider outside the vault: local providers are built from the custodian keys."""
        return None


@dataclass(frozen=True)
class OpenBaoKeys:
    """OpenBao / HashiCorp Vault Transit keys (``docs/vault.md``).

    ``settings`` are the server and mount settings written to ``config.json``;
    ``token`` / ``approle`` are the credentials of the admin creating the vault
    (never written anywhere).
    """

    settings: VaultSettings
    token: str | None = field(default=None, repr=False)
    approle: tuple[str, str] | None = field(default=None, repr=False)

    #: The ``provider`` name in ``config.json``.
    name: ClassVar[str] = "vault"

    def __post_init__(self) -> None:
        if not isinstance(self.settings, VaultSettings):
            raise UsageError(
                _t(
                    "OpenBaoKeys: 'settings' must be a VaultSettings "
                    "(for a JSON object use OpenBaoKeys.from_mapping)"
                )
            )
        _check_credentials("OpenBaoKeys", self.token, self.approle)

    @classmethod
    def from_config(cls, config: Config) -> OpenBaoKeys:
        """From a vault's ``config.json`` (no credentials: those come with ``Vault.open``)."""
        return cls.from_mapping(config.vault_settings or {})

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> OpenBaoKeys:
        """From the settings as a JSON object (``config.json``, ``VaultSettings.to_json``)."""
        if not isinstance(settings, Mapping):
            raise UsageError(
                _t(
                    "OpenBaoKeys.from_mapping: 'settings' must be a mapping (a parsed JSON "
                    "object), not {kind}",
                    kind=type(settings).__name__,
                )
            )
        return cls(VaultSettings.from_json(settings))

    @property
    def credentials(self) -> OpenBaoCredentials:
        """The credentials given with these settings."""
        return OpenBaoCredentials(self.token, self.approle)

    def settings_json(self) -> dict[str, Any] | None:
        """The ``vault`` object of ``config.json``."""
        doc: dict[str, Any] = json.loads(self.settings.to_json())
        return doc

    def provider_type(self) -> type[KeyProvider]:
        """The provider class, so its capabilities can be asked before one is built."""
        from childvault.keys import VaultProvider

        cls: type[KeyProvider] = VaultProvider
        return cls

    def connect(self, vault_id: str, credentials: OpenBaoCredentials | None) -> KeyProvider | None:
        """The one provider of a session; it connects lazily, on first use."""
        from childvault.keys import VaultProvider

        creds = credentials if credentials is not None else self.credentials
        provider: KeyProvider = VaultProvider(
            self.settings, vault_id, token=creds.token, approle=creds.approle
        )
        return provider


#: A vault's key-provider configuration.
KeysConfig = LocalKeys | OpenBaoKeys

_BY_NAME: dict[str, type[LocalKeys] | type[OpenBaoKeys]] = {
    LocalKeys.name: LocalKeys,
    OpenBaoKeys.name: OpenBaoKeys,
}


def keys_from_config(config: Config) -> KeysConfig:
    """The key-provider configuration a vault's ``config.json`` names."""
    kind = _BY_NAME.get(config.provider)
    if kind is None:
        raise ConfigError(
            _t("unknown key provider {provider!r} in the configuration", provider=config.provider)
        )
    return kind.from_config(config)
