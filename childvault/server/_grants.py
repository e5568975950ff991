"""An approval's grant, release key and log entry, checked together at commit
(findings A-4, A-5), and the release of a grant's key after logging (A-9, A-10).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from childvault._i18n import _t
from childvault.keys import IntegrityError
from childvault.keys._encoding import is_hex_id
from childvault.server._host_common import SERVER_ONLY, Refused, _Txn
from childvault.server._release_keys import RowRefused, logged_terms, open_key, seal_key
from childvault.vault._action_roles import role_at
from childvault.vault._backend import Backend, GrantRow, RequestRow
from childvault.vault._policy import RecordState, basis_fields, issued_grant_refusal
from childvault.vault._policy import Refusal as PolicyRefusal
from childvault.vault._statements import TrustState
from childvault.vault._time import parse_iso


def stage_issue(
    db: Backend, txn: _Txn, repo: str, method: str, arg: Callable[[int, str], Any]
) -> None:
    """Note what an approval's write issues (after ``bind`` checked who acted).

    ``access.decide`` counts only for a request still pending (a decided one is
    not decided again); ``release.new`` is refused unless this transaction added
    the grant row first (409 ``unverified``, before any key is made); the
    caller's ``request.approve`` entries (verified by ``check_entries``)
    are kept for the match at commit (:func:`check_issued`).
    """
    issued = txn.issued
    if (repo, method) == ("access", "decide"):
        request_id = arg(0, "request_id")
        req = db.access.request(request_id) if isinstance(request_id, str) else None
        if req is not None and req.status == "pending":
            issued.decided.setdefault(req.id, str(arg(1, "status")))
    elif (repo, method) == ("access", "add_grant"):
        grant = arg(0, "grant")
        if grant.id in issued.grants:
            raise Refused(
                409, "unverified", _t("grant {grant_id} is added twice", grant_id=grant.id)
            )
        issued.grants[grant.id] = grant
    elif (repo, method) == ("release", "new"):
        grant_id = arg(0, "grant_id")
        if grant_id not in issued.grants:
            raise Refused(
                409,
                "unverified",
                _t(
                    "a release key is made only for a grant this transaction adds: {grant_id}",
                    grant_id=str(grant_id),
                ),
            )
    else:
        # The entries as check_entries decoded them, once (an import's 500 a batch).
        for row, obj in zip(arg(0, "rows"), txn.decoded, strict=True):
            if (obj.get("action"), obj.get("outcome")) == ("request.approve", "ok"):
                grant_id = obj.get("grant")
                if not isinstance(grant_id, str) or grant_id in issued.logged:
                    raise Refused(
                        409,
                        "unverified",
                        _t("log entry {seq} approves no grant, or one twice", seq=row[0]),
                    )
                issued.logged[grant_id] = obj


def check_issued(db: Backend, txn: _Txn, state: TrustState, schema: Callable[[], Any]) -> None:
    """At commit: every grant, approval decision and approval entry matched.

    Each grant row added must have the caller's verified ``request.approve``
    entry naming its request and it, and a decision ``approved`` of that
    request made in this transaction while it was pending; the grant names
    the request's requester and the caller; the entry names the request's
    records, fields and purpose, and the grant's expiry and uses. Each
    ``approved`` decision and each approval entry has its grant. Otherwise
    IntegrityError (409 ``unverified``, nothing stored). Then the approval
    rules the server can decide (:func:`_policy.issued_grant_refusal`, the
    settings from the verified ``state``): 403 ``policy``.
    """
    issued = txn.issued

    def fail(grant_id: str, why: str) -> NoReturn:
        raise IntegrityError(_t("grant {grant_id}: {why}", grant_id=grant_id, why=why))

    for grant_id in sorted(set(issued.logged) - set(issued.grants)):
        fail(grant_id, _t("an approval entry names a grant this transaction does not add"))
    approved = {r for r, status in issued.decided.items() if status == "approved"}
    granted = {g.request_id for g in issued.grants.values()}
    for request_id in sorted(approved - granted):
        raise IntegrityError(
            _t("request {request_id} is approved without a grant", request_id=request_id)
        )
    if len(granted) != len(issued.grants):
        fail(sorted(issued.grants)[0], _t("one approval issues one grant"))
    for grant in issued.grants.values():
        entry = issued.logged.get(grant.id)
        req = db.access.request(grant.request_id)
        if entry is None or entry.get("request") != grant.request_id:
            fail(grant.id, _t("no logged approval of its request in this transaction"))
        if grant.request_id not in approved or req is None or req.status != "approved":
            fail(grant.id, _t("its request was not approved in this transaction"))
        detail = entry.get("detail")
        if (
            (grant.officer, grant.requester) != (txn.user, req.requester)
            or req.decided_by != txn.user
            or (entry.get("records"), entry.get("fields"), entry.get("purpose"))
            != (list(req.records), list(req.fields), req.purpose)
            or not isinstance(detail, dict)
            or (detail.get("expires"), detail.get("uses")) != (grant.expires_at, grant.max_uses)
        ):
            fail(grant.id, _t("the grant, its request and its approval entry differ"))
        refusal = grant_policy(db, req, grant, state, schema)
        if refusal is not None:
            raise Refused(
                403,
                "policy",
                _t("grant {grant_id}: {why}", grant_id=grant.id, why=refusal.message),
            )


def grant_policy(
    db: Backend, req: RequestRow, grant: GrantRow, state: TrustState, schema: Callable[[], Any]
) -> PolicyRefusal | None:
    """:func:`_policy.issued_grant_refusal` of ``grant``, from the server's rows: the
    verified settings, the request's logged basis and co-signers, the record rows."""

    def logged(action: str) -> list[dict[str, Any]]:
        # Committed entries: each replayed (chain, signatures) before its commit.
        out = []
        for raw in db.audit.entries_by_ref((action,), request=req.id):
            doc = json.loads(raw)
            if (doc.get("request"), doc.get("action"), doc.get("outcome")) == (
                req.id,
                action,
                "ok",
            ):
                out.append(doc)
        return out

    # The requester's own entry: any user may log a request.create in their own
    # name naming another's request, and the first one no longer decides (FX-2).
    created = [doc for doc in logged("request.create") if doc.get("actor") == req.requester]
    detail = created[0].get("detail") if created else None
    basis = str(detail.get("basis", "consent")) if isinstance(detail, dict) else "consent"
    ids = list(dict.fromkeys(req.records))
    rows = db.records.get_many(ids) if ids else {}
    blobs = db.records.keyblob_many(ids) if ids else {}
    types = schema().types
    try:
        issued, expires = parse_iso(grant.issued_at), parse_iso(grant.expires_at)
    except (TypeError, ValueError) as exc:
        raise IntegrityError(
            _t("grant {grant_id}: its times are malformed", grant_id=grant.id)
        ) from exc
    return issued_grant_refusal(
        req,
        grant,
        issued=issued,
        expires=expires,
        now=datetime.now(UTC),
        max_ttl=timedelta(seconds=int(state.setting("max_ttl_s"))),
        max_uses=int(state.setting("max_uses")),
        max_records=int(state.setting("max_records")),
        records=[RecordState(r, rows.get(r), r in blobs) for r in ids],
        allowed=basis_fields(
            basis, {name: rt.fields_for(req.purpose) for name, rt in types.items()}
        ),
        basis=basis,
        # An officer's only: any user may append an entry of any action in their
        # own name, so a staff member's request.cosign is no second officer.
        cosigners=[
            str(doc.get("actor"))
            for doc in logged("request.cosign")
            if role_at(state, doc.get("actor"), "officer", doc.get("seq"), mode="was_active")
        ],
    )


