"""Typed results of the public operations that used to return ``dict[str, Any]``.

Each is a frozen dataclass with real types (dates as :class:`date`,
timestamps as aware :class:`datetime` in UTC) and a ``to_json()`` that gives
exactly the JSON object the command line prints with ``--json`` (unchanged
from before, so scripts reading it keep working). The services still build
the JSON form; ``from_json`` turns it into the typed result at the facade.

This module holds the results of operations on the vault as a whole
(retention, rotation, decommissioning, salt clean-up, backup, settings) and
re-exports the others, so every result is imported from here: those of the
user and key operations are in :mod:`childvault.vault._results_users`, those
read from the log or released from the vault in
:mod:`childvault.vault._results_reports`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from childvault.vault._results_reports import AnonymizedExport as AnonymizedExport
from childvault.vault._results_reports import AuditReconciliation as AuditReconciliation
from childvault.vault._results_reports import Incident as Incident
from childvault.vault._results_reports import RightsLink as RightsLink
from childvault.vault._results_reports import RightsRequest as RightsRequest
from childvault.vault._results_reports import Transfer as Transfer
from childvault.vault._results_reports import UnmatchedDecrypt as UnmatchedDecrypt
from childvault.vault._results_users import DisabledUser as DisabledUser
from childvault.vault._results_users import InviteSummary as InviteSummary
from childvault.vault._results_users import KeyRenewal as KeyRenewal
from childvault.vault._results_users import KeyRenewalRequest as KeyRenewalRequest
from childvault.vault._results_users import UpgradeReport as UpgradeReport
from childvault.vault._results_users import UserInvite as UserInvite
from childvault.vault._time import iso, parse_iso

__all__ = [
    "AnonymizedExport",
    "AuditReconciliation",
    "BackupReport",
    "DecommissionCosign",
    "DecommissionReport",
    "DisabledUser",
    "GcReport",
    "Incident",
    "InviteSummary",
    "KeyRenewal",
    "KeyRenewalRequest",
    "OrphanSalt",
    "RebaselineReport",
    "RightsLink",
    "RightsRequest",
    "RotationReport",
    "SweepReport",
    "Transfer",
    "UnmatchedDecrypt",
    "UpgradeReport",
    "UserInvite",
    "VaultSetting",
]


@dataclass(frozen=True)
class SweepReport:
    """Outcome of :meth:`Vault.retention_sweep`."""

    #: Only listed, nothing shredded.
    dry_run: bool
    #: The day (UTC) against which retention dates were compared.
    day: date
    #: Ids of the records past their retention date (shredded unless ``dry_run``).
    records: tuple[str, ...]
    #: Earlier deletions whose provider-side destruction was completed now.
    completed_pending: int

    @property
    def due(self) -> int:
        """How many records were past their retention date."""
        return len(self.records)

    def to_json(self) -> dict[str, Any]:
        """JSON form (``retention sweep --json``)."""
        return {
            "ok": True,
            "dry_run": self.dry_run,
            "day": self.day.isoformat(),
            "due": self.due,
            "records": list(self.records),
            "completed_pending": self.completed_pending,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SweepReport:
        """From :meth:`to_json` output."""
        return cls(
            dry_run=bool(doc["dry_run"]),
            day=date.fromisoformat(doc["day"]),
            records=tuple(doc["records"]),
            completed_pending=int(doc["completed_pending"]),
        )


@dataclass(frozen=True)
class RotationReport:
    """Outcome of :meth:`Vault.rotate_keys`."""

    #: ``"local"`` or ``"vault"``.
    provider: str
    #: The key generation (local) or Transit key version (Vault) now in use.
    generation: int
    #: Records whose wrapped keys were resealed / rewrapped.
    resealed: int
    #: An interrupted rotation was completed.
    resumed: bool
    #: Local provider: the custodian generations destroyed (None for Vault).
    destroyed_generations: tuple[int, ...] | None = None
    #: Vault provider: whether older key versions were deleted (True) or only
    #: retired (False); None for the local provider.
    trimmed: bool | None = None
    #: With ``rekey``: the records whose fields were re-encrypted under new
    #: field keys (None when not asked for).
    rekeyed: int | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form (``keys rotate --json``)."""
        doc: dict[str, Any] = {
            "ok": True,
            "provider": self.provider,
            "generation": self.generation,
            "resealed": self.resealed,
        }
        if self.destroyed_generations is not None:
            doc["destroyed_generations"] = list(self.destroyed_generations)
        doc["resumed"] = self.resumed
        if self.trimmed is not None:
            doc["trimmed"] = self.trimmed
        if self.rekeyed is not None:
            doc["rekeyed"] = self.rekeyed
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RotationReport:
        """From :meth:`to_json` output."""
        destroyed = doc.get("destroyed_generations")
        trimmed = doc.get("trimmed")
        return cls(
            provider=str(doc["provider"]),
            generation=int(doc["generation"]),
            resealed=int(doc["resealed"]),
            resumed=bool(doc["resumed"]),
            destroyed_generations=None if destroyed is None else tuple(destroyed),
            trimmed=None if trimmed is None else bool(trimmed),
            rekeyed=None if doc.get("rekeyed") is None else int(doc["rekeyed"]),
        )


