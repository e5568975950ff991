"""Typed results of the public operations that used to return ``dict[str, Any]``.

Each is a frozen dataclass with real types (dates as :class:`date`,
timestamps as aware :class:`datetime` in UTC) and a ``to_json()`` that gives
exactly the JSON object the command line prints with ``--json`` (unchanged
from before, so scripts reading it keep working). The services still build
the JSON form; ``from_json`` turns it into the typed result at the facade.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class DisabledUser:
    """Outcome of :meth:`Vault.disable_user`."""

    user: str
    #: The grants of that user revoked in the same operation.
    revoked_grants: tuple[str, ...]
    #: They held the custodian key: an officer must run ``keys rotate`` before
    #: new records can be written.
    rotation_required: bool

    def to_json(self) -> dict[str, Any]:
        """JSON form (``user disable --json``)."""
        return {
            "ok": True,
            "user": self.user,
            "revoked_grants": list(self.revoked_grants),
            "rotation_required": self.rotation_required,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DisabledUser:
        """From :meth:`to_json` output (or the service's mapping)."""
        return cls(
            user=str(doc["user"]),
            revoked_grants=tuple(str(g) for g in doc["revoked_grants"]),
            rotation_required=bool(doc["rotation_required"]),
        )


@dataclass(frozen=True)
class UserInvite:
    """A one-time invite made by :meth:`Vault.invite_user`."""

    user: str
    roles: tuple[str, ...]
    #: Until when :meth:`Vault.add_user_from_request` accepts it (UTC).
    expires: datetime
    #: The vault anchor's fingerprint, to tell the person in person or by phone.
    fingerprint: str
    #: The invite file's bytes, to hand to the person.
    invite: bytes

    def to_json(self, written_to: Path) -> dict[str, Any]:
        """JSON form (``user invite --json``): the invite's path, not its bytes."""
        return {
            "ok": True,
            "user": self.user,
            "roles": list(self.roles),
            "expires": iso(self.expires),
            "fingerprint": self.fingerprint,
            "invite": str(written_to),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> UserInvite:
        """From the service's mapping (``invite`` holds the bytes)."""
        return cls(
            user=str(doc["user"]),
            roles=tuple(str(r) for r in doc["roles"]),
            expires=parse_iso(str(doc["expires"])),
            fingerprint=str(doc["fingerprint"]),
            invite=bytes(doc["invite"]),
        )


@dataclass(frozen=True)
class InviteSummary:
    """What :meth:`Vault.read_invite` shows before enrolling (only its form is checked)."""

    user: str
    roles: tuple[str, ...]
    vault_id: str
    invited_by: str
    expires: datetime
    #: The vault anchor's fingerprint, to confirm with the admin.
    fingerprint: str

    def to_json(self) -> dict[str, Any]:
        """JSON form (the invite's public members)."""
        return {
            "user": self.user,
            "roles": list(self.roles),
            "vault_id": self.vault_id,
            "invited_by": self.invited_by,
            "expires": iso(self.expires),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> InviteSummary:
        """From :meth:`to_json` output."""
        return cls(
            user=str(doc["user"]),
            roles=tuple(str(r) for r in doc["roles"]),
            vault_id=str(doc["vault_id"]),
            invited_by=str(doc["invited_by"]),
            expires=parse_iso(str(doc["expires"])),
            fingerprint=str(doc["fingerprint"]),
        )


@dataclass(frozen=True)
class UpgradeReport:
    """Outcome of :meth:`Vault.upgrade` for the user who ran it."""

    user: str
    #: What was done, in order (empty: nothing to do).
    steps: tuple[str, ...]
    #: The vault anchor's fingerprint.
    fingerprint: str
    #: Users whose registration is not verified yet (they run ``upgrade``).
    pending: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form (``upgrade --json``)."""
        return {
            "ok": True,
            "user": self.user,
            "steps": list(self.steps),
            "fingerprint": self.fingerprint,
            "pending": list(self.pending),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> UpgradeReport:
        """From :meth:`to_json` output."""
        return cls(
            user=str(doc["user"]),
            # A step made in this process stays a Message (shown in the reader's language).
            steps=tuple(s if isinstance(s, str) else str(s) for s in doc["steps"]),
            fingerprint=str(doc["fingerprint"]),
            pending=tuple(str(p) for p in doc["pending"]),
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

    def to_json(self) -> dict[str, Any]:
        """JSON form (``vault gc --json``)."""
        return {
            "ok": True,
            "grace_seconds": int(self.grace.total_seconds()),
            "destroy": self.destroy,
            "orphans": [o.to_json() for o in self.orphans],
            "destroyed": self.destroyed,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> GcReport:
        """From :meth:`to_json` output."""
        return cls(
            grace=timedelta(seconds=int(doc["grace_seconds"])),
            destroy=bool(doc["destroy"]),
            orphans=tuple(OrphanSalt.from_json(o) for o in doc["orphans"]),
            destroyed=int(doc["destroyed"]),
        )


@dataclass(frozen=True)
class Transfer:
    """A read that handed data to another organisation (P-17), from the log."""

    #: The ``grant.read`` entry's sequence number.
    seq: int
    #: When the read happened (UTC).
    at: datetime
    reader: str
    recipient: str
    provision: str | None
    assessment: str | None
    basis: str | None
    records: tuple[str, ...]
    fields: tuple[str, ...]
    request: str | None

    def to_json(self) -> dict[str, Any]:
        """JSON form (one of ``report transfers --json``'s ``transfers``)."""
        return {
            "seq": self.seq,
            "ts": iso(self.at),
            "reader": self.reader,
            "recipient": self.recipient,
            "provision": self.provision,
            "assessment": self.assessment,
            "basis": self.basis,
            "records": list(self.records),
            "fields": list(self.fields),
            "request": self.request,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Transfer:
        """From :meth:`to_json` output."""

        def opt(key: str) -> str | None:
            value = doc.get(key)
            return None if value is None else str(value)

        return cls(
            seq=int(doc["seq"]),
            at=parse_iso(str(doc["ts"])),
            reader=str(doc["reader"]),
            recipient=str(doc["recipient"]),
            provision=opt("provision"),
            assessment=opt("assessment"),
            basis=opt("basis"),
            records=tuple(str(r) for r in doc["records"]),
            fields=tuple(str(f) for f in doc["fields"]),
            request=opt("request"),
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
class KeyRenewalRequest:
    """Outcome of :meth:`Vault.request_key_renewal`: new keys waiting for an admin."""

    user: str
    #: The log sequence number of the pending renewal.
    request: int
    #: The new identity file (used once an admin approves).
    identity: Path

    def to_json(self) -> dict[str, Any]:
        """JSON form (``keys renew --json``)."""
        return {
            "ok": True,
            "user": self.user,
            "request": self.request,
            "identity": str(self.identity),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> KeyRenewalRequest:
        """From :meth:`to_json` output."""
        return cls(
            user=str(doc["user"]),
            request=int(doc["request"]),
            identity=Path(doc["identity"]),
        )


@dataclass(frozen=True)
class KeyRenewal:
    """Outcome of :meth:`Vault.approve_key_renewal`."""

    user: str
    #: The log sequence number of the renewal request that was approved.
    request: int

    def to_json(self) -> dict[str, Any]:
        """JSON form (``keys renew --approve --json``)."""
        return {"ok": True, "user": self.user, "request": self.request}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> KeyRenewal:
        """From :meth:`to_json` output."""
        return cls(user=str(doc["user"]), request=int(doc["request"]))


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


# -- issue 15: the rights and incident registers, typed -------------------------


@dataclass(frozen=True)
class RightsLink:
    """An operation that answered a rights request (``--rights-request ID``)."""

    #: The log action: ``report.subject``, ``record.correct`` or ``record.delete``.
    action: str
    at: datetime


@dataclass(frozen=True)
class RightsRequest:
    """One entry of the rights-request register (P-19, P-20, M-17), folded from the log."""

    id: str
    #: ``access`` (查询/复制), ``correct`` (更正), ``delete`` (删除) or ``object`` (异议).
    kind: str
    record: str
    #: ``child`` or ``guardian``.
    by: str
    received: date
    deadline: date
    identity_checked: bool
    opened_by: str
    #: ``open`` or ``closed``.
    status: str
    outcome: str | None
    closed_at: datetime | None
    overdue: bool
    links: tuple[RightsLink, ...] = ()
    #: Why a refused request was refused.
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``rights ... --json``."""
        doc: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "record": self.record,
            "by": self.by,
            "received": self.received.isoformat(),
            "deadline": self.deadline.isoformat(),
            "identity_checked": self.identity_checked,
            "opened_by": self.opened_by,
            "status": self.status,
            "outcome": self.outcome,
            "closed_at": None if self.closed_at is None else iso(self.closed_at),
            "links": [{"action": link.action, "at": iso(link.at)} for link in self.links],
        }
        if self.reason is not None:
            doc["reason"] = self.reason
        doc["overdue"] = self.overdue
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RightsRequest:
        """From the register row the service folds (the form of :meth:`to_json`)."""
        closed = doc.get("closed_at")
        return cls(
            id=str(doc["id"]),
            kind=str(doc["kind"]),
            record=str(doc["record"]),
            by=str(doc["by"]),
            received=date.fromisoformat(doc["received"]),
            deadline=date.fromisoformat(doc["deadline"]),
            identity_checked=bool(doc["identity_checked"]),
            opened_by=str(doc["opened_by"]),
            status=str(doc["status"]),
            outcome=None if doc.get("outcome") is None else str(doc["outcome"]),
            closed_at=None if closed is None else parse_iso(closed),
            overdue=bool(doc["overdue"]),
            links=tuple(
                RightsLink(str(link["action"]), parse_iso(link["at"]))
                for link in doc.get("links", ())
            ),
            reason=None if doc.get("reason") is None else str(doc["reason"]),
        )


@dataclass(frozen=True)
class Incident:
    """One entry of the incident register (P-21, M-16), folded from the log."""

    id: str
    #: ``leak`` (泄露), ``damage`` (毁损) or ``loss`` (丢失).
    kind: str
    discovered: datetime
    opened_at: datetime
    opened_by: str
    records: tuple[str, ...]
    #: Audience (``guardians``, ``authority``) -> when it was notified.
    notified: Mapping[str, datetime]
    #: ``open`` or ``closed``.
    status: str
    closed_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``incident ... --json``."""
        return {
            "id": self.id,
            "kind": self.kind,
            "discovered": self.discovered.isoformat(),
            "opened_at": iso(self.opened_at),
            "opened_by": self.opened_by,
            "records": list(self.records),
            "notified": {to: iso(at) for to, at in self.notified.items()},
            "status": self.status,
            "closed_at": None if self.closed_at is None else iso(self.closed_at),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Incident:
        """From the register row the service folds (the form of :meth:`to_json`)."""
        closed = doc.get("closed_at")
        return cls(
            id=str(doc["id"]),
            kind=str(doc["kind"]),
            discovered=datetime.fromisoformat(doc["discovered"]),
            opened_at=parse_iso(doc["opened_at"]),
            opened_by=str(doc["opened_by"]),
            records=tuple(doc["records"]),
            notified={str(to): parse_iso(at) for to, at in doc["notified"].items()},
            status=str(doc["status"]),
            closed_at=None if closed is None else parse_iso(closed),
        )


@dataclass(frozen=True)
class AnonymizedExport:
    """Outcome of :meth:`Vault.export_anonymized` (M-3, M-14): what was released.

    The counts are those of the ``export.anonymized`` log entry that records
    the release (its ``sha256`` is the file's, ``released_sha256`` the
    release record's, docs/reports.md).
    """

    #: The export's id (in its log entries and the release record).
    export: str
    #: The smallest class kept.
    k: int
    #: Records used (eligible and decrypted).
    records: int
    #: Records in the classes written.
    records_exported: int
    classes: int
    suppressed_classes: int
    #: The l of l-diversity on the sensitive column (``l`` in the JSON form).
    l_diversity: int
    l_suppressed_groups: int
    subtraction_suppressed_classes: int
    released_sha256: str
    suppressed_records: int
    #: Batches of keys released (each logged before it was decrypted).
    batches: int
    excluded_no_statistics_consent: int
    excluded_past_retention: int
    excluded_outdated_notice: int
    #: SHA-256 (hex) of the file written.
    sha256: str
    out: Path
    #: The file's header: ``record_type``, the exported columns, ``count``.
    columns: tuple[str, ...]
    #: The day ages were taken on (the institution's time zone).
    export_date: date

    def to_json(self) -> dict[str, Any]:
        """JSON form (``export anonymized --json`` without ``ok``), keys in their old order."""
        return {
            "export": self.export,
            "k": self.k,
            "records": self.records,
            "records_exported": self.records_exported,
            "classes": self.classes,
            "suppressed_classes": self.suppressed_classes,
            "l": self.l_diversity,
            "l_suppressed_groups": self.l_suppressed_groups,
            "subtraction_suppressed_classes": self.subtraction_suppressed_classes,
            "released_sha256": self.released_sha256,
            "suppressed_records": self.suppressed_records,
            "batches": self.batches,
            "excluded_no_statistics_consent": self.excluded_no_statistics_consent,
            "excluded_past_retention": self.excluded_past_retention,
            "excluded_outdated_notice": self.excluded_outdated_notice,
            "sha256": self.sha256,
            "out": str(self.out),
            "columns": list(self.columns),
            "excluded": {
                "no_statistics_consent": self.excluded_no_statistics_consent,
                "past_retention": self.excluded_past_retention,
                "outdated_notice": self.excluded_outdated_notice,
            },
            "export_date": self.export_date.isoformat(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> AnonymizedExport:
        """From :meth:`to_json` output (what the export service returns)."""
        return cls(
            export=str(doc["export"]),
            k=int(doc["k"]),
            records=int(doc["records"]),
            records_exported=int(doc["records_exported"]),
            classes=int(doc["classes"]),
            suppressed_classes=int(doc["suppressed_classes"]),
            l_diversity=int(doc["l"]),
            l_suppressed_groups=int(doc["l_suppressed_groups"]),
            subtraction_suppressed_classes=int(doc["subtraction_suppressed_classes"]),
            released_sha256=str(doc["released_sha256"]),
            suppressed_records=int(doc["suppressed_records"]),
            batches=int(doc["batches"]),
            excluded_no_statistics_consent=int(doc["excluded_no_statistics_consent"]),
            excluded_past_retention=int(doc["excluded_past_retention"]),
            excluded_outdated_notice=int(doc["excluded_outdated_notice"]),
            sha256=str(doc["sha256"]),
            out=Path(doc["out"]),
            columns=tuple(str(c) for c in doc["columns"]),
            export_date=date.fromisoformat(doc["export_date"]),
        )


@dataclass(frozen=True)
class UnmatchedDecrypt:
    """A Transit decrypt in Vault's audit log that no childvault approval accounts for."""

    #: The time as Vault's audit log writes it (RFC 3339, kept as text: Vault
    #: writes nanoseconds, which :class:`datetime` cannot hold).
    time: str
    path: str
    vault_request_id: str
    #: Whether the decrypt was response-wrapped (what childvault's releases are).
    wrapped: bool
    display_name: str
    entity_id: str
    role_name: str
    policies: tuple[str, ...]
    remote_address: str

    def to_json(self) -> dict[str, Any]:
        """JSON form (one of ``audit reconcile --json``'s ``unmatched``)."""
        return {
            "time": self.time,
            "path": self.path,
            "vault_request_id": self.vault_request_id,
            "wrapped": self.wrapped,
            "who": {
                "display_name": self.display_name,
                "entity_id": self.entity_id,
                "role_name": self.role_name,
                "policies": list(self.policies),
                "remote_address": self.remote_address,
            },
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> UnmatchedDecrypt:
        """From :meth:`to_json` output."""
        who = doc["who"]
        return cls(
            time=str(doc["time"]),
            path=str(doc["path"]),
            vault_request_id=str(doc["vault_request_id"]),
            wrapped=bool(doc["wrapped"]),
            display_name=str(who["display_name"]),
            entity_id=str(who["entity_id"]),
            role_name=str(who["role_name"]),
            policies=tuple(str(p) for p in who["policies"]),
            remote_address=str(who["remote_address"]),
        )


@dataclass(frozen=True)
class AuditReconciliation:
    """Outcome of :meth:`Vault.reconcile_vault_audit` (``audit reconcile``)."""

    #: No unmatched decrypt.
    ok: bool
    vault_audit: Path
    #: Transit decrypts on this vault's key found in Vault's audit log.
    decrypts: int
    #: Of those, how many a childvault approval accounts for.
    matched: int
    unmatched: tuple[UnmatchedDecrypt, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form (``audit reconcile --json``)."""
        return {
            "ok": self.ok,
            "vault_audit": str(self.vault_audit),
            "decrypts": self.decrypts,
            "matched": self.matched,
            "unmatched": [u.to_json() for u in self.unmatched],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> AuditReconciliation:
        """From :meth:`to_json` output (what the reconcile service returns)."""
        return cls(
            ok=bool(doc["ok"]),
            vault_audit=Path(doc["vault_audit"]),
            decrypts=int(doc["decrypts"]),
            matched=int(doc["matched"]),
            unmatched=tuple(UnmatchedDecrypt.from_json(u) for u in doc["unmatched"]),
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
