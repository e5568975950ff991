"""Access: requests, approvals, denials, revocations and reads with a grant.

Each operation checks the rules of :mod:`._policy`, does its client-side
cryptography (releasing keys, signing or verifying the token, opening fields),
and keeps its database effects in small steps that run in one transaction
each (docs/architecture.md, "A read with a grant").
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn, Protocol, runtime_checkable

from childvault._i18n import _t, join
from childvault.keys import (
    AccessDenied,
    ApprovalInvalid,
    ChildVaultError,
    DecryptionFailed,
    FieldKey,
    KeyProvider,
    NotFound,
    ProviderUnavailable,
    PublicIdentity,
    ReleasedKeys,
    Selection,
    UsageError,
    WrappedRecord,
)
from childvault.keys._encoding import b64, check_hex_id, is_hex_id, unb64
from childvault.vault import _audit, _tokens
from childvault.vault import _record_trust as record_trust
from childvault.vault._action_roles import role_at
from childvault.vault._audit import DetailValue, Event
from childvault.vault._backend import GrantRow, RequestRow, UserRow, request_basis_key
from childvault.vault._fieldcrypto import open_field
from childvault.vault._policy import (
    BASES,
    CONTACT_FIELDS,
    ApprovalLimits,
    RecordState,
    Refusal,
    approval_refusal,
    basis_fields,
    cosign_refusal,
    grant_refusal,
    purpose_fields_refusal,
    token_refusal,
)
from childvault.vault._session import WRITERS, Session, new_id
from childvault.vault._svc_audit import AuditService
from childvault.vault._svc_notices import NoticeService
from childvault.vault._time import iso, legal_today, parse_iso
from childvault.vault._types import ROLES, Approval, RequestInfo


@dataclass(frozen=True)
class Basis:
    """The basis of an access request (DESIGN section 5 item 6).

    ``kind`` is one of :data:`~._policy.BASES`; ``link`` the rights-request id
    (``subject_access``) or incident id (``breach_notification``);
    ``recipient``, ``provision`` and ``assessment`` name, for
    ``legal_obligation``, the organisation receiving the data, the legal
    provision requiring it and the reference of the impact assessment.
    """

    kind: str = "consent"
    link: str | None = None
    recipient: str | None = None
    provision: str | None = None
    assessment: str | None = None

    def detail(self) -> dict[str, DetailValue]:
        """The log-entry detail of a statutory basis (empty for consent)."""
        if self.kind == "consent":
            return {}
        out: dict[str, DetailValue] = {"basis": self.kind}
        if self.link:
            out["link"] = self.link
        for name in ("recipient", "provision", "assessment"):
            value = getattr(self, name)
            if value:
                out[name] = value.strip()
        return out

    @classmethod
    def from_detail(cls, detail: dict[str, Any]) -> Basis:
        """Rebuild a basis from :meth:`detail` output."""
        return cls(
            kind=str(detail.get("basis", "consent")),
            link=detail.get("link"),
            recipient=detail.get("recipient"),
            provision=detail.get("provision"),
            assessment=detail.get("assessment"),
        )


def _basis_key(request_id: str) -> str:
    """Meta key indexing the statutory basis of a request (:func:`request_basis_key`)."""
    return request_basis_key(request_id)


class AccessService:
    """The request / approve / read flow."""

    def __init__(self, session: Session, audit: AuditService) -> None:
        self.s = session
        self._audit = audit
        #: During a read (:meth:`read_with_claims`): the bases already looked up.
        self._bases: dict[tuple[str, str], Basis] | None = None

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
            if basis.kind != "consent":
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
            if basis.link or basis.recipient or basis.provision or basis.assessment:
                raise UsageError(
                    _t("a consent request takes no --link, --recipient or --provision")
                )
            return
        if basis.kind == "subject_access":
            rights = RightsService(self.s).get(basis.link or "0" * 32, now=moment)
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

    def basis_of(self, request_id: str, requester: str) -> Basis:
        """The basis of a request, as its requester's logged ``request.create`` entry gives it.

        ``requester``: the request row's, or the approval token's (signed) subject.
        Only an entry in their name counts: any user may append an entry of any
        action in their own name, and one naming another's request must not
        decide its basis (review FX-2).

        The entry is the authority (read after the log is verified: chain and
        actor signatures); the meta key is only an index. A key that disagrees
        with the entry, a key with no entry, or a statutory entry whose key was
        removed (which would turn the request into a consent request) is refused
        and logged (``trust.refuse``). A read asks twice (the grant check, then
        its log entry inside the use's transaction): within one read the first
        answer is used again rather than fetched again (through the server, a
        round trip in the transaction).
        """
        if self._bases is None:
            return self._basis_of(request_id, requester)
        kept = self._bases.get((request_id, requester))
        if kept is None:
            kept = self._bases[request_id, requester] = self._basis_of(request_id, requester)
        return kept

    def _basis_of(self, request_id: str, requester: str) -> Basis:
        """:meth:`basis_of`, read from the store and checked against the log."""
        self.s.trust()
        logged: dict[str, Any] | None = None
        # Through the request index (O(1) in the log's size); each entry is
        # still checked for what it names.
        for entry in self.s.db.audit.entries_by_ref(("request.create",), request=request_id):
            doc = json.loads(entry)
            if (doc.get("request"), doc.get("action"), doc.get("outcome"), doc.get("actor")) == (
                request_id,
                "request.create",
                "ok",
                requester,
            ):
                logged = doc.get("detail") or {}
                break
        raw = self.s.db.meta.get(_basis_key(request_id))
        basis = Basis.from_detail(logged or {})
        expected = (
            None
            if logged is None or basis.kind == "consent"
            else json.dumps(logged, sort_keys=True)
        )
        if raw != expected:
            self.s.distrust(
                "request.basis",
                _t(
                    "the basis of request {request_id} differs from its log entry",
                    request_id=request_id,
                ),
                self.s.now(),
            )
        return basis

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

    def _cosigners(self, request_id: str) -> list[str]:
        """Officers whose ``request.cosign`` entry names the request.

        Only an entry whose actor was an active officer at its position counts,
        by the verified registrations (``role_at``, ``was_active``: a
        co-signature lets a release go now, so it must have been made under
        the registration); any user may append an entry of any action in their
        own name, and the ``users`` rows are theirs to edit. Without a verified
        state (an identity made before anchors) no co-signature counts.
        """
        state = self.s.trust()

        def officer(actor: str, seq: object) -> bool:
            return role_at(state, actor, "officer", seq, mode="was_active")

        out = []
        # Through the request index (O(1) in the log's size, like basis_of);
        # each entry is still checked for its action and what it names.
        for entry in self.s.db.audit.entries_by_ref(("request.cosign",), request=request_id):
            doc = json.loads(entry)
            if (doc.get("request"), doc.get("action"), doc.get("outcome")) == (
                request_id,
                "request.cosign",
                "ok",
            ) and officer(str(doc.get("actor")), doc.get("seq")):
                out.append(str(doc["actor"]))
        return out

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

    def approve(
        self,
        request_id: str,
        *,
        ttl: timedelta | None = None,
        uses: int = 1,
        now: datetime | None = None,
    ) -> Approval:
        """Officer: approve a pending request and issue its approval token.

        Refuses (logged): the officer's own request, a purpose a record did not
        consent to, a record past retention or deleted, more records than the
        cap, a TTL above the maximum. The approval and a signed checkpoint are
        committed together; the checkpoint is then appended to the witness file.
        """
        moment = self.s.now(now)
        # Through a server: the approval's inputs come with its trust sync (a hint).
        self.s.expect("approval", request_id)
        self.s.require(("officer",), "request.approve", moment, _t("approving requests"))
        req = self.s.db.access.request(check_hex_id(request_id, "request"))
        if req is None:
            raise NotFound(_t("no request {request_id}", request_id=request_id))
        ttl = ttl if ttl is not None else timedelta(seconds=int(self.s.setting("default_ttl_s")))
        base = Event(
            self.s.user,
            "request.approve",
            "denied",
            records=req.records,
            fields=req.fields,
            purpose=req.purpose,
            request=req.id,
        )

        def refuse(refusal: Refusal) -> NoReturn:
            event = dataclasses.replace(base, detail={"reason": refusal.reason})
            if refusal.kind == "usage":
                # Logged like every refusal, but reported as a usage error (exit 2).
                self.s.log([event], moment)
                raise UsageError(refusal.message)
            self.s.deny(event, refusal.message, moment)

        if req.status != "pending":
            raise UsageError(_t("request {id} is already {status}", id=req.id, status=req.status))
        fetched = self._verified_records(req.records, "request.approve", moment)
        states = _states(req.records, fetched)
        basis = self.basis_of(req.id, req.requester)
        refusal = approval_refusal(
            req,
            self.s.user,
            ttl=ttl,
            uses=uses,
            limits=self._limits(),
            records=states,
            day=legal_today(self.s.settings, moment),
            allowed=self._allowed(req.purpose, basis.kind),
            basis=basis.kind,
        )
        if refusal is None and basis.kind == "legal_obligation":
            # Only a legal-obligation request is co-signed (cosign_refusal is
            # None for any other basis): no look-up for the others.
            refusal = cosign_refusal(
                basis.kind, req.requester, self.s.user, self._cosigners(req.id)
            )
        if refusal is not None:
            refuse(refusal)
        # The key blobs verified above: what is released is what was checked.
        selections = [Selection(_wrapped(state.id, fetched), req.fields) for state in states]
        requester = self._verified_requester(req.requester, moment)
        try:
            provider = self.s.keys.officer()
        except AccessDenied as exc:
            refuse(Refusal("no custodian key", str(exc)))
        grant_id = new_id()

        # Released inside the approval's transaction, after its grant row: a
        # server makes a grant's release key only for a grant the same
        # transaction stores with its logged approval (finding A-4).
        def record() -> tuple[str, bytes]:
            return self._record_approval(
                req,
                grant_id,
                ttl=ttl,
                uses=uses,
                moment=moment,
                release=lambda: _release(
                    provider, selections, requester, grant_id, int(ttl.total_seconds())
                ),
            )

        # Through a server: the transaction's writes and commit in one request,
        # its append at the head this client expects (run again if it moved).
        appending = getattr(self.s.db, "appending_transaction", None)
        note, material = appending(record) if appending is not None else record()
        try:
            self._audit.witness(note)
            # A release key asked with the commit (server mode): wrap under it now,
            # after the witness step (a commit whose witness failed has no answer).
            settle = getattr(material, "settle", None)
            if settle is not None:
                material = settle()
        except ChildVaultError:
            # Fail closed: an approval whose checkpoint is not witnessed (or whose
            # release key did not come) is withdrawn.
            with contextlib.suppress(ChildVaultError):
                self.revoke(grant_id, now=moment)
            raise
        claims = _tokens.GrantClaims(
            jti=grant_id,
            req=req.id,
            iss=self.s.user,
            sub=req.requester,
            vault=self.s.vault_id,
            rec=req.records,
            fld=req.fields,
            pur=req.purpose,
            iat=moment,
            nbf=moment,
            exp=moment + ttl,
            uses=uses,
            keys=material,
        )
        token = _tokens.issue(self.s.me, claims)
        # The same instant as the token's expiry (stored with microseconds, as iso() writes).
        expires = parse_iso(iso(moment + ttl))
        return Approval(grant_id, req.id, req.requester, token, expires, uses, note)

    def _record_approval(
        self,
        req: RequestRow,
        grant_id: str,
        *,
        ttl: timedelta,
        uses: int,
        moment: datetime,
        release: Callable[[], tuple[bytes, dict[str, list[str]] | None]],
    ) -> tuple[str, bytes]:
        """The database half of an approval, in one transaction: record the grant,
        release its keys (``release``: the grant material and, in Vault mode, the
        receipt of wrapping accessors and Vault request ids, kept for revocation
        and logged for ``audit reconcile``), mark the request approved, log it,
        and sign a checkpoint covering it. Returns the checkpoint note
        (witnessed by the caller after the commit) and the grant material."""
        # Checked from the approving officer's own last checkpoint (full=False),
        # so the cost of an approval does not grow with the log.
        with self._audit.signed(moment, full=False) as signed:
            # The grant row and its release key first: a server makes a grant's
            # release key only in the transaction that adds the grant (finding
            # A-4), and, asked before the decision, it costs no read the decision
            # fetched ahead (the key's answer would make the client forget them).
            self.s.db.access.add_grant(
                GrantRow(
                    grant_id,
                    req.id,
                    self.s.user,
                    req.requester,
                    iso(moment),
                    iso(moment + ttl),
                    uses,
                    0,
                    None,
                    None,
                    None,
                )
            )
            material, receipt = release()
            if not self.s.db.access.decide(
                req.id, status="approved", by=self.s.user, at=iso(moment), reason=None
            ):
                raise UsageError(_t("request {id} was decided meanwhile", id=req.id))
            _audit.append(
                self.s.db.audit,
                [
                    Event(
                        self.s.user,
                        "request.approve",
                        records=req.records,
                        fields=req.fields,
                        purpose=req.purpose,
                        request=req.id,
                        grant=grant_id,
                        detail=_approval_detail(iso(moment + ttl), uses, receipt),
                    )
                ],
                moment,
            )
            if receipt is not None:
                self.s.db.meta.set(_wrapping_key(grant_id), json.dumps(receipt["accessors"]))
        return signed.note, material

    def _allowed(self, purpose: str, basis: str = "consent") -> dict[str, tuple[str, ...]] | None:
        """Record type -> the fields ``purpose`` may release (the schema's purpose lists).

        A subject-access request may release any field of the subject's own
        record (M-17); a breach notification only :data:`CONTACT_FIELDS`.
        """
        allowed = basis_fields(
            basis, {name: rt.fields_for(purpose) for name, rt in self.s.schema.types.items()}
        )
        return None if allowed is None else {k: tuple(v) for k, v in allowed.items()}

    def _limits(self) -> ApprovalLimits:
        """The vault's approval limits, from its settings."""
        return ApprovalLimits(
            max_ttl=timedelta(seconds=int(self.s.setting("max_ttl_s"))),
            max_uses=int(self.s.setting("max_uses")),
            max_records=int(self.s.setting("max_records")),
            notice_version=self.s.setting("notice_version"),
            accepted_notices=NoticeService(self.s).accepted_versions(),
        )

    def deny(self, request_id: str, reason: str, *, now: datetime | None = None) -> None:
        """Officer: deny a pending request with a reason."""
        moment = self.s.now(now)
        self.s.require(("officer",), "request.deny", moment, _t("denying requests"))
        req = self.s.db.access.request(check_hex_id(request_id, "request"))
        if req is None:
            raise NotFound(_t("no request {request_id}", request_id=request_id))
        reason = reason.strip()
        if not reason or len(reason) > 1000:
            raise UsageError(_t("--reason must say why, in at most 1000 characters"))
        with self.s.db.transaction():
            if not self.s.db.access.decide(
                req.id, status="denied", by=self.s.user, at=iso(moment), reason=reason
            ):
                raise UsageError(
                    _t("request {id} is already {status}", id=req.id, status=req.status)
                )
            _audit.append(
                self.s.db.audit,
                [
                    Event(
                        self.s.user,
                        "request.deny",
                        records=req.records,
                        fields=req.fields,
                        purpose=req.purpose,
                        request=req.id,
                    )
                ],
                moment,
            )

    def revoke(self, grant_id: str, *, now: datetime | None = None) -> None:
        """Officer: revoke a grant; later reads with its token are denied."""
        moment = self.s.now(now)
        self.s.require(("officer",), "grant.revoke", moment, _t("revoking grants"))
        grant = self.s.db.access.grant(check_hex_id(grant_id, "grant"))
        if grant is None:
            raise NotFound(_t("no grant {grant_id}", grant_id=grant_id))
        # The meta row only marks "Vault tokens not yet revoked"; which tokens to
        # revoke comes from the signed approval entry, so an insider who deletes
        # or edits the row cannot make revoke skip them.
        pending = self.s.db.meta.get(_wrapping_key(grant.id))
        # Vault mode only (the local provider has no wrapping tokens).
        accessors = None if self.s.keys.custodial else self._logged_accessors(grant.id, moment)
        with self.s.db.transaction():
            revoked = self.s.db.access.revoke_grant(grant.id, at=iso(moment), by=self.s.user)
            if revoked:
                _audit.append(
                    self.s.db.audit,
                    [Event(self.s.user, "grant.revoke", request=grant.request_id, grant=grant.id)],
                    moment,
                )
        if accessors is not None:
            # Every time, not only while the row marks it pending: revoking a
            # used, expired or revoked token again is harmless.
            self._revoke_in_vault(grant.id, accessors)
        if not revoked and pending is None:
            raise UsageError(_t("grant {id} is already revoked", id=grant.id))

    def _logged_accessors(self, grant_id: str, moment: datetime) -> list[str]:
        """Vault mode: the wrapping accessors of ``grant_id``'s signed ``request.approve``
        entry (read after the log is verified). A grant without one is refused and
        logged: every grant made in Vault mode has one, so its absence means the
        grant row or the log's action index was altered.

        Only an officer's entry counts (``role_at``, ``held``): any user may
        append a ``request.approve`` entry naming the grant in their own name,
        and taking theirs would revoke their tokens instead of the grant's.
        ``held``, not ``was_active``: a grant approved before an upgrade
        registered its officer must stay revocable.
        """
        state = self.s.trust()
        for raw in self.s.db.audit.entries_by_ref(("request.approve",), grant=grant_id):
            doc = json.loads(raw)
            if (doc.get("action"), doc.get("outcome"), doc.get("grant")) != (
                "request.approve",
                "ok",
                grant_id,
            ) or not role_at(state, doc.get("actor"), "officer", doc.get("seq"), mode="held"):
                continue
            found = (doc.get("detail") or {}).get("vault_accessors")
            if isinstance(found, list) and all(isinstance(a, str) for a in found):
                return [str(a) for a in found]
            break
        self.s.distrust(
            "grant.revoke",
            _t(
                "grant {grant_id} has no signed approval entry with its Vault wrapping tokens",
                grant_id=grant_id,
            ),
            moment,
        )

    def _revoke_in_vault(self, grant_id: str, accessors: Sequence[str]) -> None:
        """Vault mode: revoke the grant's wrapping tokens too, so the requester
        cannot unwrap them directly, around childvault (issue 14). Runs after
        the grant is revoked in the database; if Vault fails, running
        ``revoke`` again finishes it."""
        provider = self.s.keys.officer()
        if not isinstance(provider, _RevokesWrapping):
            return
        try:
            provider.revoke_wrapping(list(accessors))
        except ChildVaultError as exc:
            raise ProviderUnavailable(
                _t(
                    "grant {grant_id} is revoked in childvault, but its Vault wrapping tokens "
                    "could not be revoked ({exc}); run `childvault revoke {grant_id}` again once "
                    "the Vault server answers",
                    grant_id=grant_id,
                    exc=exc,
                ),
                detail=exc.detail,
            ) from exc
        with self.s.db.transaction():
            self.s.db.meta.delete(_wrapping_key(grant_id))

    def read_with_grant(
        self,
        token: str,
        records: Sequence[str] | None = None,
        fields: Sequence[str] | None = None,
        *,
        now: datetime | None = None,
    ) -> dict[str, dict[str, str]]:
        """Read approved fields with an approval token.

        Verifies the token (signature by a registered officer, vault, requester,
        time window, uses, revocation, scope), appends and commits the log entry,
        then decrypts. Any failure raises the opaque :class:`ApprovalInvalid`
        after logging a denied attempt with the reason.
        """
        return self.read_with_claims(token, records, fields, self.s.now(now))[1]

    def read_with_claims(
        self,
        token: str,
        records: Sequence[str] | None,
        fields: Sequence[str] | None,
        moment: datetime,
    ) -> tuple[_tokens.GrantClaims, dict[str, dict[str, str]]]:
        """:meth:`read_with_grant`, also returning the verified claims (for reports)."""
        self._bases = {}
        try:
            return self._read_with_claims(token, records, fields, moment)
        finally:
            self._bases = None

    def _read_with_claims(
        self,
        token: str,
        records: Sequence[str] | None,
        fields: Sequence[str] | None,
        moment: datetime,
    ) -> tuple[_tokens.GrantClaims, dict[str, dict[str, str]]]:
        hint = _grant_hint(token)
        if hint is not None:
            # Through a server: the read's inputs come with its trust sync. The
            # grant id is read before the token is verified: only a hint.
            self.s.expect("read", hint)
        self._verified_reader(moment)
        claims = self._check_grant(token, records, fields, moment)
        want_recs = tuple(records) if records else claims.rec
        want_flds = tuple(fields) if fields else claims.fld
        fetched = self._verified_records(want_recs, "grant.read", moment)
        if not self._consume_use(claims, want_recs, want_flds, moment):
            raise ApprovalInvalid("uses exhausted or revoked")
        self._witness_read(claims, want_recs, want_flds, moment)
        try:
            keys = self._redeem(claims)
            return claims, self.decrypt(
                keys, want_recs, want_flds, verified=True, stored=fetched.fields
            )
        except (ApprovalInvalid, DecryptionFailed) as exc:
            reason = (exc.detail or "failed")[:200]
            self.s.log([self._read_event(claims, want_recs, want_flds, "error", reason)], moment)
            raise
        except (ProviderUnavailable, AccessDenied) as exc:
            # The key provider failed (down, sealed, token or policy) before any
            # plaintext existed: log it and give the use back, so the read can be
            # retried once the fault is gone (an unwrapped token stays unusable).
            with contextlib.suppress(ChildVaultError):
                reason = f"key provider: {type(exc).__name__}"
                self._refund_use(claims, want_recs, want_flds, reason, moment)
            raise

    def _consume_use(
        self,
        claims: _tokens.GrantClaims,
        recs: Sequence[str],
        flds: Sequence[str],
        moment: datetime,
    ) -> bool:
        """The database half of a read, in one transaction: consume one use and log
        the read (committed before any key is touched), or log the refusal and
        return False when no use is left."""

        def consume() -> bool:
            with self.s.db.transaction():
                if not self.s.db.access.use_grant(claims.jti):
                    event = self._read_event(
                        claims, recs, flds, "denied", "uses exhausted or revoked"
                    )
                    _audit.append(self.s.db.audit, [event], moment)
                    return False
                _audit.append(self.s.db.audit, [self._read_event(claims, recs, flds)], moment)
                return True

        # Through a server: the use, its entry (at the head this client expects)
        # and the commit in one request; run again if the head moved or no use
        # was left (then the plain use answers False and the denial is logged).
        appending = getattr(self.s.db, "appending_transaction", None)
        return bool(appending(consume)) if appending is not None else consume()

    def _witness_read(
        self,
        claims: _tokens.GrantClaims,
        recs: Sequence[str],
        flds: Sequence[str],
        moment: datetime,
    ) -> None:
        """Put the committed read entry under a head in the witness file before any
        key is touched (issue 12, attack 7): erasing it from the log's tail is then
        detected. If the witness cannot be written, the use is given back, the
        failure logged, and nothing is decrypted (fail closed)."""
        try:
            self._audit.witness_read(moment)
        except ChildVaultError:
            with contextlib.suppress(ChildVaultError):
                self._refund_use(claims, recs, flds, "witness not written", moment)
            raise

    def _refund_use(
        self,
        claims: _tokens.GrantClaims,
        recs: Sequence[str],
        flds: Sequence[str],
        reason: str,
        moment: datetime,
    ) -> None:
        """Give back the use of a read that failed before any plaintext, and log why."""
        with self.s.db.transaction():
            self.s.db.access.refund_use(claims.jti)
            event = self._read_event(claims, recs, flds, "error", reason)
            _audit.append(self.s.db.audit, [event], moment)

    def _read_event(
        self,
        claims: _tokens.GrantClaims,
        recs: Sequence[str],
        flds: Sequence[str],
        outcome: str = "ok",
        reason: str | None = None,
    ) -> Event:
        """The ``grant.read`` log entry of a read with ``claims`` (its outcome and why).

        A read under a statutory basis carries it; one that hands data to
        another organisation carries the recipient, provision and assessment:
        that entry is the transfers register (P-17, :meth:`transfers`).
        """
        detail: dict[str, DetailValue] = {} if reason is None else {"reason": reason}
        basis = self.basis_of(claims.req, claims.sub)
        if basis.kind != "consent":
            detail.update(basis.detail())
        return Event(
            self.s.user,
            "grant.read",
            outcome,
            records=recs,
            fields=flds,
            purpose=claims.pur,
            request=claims.req,
            grant=claims.jti,
            detail=detail,
        )

    def _check_grant(
        self,
        token: str,
        records: Sequence[str] | None,
        fields: Sequence[str] | None,
        moment: datetime,
    ) -> _tokens.GrantClaims:
        claims: _tokens.GrantClaims | None = None

        def fail(reason: str) -> NoReturn:
            recs = [r for r in (records or (claims.rec if claims else ())) if is_hex_id(r)][:100]
            flds = [f for f in (fields or (claims.fld if claims else ())) if f.isidentifier()][:100]
            self.s.log(
                [
                    Event(
                        self.s.user,
                        "grant.read",
                        "denied",
                        records=recs,
                        fields=flds,
                        purpose=claims.pur if claims else None,
                        request=claims.req if claims else None,
                        grant=claims.jti if claims else None,
                        detail={"reason": reason},
                    )
                ],
                moment,
            )
            raise ApprovalInvalid(reason)

        try:
            kid = _tokens.key_id(token)
        except ApprovalInvalid as exc:
            fail(exc.detail or "malformed token")
        signer = self._verified_token_signer(kid)
        if signer is None:
            fail("signed by a key not registered in this vault")
        try:
            claims = _tokens.verify(token, signer.sign_key)
        except ApprovalInvalid as exc:
            fail(exc.detail or "invalid token")
        refusal = token_refusal(
            claims,
            signer,
            vault_id=self.s.vault_id,
            reader=self.s.user,
            moment=moment,
            records=records,
            fields=fields,
        )
        if refusal is None:
            basis = self.basis_of(claims.req, claims.sub)
            scope = list(records or claims.rec)
            # Read together (one request through the server), not record by record.
            rows = self.s.db.records.get_many(scope)
            blobs = self.s.db.records.keyblob_many(scope)
            refusal = grant_refusal(
                claims,
                self.s.db.access.grant(claims.jti),
                self.s.db.access.request(claims.req),
                [RecordState(rid, rows.get(rid), rid in blobs) for rid in scope],
                day=legal_today(self.s.settings, moment),
                allowed=self._allowed(claims.pur, basis.kind),
                basis=basis.kind,
                notices=NoticeService(self.s).accepted_versions(),
            )
        if refusal is not None:
            fail(refusal.message)
        return claims

    # -- verify before use (issue 12): keys come from signed statements ---------

    def _verified_requester(self, name: str, moment: datetime) -> PublicIdentity:
        """The requester's keys as their signed registration gives them: the grant's
        keys are sealed to this key, never to the ``users`` row (issue 12, attack 3)."""
        return self.s.trusted_public(name, "request.approve", moment)

    def _verified_records(
        self, records: Sequence[str], action: str, moment: datetime
    ) -> record_trust.Fetched:
        """Refuse (logged, exit 4) a record whose stored fields or key blob are not the
        latest version its writer signed: a forgery sealed to the custodian key by
        staff, a swap with another record, or a rollback (issue 12, attack 4).
        Returns the rows verified (the caller uses those, not a second read)."""
        return record_trust.verify_records(self.s, records, action, moment)

    def _verified_reader(self, moment: datetime) -> None:
        """Refuse (logged) a reader the signed statements say is disabled or unknown."""
        state = self.s.trust()
        if state is not None and not state.is_active(self.s.user):
            self.s.deny(
                Event(self.s.user, "grant.read", "denied", detail={"reason": "user disabled"}),
                _t(
                    "user {user!r} is disabled or not verifiably registered: no reads",
                    user=self.s.user,
                ),
                moment,
            )

    def _verified_token_signer(self, kid: str) -> UserRow | None:
        """The user whose verified signing key has PASERK id ``kid`` (None if none).

        With an anchor, users, keys and roles come from the trust state, so a
        key or role written into ``users`` signs no token; a row that disagrees
        with the statements is treated as unknown.
        """
        state = self.s.trust()
        if state is None:
            for user in self.s.db.users.all():
                if _tokens.paserk_pid(user.sign_key) == kid:
                    return user
            return None
        for verified in state.users.values():
            if verified.active and _tokens.paserk_pid(verified.sign_key) == kid:
                return UserRow(
                    verified.name, verified.roles, verified.enc_key, verified.sign_key, "", ""
                )
        return None

    def _redeem(self, claims: _tokens.GrantClaims) -> ReleasedKeys:
        grant = self.s.db.access.grant(claims.jti)
        if grant is not None and grant.cache is not None:
            return _keys_from_cache(self.s.me.unseal(grant.cache), claims.jti)
        keys = self.s.keys.writer().redeem(claims.keys, self.s.me, claims.jti)
        if self.s.keys.single_use_release and claims.uses > 1:
            # Vault wrapping tokens unwrap once: keep the keys, sealed to the requester only.
            with self.s.db.transaction():
                self.s.db.access.set_grant_cache(
                    claims.jti, self.s.me.public.seal(_keys_to_cache(keys, claims.jti))
                )
        return keys

    def decrypt(
        self,
        keys: ReleasedKeys,
        records: Sequence[str],
        fields: Sequence[str],
        *,
        verified: bool = False,
        stored: Mapping[str, Mapping[str, tuple[int, bytes]]] | None = None,
    ) -> dict[str, dict[str, str]]:
        """Open the approved fields of ``records`` with released ``keys``.

        Unless the caller has just done so (``verified``), each record is first
        checked against its latest signed statement (issue 12, attack 4), and the
        fields checked are the ones opened. ``stored``: the sealed fields the
        caller verified (record id -> name -> (version, sealed)); else they are
        read, all records' in one call.
        """
        if not verified:
            stored = self._verified_records(records, "grant.read", self.s.now()).fields
        elif stored is None:
            stored = self.s.db.records.fields_many(list(records), list(fields))
        out: dict[str, dict[str, str]] = {}
        for rid in records:
            rkeys = keys.get(rid)
            if rkeys is None:
                raise ApprovalInvalid("grant material lacks a record in scope")
            stored_one = stored.get(rid, {})
            values: dict[str, str] = {}
            for name in fields:
                if name not in stored_one:
                    continue  # an optional field this record does not have
                version, sealed = stored_one[name]
                key = rkeys.get(name)
                if key is None:
                    raise ApprovalInvalid("grant material lacks a field in scope")
                plain = open_field(
                    sealed,
                    key,
                    vault_id=self.s.vault_id,
                    record_id=rid,
                    field=name,
                    version=version,
                )
                values[name] = plain.decode("utf-8")
            out[rid] = values
        return out


@runtime_checkable
class _ReleasesWithReceipt(Protocol):
    """A provider that reports what it released in Vault (the VaultProvider)."""

    def release_with_receipt(
        self,
        selections: Sequence[Selection],
        requester: PublicIdentity,
        grant_id: str,
        *,
        wrap_ttl: int | str | None = None,
    ) -> tuple[bytes, dict[str, list[str]]]: ...


@runtime_checkable
class _RevokesWrapping(Protocol):
    """A provider whose released grants can be revoked at the server."""

    def revoke_wrapping(self, accessors: Sequence[str]) -> int: ...


def _grant_hint(token: object) -> str | None:
    """The grant id a token names, read WITHOUT verifying it (None if it names none):
    only a hint of what the read will look up (:meth:`Session.expect`); the
    token is verified before anything relies on it."""
    if not isinstance(token, str) or len(token) > _tokens.MAX_TOKEN_BYTES:
        return None
    parts = token.strip().split(".")
    if len(parts) != 4 or parts[:2] != ["v4", "public"]:
        return None
    try:
        raw = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
        # The payload is the message followed by its 64-byte signature.
        jti = json.loads(raw[:-64]).get("jti")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return jti if is_hex_id(jti) else None


def _release(
    provider: KeyProvider,
    selections: Sequence[Selection],
    requester: PublicIdentity,
    grant_id: str,
    wrap_ttl: int,
) -> tuple[bytes, dict[str, list[str]] | None]:
    """Release the keys; in Vault mode also the receipt (accessors, request ids)."""
    if isinstance(provider, _ReleasesWithReceipt):
        return provider.release_with_receipt(selections, requester, grant_id, wrap_ttl=wrap_ttl)
    return provider.release(selections, requester, grant_id, wrap_ttl=wrap_ttl), None


def _states(records: Sequence[str], fetched: record_trust.Fetched) -> list[RecordState]:
    """Each record's state for the rules, from the rows read (and verified) together."""
    return [RecordState(rid, fetched.rows.get(rid), rid in fetched.blobs) for rid in records]


def _wrapped(record_id: str, fetched: record_trust.Fetched) -> WrappedRecord:
    """A record's verified key blob as the provider needs it (as Session.wrapped)."""
    found = fetched.blobs.get(record_id)
    if found is None:
        raise NotFound(_t("record {record_id} has no keys (deleted)", record_id=record_id))
    return WrappedRecord(record_id, found[0], found[1])


def _approval_detail(
    expires: str, uses: int, receipt: dict[str, list[str]] | None
) -> dict[str, DetailValue]:
    """The ``request.approve`` entry's detail; in Vault mode with the wrapping
    accessors and Vault request ids that ``audit reconcile`` matches."""
    detail: dict[str, DetailValue] = {"expires": expires, "uses": uses}
    if receipt is not None:
        # Flat lists of strings: the log entry grammar allows nothing deeper.
        detail["vault_accessors"] = list(receipt["accessors"])
        detail["vault_request_ids"] = list(receipt["request_ids"])
    return detail


def _wrapping_key(grant_id: str) -> str:
    """Meta key holding a grant's not yet revoked Vault wrapping accessors."""
    return f"vault_wrapping_accessors:{grant_id}"


def _keys_to_cache(keys: ReleasedKeys, grant_id: str) -> bytes:
    return json.dumps(
        {
            "grant": grant_id,
            "keys": {
                rid: {f: [k.version, b64(k.key)] for f, k in fields.items()}
                for rid, fields in keys.items()
            },
        }
    ).encode()


def _keys_from_cache(raw: bytes, grant_id: str) -> ReleasedKeys:
    try:
        doc = json.loads(raw)
        if doc["grant"] != grant_id:
            raise ApprovalInvalid("cached keys belong to another grant")
        return {
            rid: {f: FieldKey(int(v), unb64(k)) for f, (v, k) in fields.items()}
            for rid, fields in doc["keys"].items()
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise ApprovalInvalid("cached grant keys are malformed") from exc
