"""The rights-request register of children and guardians (P-19, P-20, M-17).

The register is log entries and nothing else (``rights.open`` /
``rights.close``; the incident register in :mod:`._svc_incidents` works the
same way). The log is the authority (it is
hash-chained, signed and checkpointed, and ``audit verify`` checks it), so
there is no table an insider could edit to make a request look answered or an
incident look notified; listing a register folds its entries. No child data
goes into them: record ids, kinds, dates and outcomes only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from childvault._i18n import _t, join
from childvault.keys import NotFound, UsageError
from childvault.keys._encoding import check_hex_id
from childvault.vault._action_roles import logged_by_role
from childvault.vault._audit import Event
from childvault.vault._session import Session, new_id
from childvault.vault._settings import SPECS
from childvault.vault._time import legal_today

#: Kinds of rights request: 查询/复制 (access), 更正 (correct), 删除 (delete), 异议/撤回 (object).
RIGHTS_KINDS = ("access", "correct", "delete", "object")
#: Who asked: the child, or the parent or other guardian (P-19, M-17).
RIGHTS_REQUESTERS = ("child", "guardian")
#: Answer period in days unless the setting ``rights_deadline_days.<kind>`` says otherwise.
DEFAULT_RIGHTS_DEADLINE_DAYS = 15
#: Outcomes a closed rights request may have.
RIGHTS_OUTCOMES = ("done", "refused", "withdrawn")
#: The operation that answers each kind of request and may be linked to it
#: (``--rights-request ID`` on ``report subject``, ``correct``, ``delete``).
RIGHTS_ANSWERS = {
    "access": "report.subject",
    "correct": "record.correct",
    "delete": "record.delete",
}
#: The answers that are the whole answer, so linking one closes the request as
#: ``done`` (the record is gone; the subject report is made). A correction
#: changes one field and a request may name several: it leaves the request
#: open (answered, so no longer overdue) until an officer closes it.
CLOSING_ANSWERS = frozenset({"record.delete", "report.subject"})
#: Longest refusal reason kept in the register (a reason, never child data).
MAX_REASON = 500


def log_entries(session: Session, actions: Sequence[str]) -> list[dict[str, Any]]:
    """The log entries of ``actions`` in sequence order, parsed (the index is re-checked).

    The log is verified first, and an entry of an action reserved to a role
    counts only when its author held the role (``logged_by_role``): any user
    may log any action in their own name, and these entries make the registers.
    """
    state = session.trust(save=False)
    out = []
    for raw in session.db.audit.entries_by_action(tuple(actions)):
        doc = json.loads(raw)
        if (
            doc.get("action") in actions
            and doc.get("outcome") == "ok"
            and logged_by_role(state, doc)
        ):
            out.append(doc)
    return sorted(out, key=lambda d: int(d["seq"]))


class RightsService:
    """Open, close and list the requests of children and guardians."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def deadline_days(self, kind: str) -> int:
        """The answer period of ``kind`` (setting ``rights_deadline_days.<kind>``, default 15)."""
        key = f"rights_deadline_days.{kind}"
        if key not in SPECS:
            return DEFAULT_RIGHTS_DEADLINE_DAYS
        # Signed (an officer's setting.set), never the meta row: docs/trust.md.
        return int(self.s.settings.get(key))

    def open(
        self,
        kind: str,
        record_id: str,
        *,
        requester: str,
        received: date,
        identity_checked: bool,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Officer: register a request received on ``received``; return its register row.

        The deadline is ``received`` plus the period of ``kind``. Identity must
        have been checked before anything is disclosed or changed: a request
        opened without it is registered, and a ``subject_access`` basis linked
        to it is refused until it is closed and reopened with the check.
        """
        moment = self.s.now(now)
        self.s.require(("officer",), "rights.open", moment, _t("registering rights requests"))
        if kind not in RIGHTS_KINDS:
            raise UsageError(
                _t("--kind must be one of {choices}", choices=join(", ", RIGHTS_KINDS))
            )
        if requester not in RIGHTS_REQUESTERS:
            raise UsageError(
                _t("--by must be one of {choices}", choices=join(", ", RIGHTS_REQUESTERS))
            )
        if received > legal_today(self.s.settings, moment):
            raise UsageError(_t("--received is in the future"))
        row = self.s.live_record(record_id)
        rights_id = new_id()
        deadline = received + timedelta(days=self.deadline_days(kind))
        self.s.log(
            [
                Event(
                    self.s.user,
                    "rights.open",
                    records=[row.id],
                    detail={
                        "rights": rights_id,
                        "kind": kind,
                        "by": requester,
                        "received": received.isoformat(),
                        "deadline": deadline.isoformat(),
                        "identity_checked": identity_checked,
                    },
                )
            ],
            moment,
        )
        return self.get(rights_id, now=moment)

    def close(
        self,
        rights_id: str,
        outcome: str,
        *,
        reason: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Officer: close an open request with its outcome; return its register row.

        A refusal states its reason (P-19: the refusal is explained), kept in
        the register. A correction request closes as ``done`` only once a
        correction was linked to it (``correct --rights-request ID``): the
        register then shows that the answer really was given.
        """
        moment = self.s.now(now)
        self.s.require(("officer",), "rights.close", moment, _t("closing rights requests"))
        if outcome not in RIGHTS_OUTCOMES:
            raise UsageError(
                _t("--outcome must be one of {choices}", choices=join(", ", RIGHTS_OUTCOMES))
            )
        reason = (reason or "").strip()
        if outcome == "refused" and not reason:
            raise UsageError(
                _t("a refused request needs --reason: say why it was refused (no personal data)")
            )
        if len(reason) > MAX_REASON:
            raise UsageError(_t("--reason: at most {n} characters", n=MAX_REASON))
        row = self.get(rights_id, now=moment)
        if row["status"] != "open":
            raise UsageError(_t("rights request {id} is already closed", id=rights_id))
        if (
            row["kind"] == "correct"
            and outcome == "done"
            and not any(link["action"] == "record.correct" for link in row["links"])
        ):
            raise UsageError(
                _t(
                    "rights request {id} asks for a correction and none is linked to it: run "
                    "`childvault correct ... --rights-request {id}` first, or close it with "
                    "--outcome refused --reason TEXT",
                    id=row["id"],
                )
            )
        detail: dict[str, Any] = {"rights": row["id"], "outcome": outcome}
        if reason:
            detail["reason"] = reason
        self.s.log(
            [Event(self.s.user, "rights.close", records=[row["record"]], detail=detail)],
            moment,
        )
        return self.get(rights_id, now=moment)

    def check_link(self, rights_id: str, action: str, record_id: str) -> dict[str, Any]:
        """The open, identity-checked request ``action`` may answer; UsageError otherwise.

        Called before the operation, so a wrong ``--rights-request`` changes nothing.
        """
        row = self.get(rights_id)
        if row["status"] != "open":
            raise UsageError(_t("rights request {id} is closed", id=row["id"]))
        if not row["identity_checked"]:
            raise UsageError(
                _t(
                    "rights request {id} was opened without checking the requester's identity: "
                    "nothing is disclosed or changed for it",
                    id=row["id"],
                )
            )
        if RIGHTS_ANSWERS.get(row["kind"]) != action:
            raise UsageError(
                _t(
                    "rights request {id} is of kind {kind}; {action} does not answer it",
                    id=row["id"],
                    kind=row["kind"],
                    action=action,
                )
            )
        if row["record"] != record_id:
            raise UsageError(_t("rights request {id} is about another record", id=row["id"]))
        return row

    def link(
        self, rights_id: str, action: str, record_id: str, *, now: datetime | None = None
    ) -> dict[str, Any]:
        """Annotate the request with the operation that answered it (``rights.link``).

        A deletion or a subject report (:data:`CLOSING_ANSWERS`) also closes
        the request as ``done``, in the same log write, with the answer named
        in the ``rights.close`` entry: the register cannot show the answer
        without the closing or the reverse. A correction leaves it open.
        """
        moment = self.s.now(now)
        row = self.check_link(rights_id, action, record_id)
        events = [
            Event(
                self.s.user,
                "rights.link",
                records=[row["record"]],
                detail={"rights": row["id"], "answer": action},
            )
        ]
        if action in CLOSING_ANSWERS:
            events.append(
                Event(
                    self.s.user,
                    "rights.close",
                    records=[row["record"]],
                    detail={"rights": row["id"], "outcome": "done", "answer": action},
                )
            )
        self.s.log(events, moment)
        return self.get(rights_id, now=moment)

    def get(self, rights_id: str, *, now: datetime | None = None) -> dict[str, Any]:
        """One register row; NotFound if no such request was opened."""
        check_hex_id(rights_id, "rights request")
        for row in self.rows(now=now):
            if row["id"] == rights_id:
                return row
        raise NotFound(_t("no rights request {id}", id=rights_id))

    def rows(self, *, now: datetime | None = None) -> list[dict[str, Any]]:
        """Every request, oldest first, folded from the log: status, outcome, overdue."""
        day = legal_today(self.s.settings, self.s.now(now)).isoformat()
        rows: dict[str, dict[str, Any]] = {}
        for doc in log_entries(self.s, ("rights.open", "rights.close", "rights.link")):
            detail = doc["detail"]
            rid = str(detail.get("rights"))
            if doc["action"] == "rights.open":
                rows[rid] = {
                    "id": rid,
                    "kind": detail["kind"],
                    "record": doc["records"][0],
                    "by": detail["by"],
                    "received": detail["received"],
                    "deadline": detail["deadline"],
                    "identity_checked": bool(detail["identity_checked"]),
                    "opened_by": doc["actor"],
                    "status": "open",
                    "outcome": None,
                    "closed_at": None,
                    "links": [],
                }
            elif rid not in rows:
                continue
            elif doc["action"] == "rights.link":
                rows[rid]["links"].append({"action": detail["answer"], "at": doc["ts"]})
            else:
                rows[rid].update(status="closed", outcome=detail["outcome"], closed_at=doc["ts"])
                if detail.get("reason"):
                    rows[rid]["reason"] = detail["reason"]
        for row in rows.values():
            # A linked answer was given, so the deadline was met (P-19); an
            # open correction request waits only for the officer to close it.
            row["overdue"] = row["status"] == "open" and row["deadline"] < day and not row["links"]
        return list(rows.values())

    def list(self, *, now: datetime | None = None) -> list[dict[str, Any]]:
        """Officer: the register (logged as an audit read)."""
        moment = self.s.now(now)
        self.s.require(
            ("officer", "admin"), "rights.list", moment, _t("reading the rights register")
        )
        rows = self.rows(now=moment)
        self.s.log(
            [Event(self.s.user, "rights.list", detail={"count": len(rows)})],
            moment,
        )
        return rows
