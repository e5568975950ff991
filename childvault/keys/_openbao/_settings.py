"""VaultSettings: where the Vault/OpenBao server is and what childvault uses on it.

Pure configuration: parsed from the environment or the vault configuration's
JSON and validated here, with no I/O and no secret (see docs/vault.md,
"Settings").
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from childvault._i18n import _t, join
from childvault.keys._errors import ConfigError

__all__ = ["MAX_SALT_WORKERS", "VaultSettings", "ttl"]

#: Upper bound of ``VaultSettings.salt_workers``.
MAX_SALT_WORKERS = 32

_MOUNT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_TTL_RE = re.compile(r"^[1-9][0-9]*[smh]?$")


def ttl(value: int | str) -> str:
    """Normalise a TTL (seconds, or Vault duration ``30s``/``15m``/``1h``)."""
    text = str(value)
    if isinstance(value, bool) or not _TTL_RE.fullmatch(text):
        raise ConfigError(
            _t(
                "invalid TTL {value!r}: use seconds or a duration like '90s', '15m', '1h'",
                value=value,
            )
        )
    return text


@dataclass(frozen=True)
class VaultSettings:
    """Where the Vault/OpenBao server is and which mounts and keys childvault uses.

    Holds no secret, ever: it is stored in the vault configuration. The token
    comes from ``VAULT_TOKEN`` (or the caller), the AppRole secret id from a
    file or the environment.
    """

    #: Server address, e.g. ``https://vault.example.org:8200``.
    addr: str
    #: Path of the Transit secrets engine.
    transit_mount: str = "childvault-transit"
    #: Path of the KV version 2 secrets engine holding the record salts.
    kv_mount: str = "childvault-kv"
    #: Name of the derived Transit key that wraps field DEKs.
    key_name: str = "childvault-dek"
    #: Vault Enterprise / OpenBao namespace, or None for the root namespace.
    namespace: str | None = None
    #: PEM file of the CA that signed the server certificate (``VAULT_CACERT``).
    cacert: str | None = None
    #: Seconds to wait for the server on each request.
    timeout: float = 30.0
    #: Path of the AppRole auth method, for ``approle=`` logins.
    approle_mount: str = "approle"
    #: Version of the blind-index HMAC key that is used, pinned at setup so a
    #: rotation of that key never changes existing index values.
    index_key_version: int = 1
    #: Default lifetime of a response-wrapped grant (the officer's decrypt).
    wrap_ttl: str = "1h"
    #: Upper bound written into the officer policy (``max_wrapping_ttl``).
    max_wrapping_ttl: str = "24h"
    #: Salt documents written (or read) at the same time when wrapping a batch
    #: of records. KV v2 has no batch API, so each record costs one round trip;
    #: this many are kept in flight (1 = one after the other).
    salt_workers: int = 8

    def __post_init__(self) -> None:
        # Several nodes of one HA cluster may be listed, comma-separated (docs/scale.md).
        parts = self.addr.split(",") if isinstance(self.addr, str) else [None]
        if not all(
            isinstance(p, str) and re.fullmatch(r"https?://[^\s/,]+/?", p.strip()) for p in parts
        ):
            raise ConfigError(
                _t(
                    "invalid Vault address {addr!r}: use http(s)://host:port "
                    "(VAULT_ADDR), or several such addresses separated by commas",
                    addr=self.addr,
                )
            )
        object.__setattr__(self, "addr", ",".join(str(p).strip().rstrip("/") for p in parts))
        for label, mount in (("transit_mount", self.transit_mount), ("kv_mount", self.kv_mount)):
            if not isinstance(mount, str) or not _MOUNT_RE.fullmatch(mount):
                raise ConfigError(
                    _t("invalid Vault mount path {label}={mount!r}", label=label, mount=mount)
                )
        for label, name in (("key_name", self.key_name), ("approle_mount", self.approle_mount)):
            if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
                raise ConfigError(_t("invalid Vault name {label}={name!r}", label=label, name=name))
        if self.namespace is not None and not (
            isinstance(self.namespace, str) and _MOUNT_RE.fullmatch(self.namespace.strip("/"))
        ):
            raise ConfigError(_t("invalid Vault namespace {namespace!r}", namespace=self.namespace))
        if self.cacert is not None and not isinstance(self.cacert, str):
            raise ConfigError(_t("cacert must be a file path"))
        if (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or not self.timeout > 0
        ):
            raise ConfigError(
                _t("invalid Vault timeout {timeout!r}: use a positive number", timeout=self.timeout)
            )
        if (
            isinstance(self.index_key_version, bool)
            or not isinstance(self.index_key_version, int)
            or self.index_key_version < 1
        ):
            raise ConfigError(
                _t(
                    "invalid index_key_version {index_key_version!r}",
                    index_key_version=self.index_key_version,
                )
            )
        if (
            isinstance(self.salt_workers, bool)
            or not isinstance(self.salt_workers, int)
            or not 1 <= self.salt_workers <= MAX_SALT_WORKERS
        ):
            raise ConfigError(
                _t(
                    "invalid salt_workers {salt_workers!r}: use 1 to {max_salt_workers}",
                    salt_workers=self.salt_workers,
                    max_salt_workers=MAX_SALT_WORKERS,
                )
            )
        object.__setattr__(self, "wrap_ttl", ttl(self.wrap_ttl))
        object.__setattr__(self, "max_wrapping_ttl", ttl(self.max_wrapping_ttl))

    @property
    def index_key_name(self) -> str:
        """Name of the (non-derived) Transit key used for blind-index HMACs."""
        return f"{self.key_name}-index"

    @classmethod
    def from_env(cls, **overrides: Any) -> VaultSettings:
        """Settings from ``VAULT_ADDR``, ``VAULT_NAMESPACE`` and ``VAULT_CACERT``.

        Keyword arguments override the environment (and set the other fields).
        """
        values: dict[str, Any] = {}
        for env, name in (
            ("VAULT_ADDR", "addr"),
            ("VAULT_NAMESPACE", "namespace"),
            ("VAULT_CACERT", "cacert"),
        ):
            if os.environ.get(env):
                values[name] = os.environ[env]
        values.update(overrides)
        if not values.get("addr"):
            raise ConfigError(
                _t("no Vault server address: set VAULT_ADDR (e.g. https://vault.example.org:8200)")
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(_t("unknown Vault settings: {names}", names=join(", ", unknown)))
        return cls(**values)

    def to_json(self) -> str:
        """The settings as a JSON object (for the vault configuration; no secrets)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> VaultSettings:
        """Inverse of :meth:`to_json`; also accepts an already parsed mapping."""
        try:
            doc = json.loads(text) if isinstance(text, str | bytes) else dict(text)
        except ValueError as exc:
            raise ConfigError(_t("the stored Vault settings are not valid JSON")) from exc
        if not isinstance(doc, dict):
            raise ConfigError(_t("the stored Vault settings must be a JSON object"))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ConfigError(
                _t(
                    "unknown Vault settings in the configuration: {names}",
                    names=join(", ", unknown),
                )
            )
        if "addr" not in doc:
            raise ConfigError(_t("the stored Vault settings have no server address"))
        return cls(**doc)
