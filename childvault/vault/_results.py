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
from datetime import date, datetime
from pathlib import Path
from typing import Any

from childvault.vault._time import iso, parse_iso

__all__ = [
    "DecommissionReport",
    "Incident",
    "RightsLink",
    "RightsRequest",
    "RotationReport",
    "SweepReport",
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
