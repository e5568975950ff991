"""Key providers and identities for childvault.

``keys`` knows nothing of records or SQL. It offers identities (per-user key
pairs under a passphrase), the key-slot file, and the key providers that wrap
per-field data keys: :class:`LocalProvider` (embedded default) and
:class:`VaultProvider` (HashiCorp Vault / OpenBao, with :class:`VaultSettings`
and :func:`setup_vault`; imported lazily because hvac is heavy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from childvault.keys._errors import (
    AccessDenied,
    ApprovalInvalid,
    ChildVaultError,
    ConfigError,
    DecryptionFailed,
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
    # For type checkers only: at run time these come from __getattr__ below.
    from childvault.keys._openbao import VaultProvider, VaultSettings
    from childvault.keys._openbao import setup as setup_vault

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


# Public name here -> name in childvault.keys._openbao.
_LAZY = {"VaultProvider": "VaultProvider", "VaultSettings": "VaultSettings", "setup_vault": "setup"}


def __getattr__(name: str) -> Any:
    # hvac and requests take a noticeable time to import; load them only when
    # the Vault provider is actually used.
    if name in _LAZY:
        from childvault.keys import _openbao

        return getattr(_openbao, _LAZY[name])
    raise AttributeError(f"module 'keys' has no attribute {name!r}")
