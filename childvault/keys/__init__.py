"""Key providers and identities for childvault.

``keys`` knows nothing of records or SQL. It offers identities (per-user key
pairs under a passphrase), the key-slot file, and the key providers that wrap
per-field data keys: :class:`LocalProvider` (embedded default) and
:class:`VaultProvider` (HashiCorp Vault / OpenBao, with :class:`VaultSettings`
and :func:`setup_vault`). The Vault provider needs the optional packages of
``pip install 'childvault[vault]'`` (hvac, requests); they are imported only
when it is used, and :class:`ExtraRequired` says so when they are missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from childvault._i18n import _t
from childvault.keys._errors import (
    AccessDenied,
    ApprovalInvalid,
    ChildVaultError,
    ConfigError,
    DecryptionFailed,
    ExtraRequired,
    ImportFailed,
    IntegrityError,
    NotFound,
    ProviderUnavailable,
    StorageError,
    UsageError,
    ValidationError,
    WrongPassphrase,
)
from childvault.keys._identity import (
    Identity,
    PublicIdentity,
    check_user_name,
    public_identity_from_file,
)
from childvault.keys._local import CustodianSecret, LocalProvider, blob_generation
from childvault.keys._openbao import VaultSettings
from childvault.keys._provider import (
    BlindIndexer,
    CustodianSealing,
    Diagnosable,
    ExternalKeyMaterial,
    FieldKey,
    KeyProvider,
    RecordKeys,
    ReleasedKeys,
    Selection,
    ServerSideRotation,
    WrappedRecord,
)
from childvault.keys._slots import KeySlots

if TYPE_CHECKING:
    # For type checkers only: at run time it comes from __getattr__ below, so
    # that hvac (an optional extra) is imported only when the provider is used.
    from childvault.keys._openbao import VaultProvider

__all__ = [
    "AccessDenied",
    "ApprovalInvalid",
    "BlindIndexer",
    "ChildVaultError",
    "ConfigError",
    "CustodianSealing",
    "CustodianSecret",
    "DecryptionFailed",
    "Diagnosable",
    "ExternalKeyMaterial",
    "ExtraRequired",
    "FieldKey",
    "Identity",
    "ImportFailed",
    "IntegrityError",
    "KeyProvider",
    "KeySlots",
    "LocalProvider",
    "NotFound",
    "ProviderUnavailable",
    "PublicIdentity",
    "RecordKeys",
    "ReleasedKeys",
    "Selection",
    "ServerSideRotation",
    "StorageError",
    "UsageError",
    "ValidationError",
    "VaultProvider",
    "VaultSettings",
    "WrappedRecord",
    "WrongPassphrase",
    "blob_generation",
    "check_user_name",
    "public_identity_from_file",
    "setup_vault",
]


def setup_vault(
    settings: VaultSettings,
    token: str,
    *,
    audit_file: str | None = None,
    allow_no_audit_device: bool = False,
    control_groups: bool = False,
) -> list[str]:
    """Prepare a Vault/OpenBao server for childvault; return what was done, line by line.

    Needs a root or bootstrap token. Idempotent. Refuses to finish
    (:class:`ConfigError`) when the server has no audit device, unless
    ``allow_no_audit_device``; with ``control_groups``, refuses a server that
    does not enforce Control Groups (docs/vault.md). Needs
    ``pip install 'childvault[vault]'`` (else :class:`ExtraRequired`).
    """
    from childvault.keys import _openbao

    if not isinstance(settings, VaultSettings):
        raise UsageError(_t("setup_vault: 'settings' must be a VaultSettings"))
    if not isinstance(token, str) or not token:
        raise UsageError(_t("setup_vault: 'token' must be a non-empty string"))
    do_setup: Any = _openbao.load("_setup").setup
    lines: list[str] = do_setup(
        settings,
        token,
        audit_file=audit_file,
        allow_no_audit_device=allow_no_audit_device,
        control_groups=control_groups,
    )
    return lines


def __getattr__(name: str) -> Any:
    # hvac and requests are optional and take a noticeable time to import: load
    # the provider only when it is actually used.
    if name == "VaultProvider":
        from childvault.keys import _openbao

        return _openbao.load("_provider").VaultProvider
    raise AttributeError(f"module 'keys' has no attribute {name!r}")
