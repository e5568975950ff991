"""The incident register (P-21, M-16): 泄露 / 毁损 / 丢失, affected records, notifications.

Like the rights register (:mod:`._svc_rights`), the register is log entries
only (``incident.open``, ``incident.add_records``, ``incident.notify``,
``incident.close``), folded when listed, so no table can make an incident
look reported. Record ids, kinds and times only: no child data.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from childvault._i18n import _t, join
from childvault.keys import NotFound, UsageError
from childvault.keys._encoding import check_hex_id
from childvault.vault._audit import Event
from childvault.vault._session import Session, new_id
from childvault.vault._svc_rights import log_entries

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
        self.s.require(("officer",), "incident.open", moment, _t("registering incidents"))
        if kind not in INCIDENT_KINDS:
            raise UsageError(
                _t("--kind must be one of {choices}", choices=join(", ", INCIDENT_KINDS))
            )
        if discovered > moment:
            raise UsageError(_t("--discovered is in the future"))
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
        self.s.require(("officer",), "incident.add_records", moment, _t("registering incidents"))
        row = self._open_row(incident_id)
        ids = list(dict.fromkeys(check_hex_id(r, "record") for r in records))
        if not ids:
            raise UsageError(_t("name at least one record"))
        for rid in ids:
            if self.s.db.records.get(rid) is None and not self.s.db.records.tombstone(rid):
                raise NotFound(_t("no record {record_id}", record_id=rid))
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
        self.s.require(("officer",), "incident.notify", moment, _t("registering incidents"))
        if audience not in INCIDENT_AUDIENCES:
            raise UsageError(
                _t("--to must be one of {choices}", choices=join(", ", INCIDENT_AUDIENCES))
            )
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
        self.s.require(("officer",), "incident.close", moment, _t("registering incidents"))
        row = self._open_row(incident_id)
        if "authority" not in row["notified"]:
            raise UsageError(
                _t(
                    "the incident was not reported to the authorities yet (P-21): run "
                    "`childvault incident notify {id} --to authority` first",
                    id=row["id"],
                )
            )
        self.s.log(
            [Event(self.s.user, "incident.close", detail={"incident": row["id"]})],
            moment,
        )
        return self.get(incident_id)

    def _open_row(self, incident_id: str) -> dict[str, Any]:
        row = self.get(incident_id)
        if row["status"] != "open":
            raise UsageError(_t("incident {id} is closed", id=incident_id))
        return row

    def get(self, incident_id: str) -> dict[str, Any]:
        """One incident; NotFound if none was opened with that id."""
        check_hex_id(incident_id, "incident")
        for row in self.rows():
            if row["id"] == incident_id:
                return row
        raise NotFound(_t("no incident {id}", id=incident_id))

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
        self.s.require(("officer", "admin"), "incident.list", moment, _t("reading the incidents"))
        rows = self.rows()
        self.s.log([Event(self.s.user, "incident.list", detail={"count": len(rows)})], moment)
        return rows
