"""Access requests: filing one (with its statutory basis checked), co-signing,
listing requests and the transfers register. One step of the access flow
(:class:`~._svc_access.AccessService`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from childvault._i18n import _t, join
from childvault.keys import NotFound, UsageError
from childvault.keys._encoding import check_hex_id
from childvault.vault import _audit
from childvault.vault._audit import Event
from childvault.vault._backend import RequestRow
from childvault.vault._policy import BASES, CONTACT_FIELDS, purpose_fields_refusal
from childvault.vault._session import WRITERS, new_id
from childvault.vault._svc_access_base import AccessBase, Basis, _basis_key
from childvault.vault._time import iso, parse_iso
from childvault.vault._types import ROLES, RequestInfo


class AccessRequests(AccessBase):
    """File, co-sign and list access requests; the transfers register."""

    def request_access(
        self,
        records: Sequence[str],
        fields: Sequence[str],
        purpose: str,
        reason: str,
        *,
        now: datetime | None = None,
        basis: Basis | None = None,
    ) -> str:
        """File an access request for named records, fields and purpose; return its id.

        ``basis`` (default: consent) names a statutory basis instead
        (:class:`Basis`, checked by :meth:`_check_basis`).
        """
        moment = self.s.now(now)
        self.s.require(WRITERS, "request.create", moment, _t("requesting access"))
        recs = tuple(dict.fromkeys(check_hex_id(r, "record") for r in records))
        flds = tuple(dict.fromkeys(fields))
        if not recs or not flds:
            raise UsageError(_t("a request names at least one record and one field"))
        self.s.schema.check_purpose(purpose)
        basis = basis or Basis()
        self._check_basis(basis, recs, flds, moment)
        reason = reason.strip()
        if not reason or len(reason) > 1000:
            raise UsageError(_t("--reason must say why, in at most 1000 characters"))
        cap = int(self.s.setting("max_records"))
        if len(recs) > cap:
            raise UsageError(
                _t(
                    "a request may name at most {cap} records (to prevent bulk copying); split it "
                    "and explain each",
                    cap=cap,
                )
            )
        rows = self.s.db.records.get_many(recs)  # one request through the server
        for rid in recs:
            row = rows.get(rid)
            if row is None:
                raise NotFound(
                    _t("no record {record_id} (deleted)", record_id=rid)
                    if self.s.db.records.tombstone(rid)
                    else _t("no record {record_id}", record_id=rid)
                )
            declared = self.s.schema.record_type(row.type).fields
            for f in flds:
                if f not in declared:
                    raise UsageError(
                        _t(
                            "field {field!r} is not in the {type} schema: choose from {fields}",
                            field=f,
                            type=row.type,
                            fields=join(", ", declared),
                        )
                    )
            allowed = self._allowed(purpose, basis.kind)
            refusal = purpose_fields_refusal(purpose, flds, row, allowed)
            if refusal is not None:
                raise UsageError(refusal.message)
        req = RequestRow(new_id(), self.s.user, recs, flds, purpose, reason, iso(moment), "pending")
        self._record_request(req, moment, basis)
        return req.id

    def _record_request(
        self, req: RequestRow, moment: datetime, basis: Basis | None = None
    ) -> None:
        """The database half of a request: store it and log it, in one transaction.

        A statutory basis goes into the entry's detail (the authority) and,
        as an index, into the meta key of the request (checked against the
        entry before use, :meth:`basis_of`).
        """
        basis = basis or Basis()
        with self.s.db.transaction():
            self.s.db.access.add_request(req)
            _audit.append(
                self.s.db.audit,
                [
                    Event(
                        req.requester,
                        "request.create",
                        records=req.records,
                        fields=req.fields,
                        purpose=req.purpose,
                        request=req.id,
                        detail=basis.detail(),
                    )
                ],
                moment,
            )
            if basis.detail():
                self.s.db.meta.set(_basis_key(req.id), json.dumps(basis.detail(), sort_keys=True))

    # -- request bases (issue 15 finding 3) ------------------------------------

    def _check_basis(
        self, basis: Basis, recs: Sequence[str], flds: Sequence[str], moment: datetime
    ) -> None:
        """Refuse a statutory basis whose link, fields or particulars do not hold."""
        from childvault.vault._svc_incidents import IncidentService
        from childvault.vault._svc_rights import RightsService

        if basis.kind not in BASES:
            raise UsageError(_t("--basis must be one of {bases}", bases=join(", ", BASES)))
        if basis.kind == "consent":
            if basis.link or basis.provision:
                raise UsageError(_t("a consent request takes no --link or --provision"))
            # A disclosure to another organisation with consent is a transfer
            # (P-17): it names the recipient and the assessment made before it.
            if basis.recipient or basis.assessment:
                for name in ("recipient", "assessment"):
                    value = getattr(basis, name)
                    if not value or not value.strip() or len(value) > 200:
                        raise UsageError(
                            _t(
                                "a transfer under consent needs --recipient and --assessment "
                                "(at most 200 characters each)"
                            )
                        )
            return
        if basis.kind == "subject_access":
            rights = RightsService(self.s).get(basis.link or "0" * 32, now=moment)
            # Only a request to see one's data (查询/复制) opens it to a read: a
            # correction or erasure request is answered by `correct` / `delete`.
            if rights["kind"] != "access":
                raise UsageError(
                    _t(
                        "a subject-access request links a rights request of kind access, "
                        "not {kind}",
                        kind=rights["kind"],
                    )
                )
            if rights["status"] != "open" or not rights["identity_checked"]:
                raise UsageError(
                    _t(
                        "rights request {id} must be open with the requester's identity checked",
                        id=rights["id"],
                    )
                )
            if set(recs) != {rights["record"]}:
                raise UsageError(_t("a subject-access request names exactly its subject's record"))
        elif basis.kind == "breach_notification":
            incident = IncidentService(self.s).get(basis.link or "0" * 32)
            if incident["status"] != "open":
                raise UsageError(_t("incident {id} is closed", id=incident["id"]))
            if not set(recs) <= set(incident["records"]):
                raise UsageError(_t("a breach notification names records of its incident only"))
            extra = [f for f in flds if f not in CONTACT_FIELDS]
            if extra:
                raise UsageError(
                    _t(
                        "a breach notification releases contact fields only ({allowed}), "
                        "not {extra}",
                        allowed=join(", ", CONTACT_FIELDS),
                        extra=join(", ", extra),
                    )
                )
        else:
            for name in ("recipient", "provision", "assessment"):
                value = getattr(basis, name)
                if not value or not value.strip() or len(value) > 200:
                    raise UsageError(
                        _t(
                            "a legal-obligation request needs --{name} (at most 200 characters)",
                            name=name,
                        )
                    )

    def cosign(self, request_id: str, *, now: datetime | None = None) -> None:
        """Officer: co-sign a pending legal-obligation request (the first of two officers)."""
        moment = self.s.now(now)
        self.s.require(("officer",), "request.cosign", moment, _t("co-signing requests"))
        req = self.s.db.access.request(check_hex_id(request_id, "request"))
        if req is None:
            raise NotFound(_t("no request {request_id}", request_id=request_id))
        if req.status != "pending":
            raise UsageError(_t("request {id} is already {status}", id=req.id, status=req.status))
        if self.basis_of(req.id, req.requester).kind != "legal_obligation":
            raise UsageError(_t("only a legal-obligation request is co-signed"))
        if req.requester == self.s.user:
            raise UsageError(_t("an officer cannot co-sign their own request"))
        self.s.log(
            [
                Event(
                    self.s.user,
                    "request.cosign",
                    records=req.records,
                    fields=req.fields,
                    purpose=req.purpose,
                    request=req.id,
                )
            ],
            moment,
        )

    def transfers(self, *, now: datetime | None = None) -> list[dict[str, Any]]:
        """Officer or admin: every read that handed data to another organisation (P-17).

        Folded from the ``grant.read`` entries that carry a recipient; logged.
        """
        moment = self.s.now(now)
        self.s.require(("officer", "admin"), "report.transfers", moment, _t("listing transfers"))
        rows = []
        # Through the recipient index (migration 5): the reads that name a
        # recipient only, not every read ever logged; each is still checked.
        for entry in self.s.db.audit.entries_with_recipient(("grant.read",)):
            doc = json.loads(entry)
            detail = doc.get("detail") or {}
            if (
                doc.get("action") == "grant.read"
                and doc.get("outcome") == "ok"
                and detail.get("recipient")
            ):
                rows.append(
                    {
                        "seq": doc["seq"],
                        "ts": doc["ts"],
                        "reader": doc["actor"],
                        "recipient": detail["recipient"],
                        "provision": detail.get("provision"),
                        "assessment": detail.get("assessment"),
                        "basis": detail.get("basis"),
                        "records": doc["records"],
                        "fields": doc["fields"],
                        "request": doc["request"],
                    }
                )
        rows.sort(key=lambda r: int(r["seq"]))
        self.s.log([Event(self.s.user, "report.transfers", detail={"count": len(rows)})], moment)
        return rows

    def requests(self, status: str | None = "pending") -> list[RequestInfo]:
        """Access requests with ``status`` (``None`` for all); logged.

        Officers and admins see every request; staff see their own, with the
        decision and the officer's reason, so they learn why one was denied.
        """
        moment = self.s.now(None)
        self.s.require(ROLES, "request.list", moment, _t("listing requests"))
        rows = self.s.db.access.requests(status)
        if self.s.roles.isdisjoint(("officer", "admin")):
            rows = [r for r in rows if r.requester == self.s.user]
        self.s.log([Event(self.s.user, "request.list", detail={"count": len(rows)})], moment)
        return [
            RequestInfo(
                r.id,
                r.requester,
                r.records,
                r.fields,
                r.purpose,
                r.reason,
                parse_iso(r.created_at),
                r.status,
                r.decided_by,
                r.decision_reason,
            )
            for r in rows
        ]
