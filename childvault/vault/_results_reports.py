"""Typed results read from the log or released from the vault: transfers, the rights and
incident registers, the anonymized export and the reconciliation with Vault's audit log.

Separate from :mod:`childvault.vault._results` (which re-exports them) so each
group of result types stays a readable size; the conventions are the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from childvault.vault._time import iso, parse_iso

__all__ = [
    "AnonymizedExport",
    "AuditReconciliation",
    "Incident",
    "RightsLink",
    "RightsRequest",
    "Transfer",
    "UnmatchedDecrypt",
]


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
    """A Transit decrypt in Vault's audit log that no childvault approval accounts for,
    or an unwrap of one's wrapping token that childvault's log does not (``reason``)."""

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
    #: Empty for a decrypt. For an unwrap (``unmatched_unwraps``):
    #: ``unwrap-not-approved`` (no approval recorded its token),
    #: ``unwrap-not-requester`` (another person's AppRole role) or
    #: ``unwrap-no-read`` (no read by the requester accounts for it).
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON form (one of ``audit reconcile --json``'s ``unmatched``)."""
        return {
            "reason": self.reason,
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
            reason=str(doc.get("reason") or ""),
        )


@dataclass(frozen=True)
class AuditReconciliation:
    """Outcome of :meth:`Vault.reconcile_vault_audit` (``audit reconcile``)."""

    #: No unmatched decrypt and no unmatched unwrap.
    ok: bool
    vault_audit: Path
    #: Transit decrypts on this vault's key found in Vault's audit log.
    decrypts: int
    #: Of those, how many a childvault approval accounts for.
    matched: int
    unmatched: tuple[UnmatchedDecrypt, ...]
    #: Unwraps of those decrypts' wrapping tokens found in Vault's audit log.
    unwraps: int = 0
    #: Of those, the ones childvault's log does not account for (with ``reason``).
    unmatched_unwraps: tuple[UnmatchedDecrypt, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON form (``audit reconcile --json``)."""
        return {
            "ok": self.ok,
            "vault_audit": str(self.vault_audit),
            "decrypts": self.decrypts,
            "matched": self.matched,
            "unmatched": [u.to_json() for u in self.unmatched],
            "unwraps": self.unwraps,
            "unmatched_unwraps": [u.to_json() for u in self.unmatched_unwraps],
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
            unwraps=int(doc.get("unwraps") or 0),
            unmatched_unwraps=tuple(
                UnmatchedDecrypt.from_json(u) for u in doc.get("unmatched_unwraps") or ()
            ),
        )