def release(
    db: Backend,
    txn: _Txn,
    method: str,
    a: list[Any],
    *,
    secret: bytes | None,
    vault_id: str,
    states: Callable[[int], TrustState],
) -> bytes | None:
    """Release after logging: make a grant's release key, or hand it out once per use.

    The key is stored under the serving process's release secret, bound to
    the vault, grant, officer and release count (``_release_keys``); the
    decision reads the grant's signed log entries, never the ``grants``
    row alone (findings A-9, A-10).
    """
    if method == "redeem_at_commit":
        # A read's redemption sent with the commit of its logged use (one
        # request, docs/server.md "Release after logging"): every check of
        # ``redeem``, but a refusal answers None instead of rolling back the
        # use and its log entry (nothing is written before a refusal); the
        # client then asks ``redeem`` alone, which refuses and logs as ever.
        try:
            return release(db, txn, "redeem", a, secret=secret, vault_id=vault_id, states=states)
        except Refused as exc:
            if exc.reason != "release_refused":
                raise
            return None
    grant_id = str(a[0]) if a else ""
    if not is_hex_id(grant_id):
        raise Refused(400, "malformed", _t("a grant id is 32 hex characters"))
    if secret is None:
        raise Refused(
            503, "release_refused", _t("this server holds no release secret (serve --as)")
        )
    where = SERVER_ONLY + "release/" + grant_id
    stored = db.meta.get(where)
    if method == "new":
        if stored is not None:
            raise Refused(
                409,
                "release_refused",
                _t("grant {grant_id} has a release key", grant_id=grant_id),
            )
        key = secrets.token_bytes(32)
        db.meta.set(where, seal_key(secret, vault_id, grant_id, txn.user, 0, key))
        return key

    def refuse(why: str) -> NoReturn:
        raise Refused(
            403, "release_refused", _t("grant {grant_id}: {why}", grant_id=grant_id, why=why)
        )

    if not txn.commits:
        # The count below must be committed with the answer that carries the key.
        refuse(_t("a release is answered only in a request that commits it"))
    grant = db.access.grant(grant_id)
    if grant is None or stored is None:
        refuse(_t("unknown grant"))
    try:
        held = open_key(secret, vault_id, grant_id, stored)
    except RowRefused as exc:
        refuse(str(exc))
    terms = logged_terms(db, states, grant_id)
    if isinstance(terms, str):
        refuse(terms)
    if terms.officer != held.officer:
        refuse(_t("the release key was made by another officer"))
    if terms.requester != txn.user:
        refuse(_t("issued to {requester}, not {user}", requester=terms.requester, user=txn.user))
    # The row can only add a refusal (it is revoked in the same transaction
    # as the log entry); the log entry is what an insider cannot take back.
    if terms.revoked or grant.revoked_at is not None:
        refuse(_t("revoked"))
    if terms.expires <= datetime.now(UTC):
        refuse(_t("expired"))
    # One release per use the requester logged, up to the uses the officer signed.
    if held.redeemed >= min(terms.reads, terms.max_uses):
        refuse(_t("no logged use left to redeem"))
    after = seal_key(secret, vault_id, grant_id, held.officer, held.redeemed + 1, held.key)
    # Compare-and-set: of two replicas releasing on one count, one wins.
    if not db.meta.replace(where, stored, after):
        refuse(_t("released meanwhile; try again"))
    return held.key
