"""Value types returned by the public API. None of them holds a child's data,
except :class:`ReadResult` values, which are returned only after an approved,
logged read.

Times are aware :class:`datetime` values in UTC and days are :class:`date`
values; ``to_json()`` gives them in the stored text form (RFC 3339 with
microseconds and ``Z``, and ``YYYY-MM-DD``), as the command line prints them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from childvault.vault._time import iso

ROLES = ("staff", "officer", "admin")


@dataclass(frozen=True)
class UserInfo:
    """A registered user, as shown by ``user list``."""

    name: str
    roles: tuple[str, ...]
    created_at: datetime
    vkey: str | None
    #: For officers: whether they hold the current custodian key (can approve).
    can_approve: bool = False
    #: For an entrusted organisation's account: ``{organisation, agreement,
    #: expires}`` from its verified signed registration (P-16); else None.
    entrusted: Mapping[str, str] | None = None
    #: Whether that agreement has ended (the account is refused).
    expired: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON form (``entrusted`` only for entrusted organisations' accounts)."""
        doc: dict[str, Any] = {
            "name": self.name,
            "roles": list(self.roles),
            "created_at": iso(self.created_at),
            "vkey": self.vkey,
            "can_approve": self.can_approve,
        }
        if self.entrusted is not None:
            doc["entrusted"] = {**self.entrusted, "expired": self.expired}
        return doc


@dataclass(frozen=True)
class RecordInfo:
    """Clear bookkeeping of a record: never a field value."""

    id: str
    type: str
    version: int
    created_at: datetime
    created_by: str
    updated_at: datetime
    purposes: tuple[str, ...]
    retain_until: date
    consent_by: str
    notice_version: str
    fields: tuple[str, ...]
    metadata: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "id": self.id,
            "type": self.type,
            "version": self.version,
            "created_at": iso(self.created_at),
            "created_by": self.created_by,
            "updated_at": iso(self.updated_at),
            "purposes": list(self.purposes),
            "retain_until": self.retain_until.isoformat(),
            "consent_by": self.consent_by,
            "notice_version": self.notice_version,
            "fields": list(self.fields),
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class ImportReport:
    """Outcome of an import."""

    source: str
    rows: int
    imported: int
    skipped_invalid: int
    already_done: int
    errors: tuple[tuple[int, str], ...]
    record_ids: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON form (record ids are included only for small imports)."""
        return {
            "source": self.source,
            "rows": self.rows,
            "imported": self.imported,
            "skipped_invalid": self.skipped_invalid,
            "already_done": self.already_done,
            "errors": [{"row": r, "reason": m} for r, m in self.errors],
            "record_ids": list(self.record_ids),
        }


@dataclass(frozen=True)
class RequestInfo:
    """An access request, as shown to officers (no child data)."""

    id: str
    requester: str
    records: tuple[str, ...]
    fields: tuple[str, ...]
    purpose: str
    reason: str
    created_at: datetime
    status: str
    decided_by: str | None
    decision_reason: str | None

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "id": self.id,
            "requester": self.requester,
            "records": list(self.records),
            "record_count": len(self.records),
            "fields": list(self.fields),
            "purpose": self.purpose,
            "reason": self.reason,
            "created_at": iso(self.created_at),
            "status": self.status,
            "decided_by": self.decided_by,
            "decision_reason": self.decision_reason,
        }


@dataclass(frozen=True)
class Approval:
    """An issued approval: the token to hand to the requester, and its limits."""

    grant_id: str
    request_id: str
    requester: str
    token: str = field(repr=False)
    expires_at: datetime
    uses: int
    checkpoint: str

    def to_json(self) -> dict[str, Any]:
        """JSON form (includes the token: it is useless to anyone but the requester)."""
        return {
            "grant_id": self.grant_id,
            "request_id": self.request_id,
            "requester": self.requester,
            "expires_at": iso(self.expires_at),
            "uses": self.uses,
            "token": self.token,
            "checkpoint": self.checkpoint,
        }
