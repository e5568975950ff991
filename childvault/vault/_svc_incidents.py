"""The incident register (P-21, M-16): 泄露 / 毁损 / 丢失, affected records, notifications.

Like the rights register (:mod:`._svc_rights`), the register is log entries
only (``incident.open``, ``incident.add_records``, ``incident.notify``,
``incident.close``), folded when listed, so no table can make an incident
look reported. Record ids, kinds and times only: no child data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from childvault._i18n import _t
from childvault.keys import NotFound, UsageError
from childvault.keys._encoding import check_hex_id
from childvault.vault._audit import Event
from childvault.vault._session import Session, new_id
from childvault.vault._svc_rights import log_entries

if TYPE_CHECKING:
    from childvault.vault._svc_access import AccessService

#: Format of the guardian contact list ``incident contacts`` writes (sealed).
CONTACTS_FORMAT = "childvault-incident-contacts/1"

#: Incident types: 泄露 (leak), 毁损 (damage), 丢失 (loss) (P-21).
INCIDENT_KINDS = ("leak", "damage", "loss")
#: Who an incident was notified to.
INCIDENT_AUDIENCES = ("guardians", "authority")


class IncidentService:
    """Open, extend, notify and close incidents."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def open(
        self, kind: str, discovered: datetime, *, now: datetime | None = None
    ) -> dict[str, Any]:
        """Officer: register an incident of ``kind`` discovered at ``discovered``."""
        moment = self.s.now(now)
        self.s.require(("officer",), "incident.open", moment, "registering incidents")
        if kind not in INCIDENT_KINDS:
            raise UsageError(f"--kind must be one of {', '.join(INCIDENT_KINDS)}")
        if discovered > moment:
            raise UsageError("--discovered is in the future")
        incident_id = new_id()
        self.s.log(
            [
                Event(
                    self.s.user,
                    "incident.open",
                    detail={
                        "incident": incident_id,
                        "kind": kind,
                        "discovered": discovered.isoformat(),
                    },
                )
            ],
            moment,
        )
        return self.get(incident_id)

    def add_records(
        self, incident_id: str, records: Sequence[str], *, now: datetime | None = None
    ) -> dict[str, Any]:
        """Officer: add affected records (ids of records that exist or were deleted)."""
        moment = self.s.now(now)
        self.s.require(("officer",), "incident.add_records", moment, "registering incidents")
        row = self._open_row(incident_id)
        ids = list(dict.fromkeys(check_hex_id(r, "record") for r in records))
        if not ids:
            raise UsageError("name at least one record")
        for rid in ids:
            if self.s.db.records.get(rid) is None and not self.s.db.records.tombstone(rid):
                raise NotFound(f"no record {rid}")
        self.s.log(
            [
                Event(
                    self.s.user,
                    "incident.add_records",
                    records=ids,
                    detail={"incident": row["id"]},
                )
            ],
            moment,
        )
        return self.get(incident_id)

    def notify(
        self, incident_id: str, audience: str, *, now: datetime | None = None
    ) -> dict[str, Any]:
        """Officer: record that the guardians or the authority were notified (P-21)."""
        moment = self.s.now(now)
        self.s.require(("officer",), "incident.notify", moment, "registering incidents")
        if audience not in INCIDENT_AUDIENCES:
            raise UsageError(f"--to must be one of {', '.join(INCIDENT_AUDIENCES)}")
        row = self._open_row(incident_id)
        self.s.log(
            [
                Event(
                    self.s.user,
                    "incident.notify",
                    records=row["records"] if audience == "guardians" else [],
                    detail={"incident": row["id"], "to": audience},
                )
            ],
            moment,
        )
        return self.get(incident_id)

    def close(self, incident_id: str, *, now: datetime | None = None) -> dict[str, Any]:
        """Officer: close an incident; refused until the authority was notified (P-21)."""
        moment = self.s.now(now)
        self.s.require(("officer",), "incident.close", moment, "registering incidents")
        row = self._open_row(incident_id)
        if "authority" not in row["notified"]:
            raise UsageError(
                "the incident was not reported to the authorities yet (P-21): run "
                f"`childvault incident notify {row['id']} --to authority` first"
            )
        self.s.log(
            [Event(self.s.user, "incident.close", detail={"incident": row["id"]})],
            moment,
        )
        return self.get(incident_id)

    def _open_row(self, incident_id: str) -> dict[str, Any]:
        row = self.get(incident_id)
        if row["status"] != "open":
            raise UsageError(f"incident {incident_id} is closed")
        return row

    def get(self, incident_id: str) -> dict[str, Any]:
        """One incident; NotFound if none was opened with that id."""
        check_hex_id(incident_id, "incident")
        for row in self.rows():
            if row["id"] == incident_id:
                return row
        raise NotFound(f"no incident {incident_id}")

    def rows(self) -> list[dict[str, Any]]:
        """Every incident, oldest first, folded from the log."""
        actions = ("incident.open", "incident.add_records", "incident.notify", "incident.close")
        rows: dict[str, dict[str, Any]] = {}
        for doc in log_entries(self.s, actions):
            detail = doc["detail"]
            iid = str(detail.get("incident"))
            if doc["action"] == "incident.open":
                rows[iid] = {
                    "id": iid,
                    "kind": detail["kind"],
                    "discovered": detail["discovered"],
                    "opened_at": doc["ts"],
                    "opened_by": doc["actor"],
                    "records": [],
                    "notified": {},
                    "status": "open",
                    "closed_at": None,
                }
                continue
            row = rows.get(iid)
            if row is None:
                continue
            if doc["action"] == "incident.add_records":
                row["records"].extend(r for r in doc["records"] if r not in row["records"])
            elif doc["action"] == "incident.notify":
                row["notified"][detail["to"]] = doc["ts"]
            else:
                row.update(status="closed", closed_at=doc["ts"])
        return list(rows.values())

    def list(self, *, now: datetime | None = None) -> list[dict[str, Any]]:
        """Officer or admin: the incident register (logged)."""
        moment = self.s.now(now)
        self.s.require(("officer", "admin"), "incident.list", moment, "reading the incidents")
        rows = self.rows()
        self.s.log([Event(self.s.user, "incident.list", detail={"count": len(rows)})], moment)
        return rows


