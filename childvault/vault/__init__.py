"""childvault: an encrypted vault for the personal records of children in welfare care.

The public API is what this module exports. Start with :class:`Vault`::

    from childvault.vault import Vault
    with Vault.open(home, "worker1", passphrase) as v:
        request_id = v.request_access([record_id], ["name"], "case_management", "home visit")

Every error is a :class:`ChildVaultError`; each subclass carries the CLI exit code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from childvault.vault._reports import (
        ProofVerification,
        verify_entry_proof,
        verify_subject_report,
    )
    from childvault.vault._results import (
        AnonymizedExport,
        AuditReconciliation,
        BackupReport,
        DecommissionContacts,
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

# Public name -> the module that defines it. Loaded on first use (PEP 562): a
# command that needs only part of the library (``childvault list`` on a session,
# issue 18: <= 0.3 s) does not pay for importing the report verifiers, the result
# types or the services it never calls. Type checkers see the imports above.
_WHERE = {
    "AccessDenied": "childvault.keys",
    "ApprovalInvalid": "childvault.keys",
    "ChildVaultError": "childvault.keys",
    "ConfigError": "childvault.keys",
    "DecryptionFailed": "childvault.keys",
    "ExtraRequired": "childvault.keys",
    "Identity": "childvault.keys",
    "ImportFailed": "childvault.keys",
    "IntegrityError": "childvault.keys",
    "NotFound": "childvault.keys",
    "ProviderUnavailable": "childvault.keys",
    "StorageError": "childvault.keys",
    "UsageError": "childvault.keys",
    "ValidationError": "childvault.keys",
    "VaultSettings": "childvault.keys",
    "WrongPassphrase": "childvault.keys",
    "setup_vault": "childvault.keys",
    "VerifyReport": "childvault.vault._audit",
    "RequestStatus": "childvault.vault._check",
    "Consent": "childvault.vault._consent",
    "NewRecordInput": "childvault.vault._facade",
    "Vault": "childvault.vault._facade",
    "LocalKeys": "childvault.vault._keyconfig",
    "OpenBaoCredentials": "childvault.vault._keyconfig",
    "OpenBaoKeys": "childvault.vault._keyconfig",
    "ProofVerification": "childvault.vault._reports",
    "verify_entry_proof": "childvault.vault._reports",
    "verify_subject_report": "childvault.vault._reports",
    "AnonymizedExport": "childvault.vault._results",
    "AuditReconciliation": "childvault.vault._results",
    "UnmatchedDecrypt": "childvault.vault._results",
    "VaultSetting": "childvault.vault._results",
    "BackupReport": "childvault.vault._results",
    "DecommissionContacts": "childvault.vault._results",
    "DecommissionCosign": "childvault.vault._results",
    "DecommissionReport": "childvault.vault._results",
    "DisabledUser": "childvault.vault._results",
    "GcReport": "childvault.vault._results",
    "Incident": "childvault.vault._results",
    "InviteSummary": "childvault.vault._results",
    "KeyRenewal": "childvault.vault._results",
    "KeyRenewalRequest": "childvault.vault._results",
    "OrphanSalt": "childvault.vault._results",
    "RebaselineReport": "childvault.vault._results",
    "RightsLink": "childvault.vault._results",
    "RightsRequest": "childvault.vault._results",
    "RotationReport": "childvault.vault._results",
    "SweepReport": "childvault.vault._results",
    "Transfer": "childvault.vault._results",
    "UpgradeReport": "childvault.vault._results",
    "UserInvite": "childvault.vault._results",
    "FieldSpec": "childvault.vault._schema",
    "RecordType": "childvault.vault._schema",
    "Schema": "childvault.vault._schema",
    "Basis": "childvault.vault._svc_access",
    "Approval": "childvault.vault._types",
    "ImportReport": "childvault.vault._types",
    "RecordInfo": "childvault.vault._types",
    "RequestInfo": "childvault.vault._types",
    "UserInfo": "childvault.vault._types",
}


def __getattr__(name: str) -> Any:
    """The public name ``name``, imported from its module on first use (then cached)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
    "DecommissionContacts",
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
