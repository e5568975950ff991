"""childvault: an encrypted vault for the personal records of children in welfare care.

The public API is what this module exports. Start with :class:`Vault`::

    from childvault.vault import Vault
    with Vault.open(home, "worker1", passphrase) as v:
        request_id = v.request_access([record_id], ["name"], "case_management", "home visit")

Every error is a :class:`ChildVaultError`; each subclass carries the CLI exit code.
"""

from __future__ import annotations

from childvault.keys import (
    AccessDenied,
    ApprovalInvalid,
    ChildVaultError,
    ConfigError,
    DecryptionFailed,
    ExtraRequired,
    Identity,
    ImportFailed,
    IntegrityError,
    NotFound,
    ProviderUnavailable,
    StorageError,
    UsageError,
    ValidationError,
    VaultSettings,
    WrongPassphrase,
    setup_vault,
)
from childvault.vault._audit import VerifyReport
from childvault.vault._check import RequestStatus
from childvault.vault._consent import Consent
from childvault.vault._facade import NewRecordInput, Vault
from childvault.vault._keyconfig import LocalKeys, OpenBaoCredentials, OpenBaoKeys
from childvault.vault._reports import ProofVerification, verify_entry_proof, verify_subject_report
from childvault.vault._results import (
    AnonymizedExport,
    AuditReconciliation,
    BackupReport,
    DecommissionCosign,
    DecommissionReport,
    DisabledUser,
    GcReport,
    Incident,
    InviteSummary,
    KeyRenewal,
    KeyRenewalRequest,
    OrphanSalt,
    RebaselineReport,
    RightsLink,
    RightsRequest,
    RotationReport,
    SweepReport,
    Transfer,
    UnmatchedDecrypt,
    UpgradeReport,
    UserInvite,
    VaultSetting,
)
from childvault.vault._schema import FieldSpec, RecordType, Schema
from childvault.vault._svc_access import Basis
from childvault.vault._types import Approval, ImportReport, RecordInfo, RequestInfo, UserInfo

__all__ = [
    "AccessDenied",
    "AnonymizedExport",
    "Approval",
    "ApprovalInvalid",
    "AuditReconciliation",
    "BackupReport",
    "Basis",
    "ChildVaultError",
    "ConfigError",
    "Consent",
    "DecommissionCosign",
    "DecommissionReport",
    "DecryptionFailed",
    "DisabledUser",
    "ExtraRequired",
    "FieldSpec",
    "GcReport",
    "Identity",
    "ImportFailed",
    "ImportReport",
    "Incident",
    "IntegrityError",
    "InviteSummary",
    "KeyRenewal",
    "KeyRenewalRequest",
    "LocalKeys",
    "NewRecordInput",
    "NotFound",
    "OpenBaoCredentials",
    "OpenBaoKeys",
    "OrphanSalt",
    "ProofVerification",
    "ProviderUnavailable",
    "RebaselineReport",
    "RecordInfo",
    "RecordType",
    "RequestInfo",
    "RequestStatus",
    "RightsLink",
    "RightsRequest",
    "RotationReport",
    "Schema",
    "StorageError",
    "SweepReport",
    "Transfer",
    "UnmatchedDecrypt",
    "UpgradeReport",
    "UsageError",
    "UserInfo",
    "UserInvite",
    "ValidationError",
    "Vault",
    "VaultSetting",
    "VaultSettings",
    "VerifyReport",
    "WrongPassphrase",
    "setup_vault",
    "verify_entry_proof",
    "verify_subject_report",
]