def contacts(
    service: IncidentService,
    access: AccessService,
    incident_id: str,
    *,
    tokens: Sequence[str] = (),
    out: Path | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Officer: the guardian contact list of an incident, in two steps (P-21).

    Without ``tokens``: file ``breach_notification`` requests for the contact
    fields of the incident's live records (one per ``max_records`` records)
    and return their ids; another officer approves them (four eyes: nobody
    approves their own request). With the approval ``tokens`` and ``out``:
    read through each grant (each read logged like any other), check that
    every grant is a breach notification of this incident, and write the list
    sealed to the acting officer's own key (mode 0600); the ``incident.contacts``
    entry carries the file's SHA-256 and the count. Open it with
    :func:`open_contacts`. Deleted records have no contacts left to list.
    """
    from childvault.keys._files import atomic_write
    from childvault.vault._policy import CONTACT_FIELDS
    from childvault.vault._svc_access import Basis

    s = service.s
    moment = s.now(now)
    s.require(("officer",), "incident.contacts", moment, "listing the contacts of an incident")
    row = service._open_row(incident_id)
    if not tokens:
        live = [r for r in row["records"] if s.db.records.get(r) is not None]
        if not live:
            raise UsageError(
                _t(
                    "incident {id} names no live record: there are no contacts to list",
                    id=row["id"],
                )
            )
        fields = [f for f in CONTACT_FIELDS if any(f in t.fields for t in s.schema.types.values())]
        purpose = (
            "case_management" if "case_management" in s.schema.purposes else s.schema.purposes[0]
        )
        cap = int(s.setting("max_records"))
        basis = Basis("breach_notification", link=row["id"])
        requests = [
            access.request_access(
                live[at : at + cap],
                fields,
                purpose,
                f"incident {row['id']}: guardian contact list (P-21)",
                now=moment,
                basis=basis,
            )
            for at in range(0, len(live), cap)
        ]
        return {"incident": row["id"], "requests": requests, "records": len(live)}
    if out is None:
        raise UsageError(_t("--grant needs --out FILE for the sealed contact list"))
    if not out.parent.is_dir():
        raise UsageError(_t("the directory of --out ({dir}) does not exist", dir=out.parent))
    listed: dict[str, dict[str, str]] = {}
    for token in tokens:
        # The grant's basis is checked before the read, so a stray token's use
        # is not spent (the token itself is verified by _check_grant).
        claims = access._check_grant(token, None, None, moment)
        basis = access.basis_of(claims.req)
        if basis.kind != "breach_notification" or basis.link != row["id"]:
            raise UsageError(
                _t(
                    "grant {grant} is not a breach notification of incident {id}",
                    grant=claims.jti,
                    id=row["id"],
                )
            )
        listed.update(access.read_with_claims(token, None, None, moment)[1])
    rows = [{"record_id": rid, **listed[rid]} for rid in sorted(listed)]
    doc = {
        "format": CONTACTS_FORMAT,
        "vault_id": s.vault_id,
        "incident": row["id"],
        "contacts": rows,
    }
    sealed = s.me.public.seal(json.dumps(doc, ensure_ascii=False).encode("utf-8"))
    atomic_write(out, sealed, mode=0o600)
    digest = hashlib.sha256(sealed).hexdigest()
    s.log(
        [
            Event(
                s.user,
                "incident.contacts",
                records=sorted(listed),
                detail={"incident": row["id"], "sha256": digest, "count": len(rows)},
            )
        ],
        moment,
    )
    return {"incident": row["id"], "out": str(out), "records": len(rows), "sha256": digest}


def open_contacts(service: IncidentService, path: Path) -> dict[str, Any]:
    """Officer: open a contact list sealed to the acting officer (:func:`contacts`)."""
    from childvault.keys import DecryptionFailed

    s = service.s
    try:
        doc = json.loads(s.me.unseal(path.read_bytes()))
    except (OSError, ValueError, DecryptionFailed):
        raise UsageError(_t("{path} is not a contact list sealed to you", path=path)) from None
    if not isinstance(doc, dict) or doc.get("format") != CONTACTS_FORMAT:
        raise UsageError(_t("{path} is not a contact list sealed to you", path=path))
    if doc.get("vault_id") != s.vault_id:
        raise UsageError(_t("this contact list is from another vault"))
    return doc
