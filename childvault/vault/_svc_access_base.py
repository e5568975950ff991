"""Access: what every step of the request / approve / read flow shares: the
request's basis (checked against its log entry), the purposes' fields, the
approval limits and the verify-before-use look-ups. The base of
:class:`~._svc_access.AccessService`, apart so that each step has its own module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from childvault._i18n import _t
from childvault.keys import PublicIdentity
from childvault.vault import _record_trust as record_trust
from childvault.vault import _tokens
from childvault.vault._audit import DetailValue, Event
from childvault.vault._backend import UserRow, request_basis_key
from childvault.vault._policy import ApprovalLimits, basis_fields
from childvault.vault._session import Session
from childvault.vault._svc_audit import AuditService
from childvault.vault._svc_notices import NoticeService


@dataclass(frozen=True)
class Basis:
    """The basis of an access request (DESIGN section 5 item 6).

    ``kind`` is one of :data:`~._policy.BASES`; ``link`` the rights-request id
    (``subject_access``) or incident id (``breach_notification``);
    ``recipient``, ``provision`` and ``assessment`` name, for
    ``legal_obligation``, the organisation receiving the data, the legal
    provision requiring it and the reference of the impact assessment; a
    ``consent`` request that hands data to another organisation names the
    ``recipient`` and ``assessment`` (a transfer, P-17).
    """

    kind: str = "consent"
    link: str | None = None
    recipient: str | None = None
    provision: str | None = None
    assessment: str | None = None

    def detail(self) -> dict[str, DetailValue]:
        """The log-entry detail of a basis (empty for consent with no recipient)."""
        if self.kind == "consent" and not self.recipient:
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


class AccessBase:
    """The state and checks the access steps share (session, audit, a read's bases)."""

    def __init__(self, session: Session, audit: AuditService) -> None:
        self.s = session
        self._audit = audit
        #: During a read (:meth:`read_with_claims`): the bases already looked up.
        self._bases: dict[tuple[str, str], Basis] | None = None

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
        # Indexed whenever the entry carries a detail: a statutory basis, or a
        # consent transfer's recipient (whose removal would hide the transfer).
        expected = None if not logged else json.dumps(logged, sort_keys=True)
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
