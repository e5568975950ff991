"""Public results are frozen dataclasses with real types, not ``dict[str, Any]``
(issue 18), and their ``to_json()`` is the JSON the command line always printed."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import childvault.vault as api
from childvault.vault import (
    AnonymizedExport,
    AuditReconciliation,
    BackupReport,
    DecommissionCosign,
    DisabledUser,
    GcReport,
    InviteSummary,
    KeyRenewal,
    KeyRenewalRequest,
    OrphanSalt,
    RebaselineReport,
    Transfer,
    UnmatchedDecrypt,
    UpgradeReport,
    UserInvite,
    Vault,
)

#: Public methods that still return mappings, and why.
STILL_MAPPINGS = {
    # Self-contained documents checked by verify_entry_proof / verify_subject_report
    # or handed on as files: their JSON *is* the format (docs/reports.md).
    "prove_entry",
    "subject_report",
    "complete_subject_report",
    "incident_report",
    # The exact canonicalised log entries, as hashed.
    "audit_entries",
    # The incident contact list: the request ids filed, or the sealed list
    # written; open_incident_contacts returns that list's own document.
    "incident_contacts",
    "open_incident_contacts",
}

RESULTS = [
    AnonymizedExport,
    AuditReconciliation,
    UnmatchedDecrypt,
    BackupReport,
    DecommissionCosign,
    DisabledUser,
    GcReport,
    InviteSummary,
    KeyRenewal,
    KeyRenewalRequest,
    OrphanSalt,
    RebaselineReport,
    Transfer,
    UpgradeReport,
    UserInvite,
]


def test_no_public_method_returns_an_untyped_mapping() -> None:
    untyped = []
    for name, member in inspect.getmembers(Vault):
        if name.startswith("_") or name in STILL_MAPPINGS or not callable(member):
            continue
        returns = str(inspect.signature(member).return_annotation)
        if "dict[str, Any]" in returns or "dict[str, object]" in returns:
            untyped.append(f"{name} -> {returns}")
    assert not untyped, "return a frozen dataclass (childvault/vault/_results.py):\n" + "\n".join(
        untyped
    )


def test_the_list_of_methods_still_returning_mappings_is_not_stale() -> None:
    stale = [
        name
        for name in sorted(STILL_MAPPINGS)
        if "dict[" not in str(inspect.signature(getattr(Vault, name)).return_annotation)
    ]
    assert not stale, f"typed now: remove from STILL_MAPPINGS: {stale}"


@pytest.mark.parametrize("cls", RESULTS, ids=lambda c: c.__name__)
def test_results_are_exported_frozen_dataclasses(cls: type) -> None:
    assert cls.__name__ in api.__all__
    assert dataclasses.is_dataclass(cls)
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert cls.__doc__


WHEN = "2026-11-24T08:00:00.000000Z"


def test_json_forms_round_trip_and_times_are_aware() -> None:
    transfer_doc = {
        "seq": 7,
        "ts": WHEN,
        "reader": "worker1",
        "recipient": "某区人民法院",
        "provision": "第一百一十条",
        "assessment": None,
        "basis": "legal_obligation",
        "records": ["ab" * 16],
        "fields": ["name"],
        "request": "cd" * 16,
    }
    transfer = Transfer.from_json(transfer_doc)
    assert transfer.at == datetime(2026, 11, 24, 8, tzinfo=UTC)
    assert transfer.to_json() == transfer_doc
    with pytest.raises(dataclasses.FrozenInstanceError):
        transfer.reader = "someone"  # type: ignore[misc]

    gc_doc = {
        "ok": True,
        "grace_seconds": 3600,
        "destroy": False,
        "orphans": [{"record_id": "ef" * 16, "created": "2026-11-24T08:00:00Z", "versions": 2}],
        "destroyed": 0,
        "revived": [],
    }
    gc = GcReport.from_json(gc_doc)
    assert gc.grace == timedelta(hours=1) and gc.orphans[0].created.tzinfo is not None
    assert gc.to_json() == gc_doc

    summary_doc = {
        "user": "nina",
        "roles": ["staff"],
        "vault_id": "01" * 16,
        "invited_by": "admin",
        "expires": WHEN,
        "fingerprint": "abcd efgh",
    }
    summary = InviteSummary.from_json(summary_doc)
    assert summary.expires.tzinfo is not None and summary.to_json() == summary_doc
    invite = UserInvite("nina", ("staff",), summary.expires, "abcd efgh", b"{}")
    assert invite.to_json(Path("nina.invite.json")) == {
        "ok": True,
        "user": "nina",
        "roles": ["staff"],
        "expires": WHEN,
        "fingerprint": "abcd efgh",
        "invite": "nina.invite.json",
    }

    for doc, cls in [
        (
            {"ok": True, "user": "u", "revoked_grants": ["g"], "rotation_required": True},
            DisabledUser,
        ),
        (
            {"ok": True, "user": "u", "steps": ["anchored"], "fingerprint": "f", "pending": []},
            UpgradeReport,
        ),
        (
            {"ok": True, "contacts": "/tmp/c.bin", "records": 2, "sha256": "00" * 32},
            DecommissionCosign,
        ),
        ({"ok": True, "user": "u", "request": 9, "identity": "/h/u.id.new"}, KeyRenewalRequest),
        ({"ok": True, "user": "u", "request": 9}, KeyRenewal),
        ({"ok": True, "backup": "/b", "files": ["vault.db"]}, BackupReport),
        (
            {"ok": True, "restored_at": 5, "lost_from": 5, "lost_to": 8, "note": "n"},
            RebaselineReport,
        ),
    ]:
        assert cls.from_json(doc).to_json() == doc, cls.__name__  # type: ignore[attr-defined]
