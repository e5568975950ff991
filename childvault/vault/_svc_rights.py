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
from childvault.keys._encoding import check_hex_id, is_hex_id
from childvault.vault._action_roles import logged_by_role, role_at
from childvault.vault._audit import Event
from childvault.vault._session import Session, new_id
from childvault.vault._settings import SPECS
from childvault.vault._statements import TrustState
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


def log_entries(
    session: Session, actions: Sequence[str], state: TrustState | None = None
) -> list[dict[str, Any]]:
    """The successful log entries of ``actions`` in sequence order, parsed (the index
    is re-checked), each logged by a holder of its action's role (review RV10-1).

    ``state``: the verified trust state to check roles in; by default the log is
    verified to its head first (an insider's edit fails closed here).
    """
    if state is None:
        state = session.trust(save=False)
    out = []
    for raw in session.db.audit.entries_by_action(tuple(actions)):
        doc = json.loads(raw)
        if (
            doc.get("action") in actions
            and doc.get("outcome") == "ok"
            # Anyone may log any action in their own name (RV2-2, RV10-1).
            and logged_by_role(state, doc)
        ):
            out.append(doc)
    return sorted(out, key=lambda d: int(d["seq"]))


def report_answer_problem(
    session: Session,
    state: TrustState | None,
    *,
    record: str,
    grant: object,
    closer: object,
    opened: int,
    before: int | None = None,
) -> str | None:
    """Why no subject report answers an access request on ``record``, or None.

    A ``rights.link`` / ``rights.close`` naming the answer ``report.subject``
    may be logged by any user (whoever holds a grant makes the report), so it
    counts only when the verified log holds what it claims, all through the
    grant index (``grant``: the grant the report was made with): a
    ``report.subject`` entry about ``record`` after the request was opened
    (position ``opened``) and before ``before`` (the closing entry; None: the
    log's head), by ``closer`` or an officer; made by the grant's requester
    (their signed ``request.create``) after their ``grant.read`` of the record
    with it; the grant approved by an officer (``role_at``, ``was_active``, as
    a release is). The log must have been verified first (chain, signatures).
    """
    if not isinstance(grant, str) or not is_hex_id(grant):
        return _t("the closing names no grant a subject report was made with")
    found: dict[str, list[dict[str, Any]]] = {}
    actions = ("request.approve", "grant.read", "report.subject")
    for raw in session.db.audit.entries_by_ref(actions, grant=grant):
        doc = json.loads(raw)
        seq = doc.get("seq")
        if (
            doc.get("grant") == grant
            and doc.get("outcome") == "ok"
            and doc.get("action") in actions
            and type(seq) is int
            and (before is None or seq < before)
            and record in (doc.get("records") or ())
        ):
            found.setdefault(str(doc["action"]), []).append(doc)
    approve = next(
        (
            d
            for d in found.get("request.approve", [])
            if role_at(state, d.get("actor"), "officer", d["seq"], mode="was_active")
        ),
        None,
    )
    if approve is None:
        return _t("no officer approved grant {grant} for this record", grant=grant)
    requester = None
    request = approve.get("request")
    if isinstance(request, str):
        for raw in session.db.audit.entries_by_ref(("request.create",), request=request):
            doc = json.loads(raw)
            if (doc.get("action"), doc.get("outcome"), doc.get("request")) == (
                "request.create",
                "ok",
                request,
            ):
                requester = doc.get("actor")
                break
    reads = [
        d["seq"]
        for d in found.get("grant.read", [])
        if d.get("actor") == requester and d["seq"] > approve["seq"]
    ]
    for report in found.get("report.subject", []):
        seq, actor = report["seq"], report.get("actor")
        if (
            seq > opened
            and actor == requester
            and any(r < seq for r in reads)
            and (actor == closer or role_at(state, actor, "officer", seq, mode="held"))
        ):
            return None
    return _t(
        "the log holds no subject report about this record made with grant {grant} after "
        "the request was received",
        grant=grant,
    )


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
        self,
        rights_id: str,
        action: str,
        record_id: str,
        *,
        grant: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Annotate the request with the operation that answered it (``rights.link``).

        A deletion or a subject report (:data:`CLOSING_ANSWERS`) also closes
        the request as ``done``, in the same log write, with the answer named
        in the ``rights.close`` entry: the register cannot show the answer
        without the closing or the reverse. A correction leaves it open.

        A subject report names ``grant``, the grant it was made with, in both
        entries; the report must be in the verified log
        (:func:`report_answer_problem`), else the link is refused and logged.
        """
        moment = self.s.now(now)
        row = self.check_link(rights_id, action, record_id)
        named = grant if action == "report.subject" else None
        if action == "report.subject":
            problem = report_answer_problem(
                self.s,
                self.s.trust(save=False),
                record=row["record"],
                grant=grant,
                closer=self.s.user,
                opened=self._opened_at(row["id"]),
            )
            if problem is not None:
                self.s.deny(
                    Event(
                        self.s.user,
                        "rights.link",
                        "denied",
                        records=[row["record"]],
                        grant=named,
                        detail={"rights": row["id"], "answer": action, "reason": "no report"},
                    ),
                    _t(
                        "rights request {id} is not closed as answered: {why}",
                        id=row["id"],
                        why=problem,
                    ),
                    moment,
                )
        events = [
            Event(
                self.s.user,
                "rights.link",
                records=[row["record"]],
                grant=named,
                detail={"rights": row["id"], "answer": action},
            )
        ]
        if action in CLOSING_ANSWERS:
            events.append(
                Event(
                    self.s.user,
                    "rights.close",
                    records=[row["record"]],
                    grant=named,
                    detail={"rights": row["id"], "outcome": "done", "answer": action},
                )
            )
        self.s.log(events, moment)
        return self.get(rights_id, now=moment)

    def _opened_at(self, rights_id: str) -> int:
        """The log position of the request's ``rights.open`` entry (it was found open)."""
        for doc in log_entries(self.s, ("rights.open",)):
            if doc["detail"].get("rights") == rights_id:
                return int(doc["seq"])
        raise NotFound(_t("no rights request {id}", id=rights_id))

    def get(self, rights_id: str, *, now: datetime | None = None) -> dict[str, Any]:
        """One register row; NotFound if no such request was opened."""
        check_hex_id(rights_id, "rights request")
        for row in self.rows(now=now):
            if row["id"] == rights_id:
                return row
        raise NotFound(_t("no rights request {id}", id=rights_id))

    def rows(
        self, *, now: datetime | None = None, state: TrustState | None = None
    ) -> list[dict[str, Any]]:
        """Every request, oldest first, folded from the log: status, outcome, overdue.
        ``state``: as for :func:`log_entries`."""
        day = legal_today(self.s.settings, self.s.now(now)).isoformat()
        if state is None:
            state = self.s.trust(save=False)
        rows: dict[str, dict[str, Any]] = {}
        opened: dict[str, int] = {}
        for doc in log_entries(self.s, ("rights.open", "rights.close", "rights.link"), state):
            detail = doc["detail"]
            rid = str(detail.get("rights"))
            if (
                doc["action"] != "rights.open"
                and "answer" in detail
                and (rid not in rows or RIGHTS_ANSWERS.get(rows[rid]["kind"]) != detail["answer"])
            ):
                # Logged by whoever may run the answer (``_action_roles``): only the
                # answer of the request's kind counts (a subject report closes no
                # deletion request).
                continue
            if (
                detail.get("answer") == "report.subject"
                and rid in rows
                and report_answer_problem(
                    self.s,
                    state,
                    record=rows[rid]["record"],
                    grant=doc.get("grant"),
                    closer=doc.get("actor"),
                    opened=opened[rid],
                    before=int(doc["seq"]),
                )
                is not None
            ):
                # Any user may log this answer: it counts only with the report
                # it names in the log (a request is not answered by saying so).
                continue
            if doc["action"] == "rights.open":
                opened[rid] = int(doc["seq"])
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