@dataclass(frozen=True)
class DecommissionReport:
    """Outcome of :meth:`Vault.decommission` (also written to ``decommission-report.json``)."""

    vault_id: str
    decommissioned_at: datetime
    by: str
    records_shredded: int
    records_remaining: int
    #: The final signed checkpoint (signed-note text).
    final_checkpoint: str
    witness: Path

    def to_json(self) -> dict[str, Any]:
        """JSON form (``decommission --json`` and the report file)."""
        return {
            "ok": True,
            "vault_id": self.vault_id,
            "decommissioned_at": iso(self.decommissioned_at),
            "by": self.by,
            "records_shredded": self.records_shredded,
            "records_remaining": self.records_remaining,
            "final_checkpoint": self.final_checkpoint,
            "witness": str(self.witness),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DecommissionReport:
        """From :meth:`to_json` output."""
        return cls(
            vault_id=str(doc["vault_id"]),
            decommissioned_at=parse_iso(doc["decommissioned_at"]),
            by=str(doc["by"]),
            records_shredded=int(doc["records_shredded"]),
            records_remaining=int(doc["records_remaining"]),
            final_checkpoint=str(doc["final_checkpoint"]),
            witness=Path(doc["witness"]),
        )


#: How Vault's salt creation times are shown (to the second, as Vault's KV gives them).
_SECONDS = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class OrphanSalt:
    """A salt document in Vault that no record (live or deleted) accounts for."""

    record_id: str
    #: When Vault created it (UTC, to the second).
    created: datetime
    versions: int

    def to_json(self) -> dict[str, Any]:
        """JSON form (one of ``vault gc --json``'s ``orphans``)."""
        return {
            "record_id": self.record_id,
            "created": self.created.astimezone(UTC).strftime(_SECONDS),
            "versions": self.versions,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> OrphanSalt:
        """From :meth:`to_json` output."""
        return cls(
            record_id=str(doc["record_id"]),
            created=parse_iso(str(doc["created"])),
            versions=int(doc["versions"]),
        )


@dataclass(frozen=True)
class GcReport:
    """Outcome of :meth:`Vault.vault_gc`."""

    grace: timedelta
    #: Destroyed (True) or only listed (False).
    destroy: bool
    orphans: tuple[OrphanSalt, ...]
    #: How many salt documents were destroyed.
    destroyed: int
    #: Shredded records (per the database) whose salt has a live version again
    #: or lost its ``shredded`` mark: ``record_id``, ``live_versions``, ``marked``.
    revived: tuple[Mapping[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON form (``vault gc --json``)."""
        return {
            "ok": not self.revived,
            "grace_seconds": int(self.grace.total_seconds()),
            "destroy": self.destroy,
            "orphans": [o.to_json() for o in self.orphans],
            "destroyed": self.destroyed,
            "revived": [dict(r) for r in self.revived],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> GcReport:
        """From :meth:`to_json` output."""
        return cls(
            grace=timedelta(seconds=int(doc["grace_seconds"])),
            destroy=bool(doc["destroy"]),
            orphans=tuple(OrphanSalt.from_json(o) for o in doc["orphans"]),
            destroyed=int(doc["destroyed"]),
            revived=tuple(dict(r) for r in doc.get("revived") or ()),
        )


@dataclass(frozen=True)
class DecommissionCosign:
    """Outcome of :meth:`Vault.cosign_decommission`."""

    #: The guardian contact list, sealed to the officer who co-signed.
    contacts: Path
    #: How many records the list covers.
    records: int
    #: SHA-256 (hex) of the list, as logged.
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """JSON form (``decommission --cosign --json``)."""
        return {
            "ok": True,
            "contacts": str(self.contacts),
            "records": self.records,
            "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DecommissionCosign:
        """From :meth:`to_json` output."""
        return cls(
            contacts=Path(doc["contacts"]),
            records=int(doc["records"]),
            sha256=str(doc["sha256"]),
        )


@dataclass(frozen=True)
class DecommissionContacts:
    """Outcome of :meth:`Vault.open_decommission_contacts`: the guardian contact
    list of a decommissioning, opened by the officer who co-signed it (P-23)."""

    #: One row a record: ``record_id`` and the contact fields the schema has
    #: (``name``, ``guardian_name``, ``guardian_phone``).
    contacts: tuple[Mapping[str, str], ...]
    #: SHA-256 (hex) of the sealed file, as its co-signature logged it.
    sha256: str
    #: The CSV written (mode 0600), or None when the rows were only returned.
    out: Path | None

    def to_json(self) -> dict[str, Any]:
        """JSON form (``decommission --read-contacts --json``)."""
        return {
            "ok": True,
            "contacts": [dict(c) for c in self.contacts],
            "records": len(self.contacts),
            "sha256": self.sha256,
            "out": None if self.out is None else str(self.out),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DecommissionContacts:
        """From :meth:`to_json` output."""
        return cls(
            contacts=tuple({str(k): str(v) for k, v in c.items()} for c in doc["contacts"]),
            sha256=str(doc["sha256"]),
            out=None if doc.get("out") is None else Path(doc["out"]),
        )


@dataclass(frozen=True)
class BackupReport:
    """Outcome of :meth:`Vault.backup`."""

    #: The directory holding the copy.
    backup: Path
    #: The files copied, relative to :attr:`backup`.
    files: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form (``backup --json``)."""
        return {"ok": True, "backup": str(self.backup), "files": list(self.files)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> BackupReport:
        """From :meth:`to_json` output."""
        return cls(backup=Path(doc["backup"]), files=tuple(str(f) for f in doc["files"]))


@dataclass(frozen=True)
class RebaselineReport:
    """Outcome of :meth:`Vault.rebaseline` after restoring a backup."""

    #: The restored log's size: entries from here on were lost.
    restored_at: int
    #: The first lost entry's sequence number.
    lost_from: int
    #: The last lost entry's sequence number (the witness had seen it).
    lost_to: int
    #: The signed restore note appended to the witness.
    note: str

    def to_json(self) -> dict[str, Any]:
        """JSON form (``audit rebaseline --json``, without the witness path)."""
        return {
            "ok": True,
            "restored_at": self.restored_at,
            "lost_from": self.lost_from,
            "lost_to": self.lost_to,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RebaselineReport:
        """From :meth:`to_json` output."""
        return cls(
            restored_at=int(doc["restored_at"]),
            lost_from=int(doc["lost_from"]),
            lost_to=int(doc["lost_to"]),
            note=str(doc["note"]),
        )


@dataclass(frozen=True)
class VaultSetting:
    """One signed setting (:meth:`Vault.list_settings`, :meth:`Vault.set_setting`)."""

    key: str
    #: The effective value: the latest verified ``setting.set``, else the default.
    value: str
    default: str
    #: The role that signs it: ``admin`` (approval limits) or ``officer``.
    signer: str
    #: ``signed`` (a verified statement set it) or ``default``.
    source: str
    #: Who signed the effective value (None for a default).
    signed_by: str | None = None
    #: The database row, when it differs from the effective value (ignored).
    meta: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form (``settings list --json`` items, ``settings set --json``)."""
        return {
            "key": self.key,
            "value": self.value,
            "default": self.default,
            "signer": self.signer,
            "source": self.source,
            "signed_by": self.signed_by,
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> VaultSetting:
        """From :meth:`to_json` output."""
        return cls(
            key=str(doc["key"]),
            value=str(doc["value"]),
            default=str(doc["default"]),
            signer=str(doc["signer"]),
            source=str(doc["source"]),
            signed_by=None if doc.get("signed_by") is None else str(doc["signed_by"]),
            meta=None if doc.get("meta") is None else str(doc["meta"]),
        )
