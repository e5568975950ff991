"""Access decisions: approving a request (releasing its keys, issuing its token),
denying it and revoking a grant (in Vault too). One step of the access flow
(:class:`~._svc_access.AccessService`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NoReturn, Protocol, runtime_checkable

from childvault._i18n import _t
from childvault.keys import (
    AccessDenied,
    ChildVaultError,
    KeyProvider,
    NotFound,
    ProviderUnavailable,
    PublicIdentity,
    Selection,
    UsageError,
    WrappedRecord,
)
from childvault.keys._encoding import check_hex_id
from childvault.vault import _audit, _tokens
from childvault.vault import _record_trust as record_trust
from childvault.vault._action_roles import role_at
from childvault.vault._audit import DetailValue, Event
from childvault.vault._backend import GrantRow, RequestRow
from childvault.vault._policy import RecordState, Refusal, approval_refusal, cosign_refusal
from childvault.vault._session import new_id
from childvault.vault._svc_access_base import AccessBase
from childvault.vault._time import iso, legal_today, parse_iso
from childvault.vault._trust_state import TrustState
from childvault.vault._types import Approval


class AccessApprovals(AccessBase):
    """Approve or deny requests and revoke grants."""

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
            if doc.get("grant") != grant_id:
                continue
            found = officer_approval_accessors(state, doc)
            if found is not None:
                return found
            if is_officer_approval(state, doc):
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


def is_officer_approval(state: TrustState | None, doc: Mapping[str, Any]) -> bool:
    """Whether log entry ``doc`` is a successful ``request.approve`` by a user who
    held the officer role at its sequence number (``role_at``, ``held``).

    Any user may append a ``request.approve`` entry in their own name, so only
    an officer's counts. ``held``, not ``was_active``: a grant approved before
    an upgrade registered its officer must stay accounted for.
    """
    return (doc.get("action"), doc.get("outcome")) == ("request.approve", "ok") and role_at(
        state, doc.get("actor"), "officer", doc.get("seq"), mode="held"
    )


def officer_approval_accessors(
    state: TrustState | None, doc: Mapping[str, Any]
) -> list[str] | None:
    """The Vault wrapping accessors an officer's approval entry ``doc`` recorded, or
    None when ``doc`` is not an officer's approval or names none in the right form.

    The one rule for which logged accessors count: ``revoke`` revokes them and
    ``audit reconcile`` matches Vault's audit log against them.
    """
    if not is_officer_approval(state, doc):
        return None
    found = (doc.get("detail") or {}).get("vault_accessors")
    if isinstance(found, list) and all(isinstance(a, str) for a in found):
        return [str(a) for a in found]
    return None


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
