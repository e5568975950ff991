"""The access rules as pure functions: who may act, when an approval or a read is refused.

Each rule takes plain data (rows, claims, limits, the time) and returns
``None`` or a :class:`Refusal`; none reads the database, the clock or the
network. The services fetch the data, ask the rule, and on a refusal log a
denied entry and raise. So the same rules run in the library now and on the
server later, and they are tested without a vault (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from childvault._i18n import _t, join
from childvault.vault._backend import GrantRow, RecordRow, RequestRow, UserRow

if TYPE_CHECKING:
    # Annotations only: the token module (and its dataclass) is loaded by the
    # commands that issue or redeem a token, not by every command.
    from childvault.vault._tokens import GrantClaims

#: How far in the future a token's issue time may lie (clock skew between machines).
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Refusal:
    """Why an action is refused.

    ``reason`` is the short code logged in the denied entry's detail;
    ``message`` is what the actor is told; ``kind`` says how it is reported:
    ``denied`` (an access refusal) or ``usage`` (a request the actor can fix,
    e.g. a TTL out of range; logged all the same).
    """

    reason: str
    message: str
    kind: Literal["denied", "usage"] = "denied"


@dataclass(frozen=True)
class RecordState:
    """What a rule needs to know of one record: its bookkeeping and whether keys remain."""

    id: str
    row: RecordRow | None
    has_keys: bool

    @property
    def live(self) -> bool:
        """Not deleted: the row and its wrapped keys are both there."""
        return self.row is not None and self.has_keys


@dataclass(frozen=True)
class ApprovalLimits:
    """The vault's limits on approvals (from its settings)."""

    max_ttl: timedelta
    max_uses: int
    max_records: int
    notice_version: str
    #: Earlier versions the current notice continues through non-substantive
    #: changes only: consents under them stay valid (P-10).
    accepted_notices: frozenset[str] = frozenset()


#: A role as a person reads it: English keeps the code (what ``--role`` takes), a
#: translation names the role and keeps the code (``保护专员（officer）``).
_ROLE_TITLES = {
    "staff": _t("staff"),
    "officer": _t("officer"),
    "admin": _t("admin"),
}


def _role_title(role: str) -> str:
    return _ROLE_TITLES.get(role, role)


def role_refusal(
    roles: Collection[str], allowed: Sequence[str], actor: str, what: str
) -> Refusal | None:
    """Refuse an actor who has none of ``allowed`` (``what``: the action, for the message)."""
    if not set(roles).isdisjoint(allowed):
        return None
    return Refusal(
        "role",
        _t(
            "{what} needs the role {allowed}; {actor!r} has {roles}",
            what=what,
            allowed=join(" or ", map(_role_title, allowed)),
            actor=actor,
            roles=join(", ", map(_role_title, sorted(roles))),
        ),
    )


def approval_refusal(
    req: RequestRow,
    approver: str,
    *,
    ttl: timedelta,
    uses: int,
    limits: ApprovalLimits,
    records: Sequence[RecordState],
    day: date,
    allowed: Mapping[str, Collection[str]] | None = None,
    basis: str = "consent",
) -> Refusal | None:
    """The first rule a pending request breaks if ``approver`` approved it now.

    In order: an officer's own request, the TTL, the number of uses, the
    record cap, then for each record in the request: deleted, past
    retention, a field its purpose may not release (``allowed``: record type
    to the fields the purpose may release; see :func:`purpose_fields_refusal`),
    no consent for the purpose, consent under another notice, and the child's
    fourteenth birthday passed under a guardian's consent
    (:func:`turned_14_refusal`). The consent, notice and age rules apply to
    the ``consent`` basis only: a statutory basis (:data:`BASES`) is not
    blocked by consent (DESIGN section 5 item 6).
    """
    refusal = approval_terms_refusal(
        req,
        approver,
        ttl=ttl,
        uses=uses,
        max_ttl=limits.max_ttl,
        max_uses=limits.max_uses,
        max_records=limits.max_records,
    )
    if refusal is not None:
        return refusal
    iso_day = day.isoformat()
    for state in records:
        rid, row = state.id, state.row
        if row is None or not state.has_keys:
            return Refusal("deleted", _t("record {id} was deleted", id=rid))
        if row.retain_until < iso_day:
            return Refusal(
                "retention",
                _t(
                    "record {id} is past its retention date ({day})",
                    id=rid,
                    day=row.retain_until,
                ),
            )
        refusal = purpose_fields_refusal(req.purpose, req.fields, row, allowed)
        if refusal is not None:
            return refusal
        if basis != "consent":
            continue
        if req.purpose not in row.consent.get("purposes", ()):
            return Refusal(
                "purpose",
                _t(
                    "record {id} has no consent for the purpose {purpose!r} "
                    "(record a new consent first)",
                    id=rid,
                    purpose=req.purpose,
                ),
            )
        if (
            row.consent.get("notice_version") != limits.notice_version
            and row.consent.get("notice_version") not in limits.accepted_notices
        ):
            return Refusal(
                "notice",
                _t(
                    "record {id} consented to notice {old!r}, "
                    "but the current notice is {current!r}: "
                    "renew the consent first",
                    id=rid,
                    old=row.consent.get("notice_version"),
                    current=limits.notice_version,
                ),
            )
        refusal = turned_14_refusal(row, day)
        if refusal is not None:
            return refusal
    return None


def approval_terms_refusal(
    req: RequestRow,
    approver: str,
    *,
    ttl: timedelta,
    uses: int,
    max_ttl: timedelta,
    max_uses: int,
    max_records: int,
) -> Refusal | None:
    """The first of :func:`approval_refusal`'s rules that need no record: an officer's
    own request, the TTL, the number of uses, the record cap (the server checks the
    same on the grant row an approval stores: :func:`issued_grant_refusal`)."""
    if req.requester == approver:
        return Refusal(
            "own request", _t("an officer cannot approve their own request; ask another officer")
        )
    if ttl <= timedelta(0) or ttl > max_ttl:
        return Refusal(
            "ttl",
            _t("the TTL must be positive and at most {ttl}", ttl=str(max_ttl)),
            "usage",
        )
    if not 1 <= uses <= max_uses:
        return Refusal("uses", _t("uses must be between 1 and {n}", n=max_uses), "usage")
    if len(req.records) > max_records:
        return Refusal("cap", _t("more than {n} records in one approval", n=max_records))
    return None


# -- request bases (DESIGN section 5 item 6; issue 15 finding 3) ---------------

#: The bases a request may name. ``consent`` is checked against the record's
#: consented purposes; the others are statutory and consent cannot block them:
#: a child's or guardian's own request (M-17, linked to the rights register),
#: breach notification (P-21, contact fields only, linked to an incident), and
#: disclosure required by law (P-18, M-6: recipient, provision, assessment, two
#: officers).
BASES = ("consent", "subject_access", "breach_notification", "legal_obligation")
#: The fields a breach notification may release: whom to contact, about which child.
CONTACT_FIELDS = ("name", "guardian_name", "guardian_phone")


def cosign_refusal(
    basis: str, requester: str, approver: str, cosigners: Collection[str]
) -> Refusal | None:
    """A ``legal_obligation`` request needs a second officer's co-signature first.

    The co-signer must be neither the requester nor the approving officer, so
    two distinct officers decide every disclosure required by law (P-18, M-6).
    """
    if basis != "legal_obligation":
        return None
    if any(c not in (requester, approver) for c in cosigners):
        return None
    return Refusal(
        "cosign",
        _t(
            "a legal-obligation disclosure needs two officers: another officer must run "
            "`childvault cosign` on the request first"
        ),
    )


# -- purpose decides fields (P-11, P-14; issue 15 finding 1) ------------------


def purpose_fields_refusal(
    purpose: str,
    fields: Collection[str],
    row: RecordRow,
    allowed: Mapping[str, Collection[str]] | None,
) -> Refusal | None:
    """Refuse fields that ``purpose`` may never release from a record of ``row.type``.

    ``allowed`` maps each record type to the fields the schema lists for the
    purpose (``Schema`` ``purpose_fields``); ``None`` means the schema has no
    lists and every field may be released. ``statistics`` lists none in the
    default schema: it is served only by the anonymised export.
    """
    if allowed is None:
        return None
    permitted = allowed.get(row.type, ())
    extra = [f for f in fields if f not in permitted]
    if not extra:
        return None
    return Refusal(
        "purpose fields",
        _t(
            "the purpose {purpose!r} may not release {fields} from a {type} record "
            "(the schema allows: {allowed})",
            purpose=purpose,
            fields=join(", ", extra),
            type=row.type,
            allowed=join(", ", permitted) or _t("no field"),
        ),
    )


# -- the fourteenth birthday (M-12; issue 15 finding 2) -----------------------


def turned_14_refusal(row: RecordRow, day: date) -> Refusal | None:
    """Refuse a record whose guardian consented for a child who has since turned 14.

    A guardian's consent for a child under 14 records the day the child turns
    14 (``child_consent_due``); from that day the child's own consent must be
    recorded (M-12) before any approval. ``day`` is the institution's date.
    """
    due = row.consent.get("child_consent_due")
    if isinstance(due, str) and due and due <= day.isoformat():
        return Refusal(
            "turned 14",
            _t(
                "record {id}: the child turned 14 on {day}; the guardian's consent no longer "
                "suffices: record the child's own consent first (M-12)",
                id=row.id,
                day=due,
            ),
        )
    return None


def _read(reason: str) -> Refusal:
    # A refused read tells the reader exactly what the log records.
    return Refusal(reason, reason)


def token_refusal(
    claims: GrantClaims,
    signer: UserRow,
    *,
    vault_id: str,
    reader: str,
    moment: datetime,
    records: Sequence[str] | None,
    fields: Sequence[str] | None,
) -> Refusal | None:
    """Checks of a token whose signature verified under ``signer``'s key.

    The signer must be an officer and the issuer; the token must be for this
    vault and this reader, inside its time window, and the records and fields
    asked for must be inside its scope.
    """
    if "officer" not in signer.roles:
        return _read(f"signed by {signer.name}, who is not an officer")
    if claims.iss != signer.name:
        return _read("issuer claim does not match the signing key")
    if claims.vault != vault_id:
        return _read("token from another vault")
    if claims.sub != reader:
        return _read(f"token issued to {claims.sub}, not {reader}")
    if moment < claims.nbf or claims.iat > moment + CLOCK_SKEW:
        return _read("token not yet valid")
    if moment >= claims.exp:
        return _read("token expired")
    if records and not set(records) <= set(claims.rec):
        return _read("record outside the grant's scope")
    if fields and not set(fields) <= set(claims.fld):
        return _read("field outside the grant's scope")
    return None


def grant_refusal(
    claims: GrantClaims,
    grant: GrantRow | None,
    req: RequestRow | None,
    records: Sequence[RecordState],
    *,
    day: date,
    allowed: Mapping[str, Collection[str]] | None = None,
    basis: str = "consent",
    notices: Collection[str] | None = None,
) -> Refusal | None:
    """Checks of a verified token against the vault's state, at every read.

    The grant must be known, match the token, be unrevoked with uses left; the
    request must be the approved one the token names; and each record read
    must still exist, still consent to the purpose, and not be past retention
    (consent narrowed or retention passed since the approval); the fields may
    be released for the purpose (``allowed``, as in :func:`approval_refusal`)
    and the child has not turned 14 under a guardian's consent. Under a
    statutory ``basis`` the consent and age rules do not apply. ``notices``:
    the notice versions consents may be under (None: not checked); a notice
    changed substantively since the approval stops the read until consent
    is renewed.
    """
    if grant is None:
        return _read("grant unknown to this vault")
    if (grant.request_id, grant.officer, grant.requester) != (claims.req, claims.iss, claims.sub):
        return _read("token does not match the recorded grant")
    if grant.revoked_at is not None:
        return _read("grant revoked")
    if grant.uses >= grant.max_uses or claims.uses != grant.max_uses:
        return _read("uses exhausted")
    if (
        req is None
        or req.status != "approved"
        or (req.records, req.fields, req.purpose) != (claims.rec, claims.fld, claims.pur)
    ):
        return _read("token does not match the approved request")
    iso_day = day.isoformat()
    for state in records:
        row = state.row
        if row is None or not state.has_keys:
            return _read(f"record {state.id} was deleted")
        if basis == "consent" and claims.pur not in row.consent.get("purposes", ()):
            return _read(f"record {state.id} no longer has consent for {claims.pur}")
        if (
            basis == "consent"
            and notices is not None
            and row.consent.get("notice_version") not in notices
        ):
            return _read(f"record {state.id} consented under an earlier notice: renew the consent")
        if row.retain_until < iso_day:
            return _read(f"record {state.id} is past its retention date")
        refusal = purpose_fields_refusal(claims.pur, claims.fld, row, allowed) or (
            turned_14_refusal(row, day) if basis == "consent" else None
        )
        if refusal is not None:
            return _read(refusal.message)
    return None


# -- what a server checks of an issued grant (findings) --------------


def basis_fields(
    basis: str, purpose_fields: Mapping[str, Collection[str]]
) -> Mapping[str, Collection[str]] | None:
    """The fields a request of ``basis`` may release, per record type (``allowed``).

    ``purpose_fields`` maps each record type to the fields the schema lists
    for the request's purpose: consent and legal-obligation requests are
    held to it; a subject-access request may release any field of the
    subject's own record (M-17, None); a breach notification only
    :data:`CONTACT_FIELDS`.
    """
    if basis == "subject_access":
        return None
    if basis == "breach_notification":
        return {name: CONTACT_FIELDS for name in purpose_fields}
    return purpose_fields


def issued_grant_refusal(
    req: RequestRow,
    grant: GrantRow,
    *,
    issued: datetime,
    expires: datetime,
    now: datetime,
    max_ttl: timedelta,
    max_uses: int,
    max_records: int,
    records: Sequence[RecordState],
    allowed: Mapping[str, Collection[str]] | None,
    basis: str,
    cosigners: Collection[str],
) -> Refusal | None:
    """The approval rules a server decides from the grant row an officer stores.

    The officer's client checks every rule of :func:`approval_refusal`
    before it approves; a client that skips them is held by the server to
    those it can decide from its own rows (finding A-5): the grant's officer
    approving their own request, the TTL (``issued`` to ``expires``, issued
    no later than now and :data:`CLOCK_SKEW`), the uses and the record cap
    (:func:`approval_terms_refusal`), each record still there, the fields
    its purpose may release under its ``basis`` (:func:`purpose_fields_refusal`)
    and a legal-obligation request's second officer (:func:`cosign_refusal`).
    Consent, notice, retention and age stay the client's: they need the
    verified record statements and notices.
    """
    # Issued in the future, a grant's TTL would count from then; issued in the
    # past (a slow approval, a long first verification) it only ends sooner.
    if issued > now + CLOCK_SKEW:
        return Refusal(
            "issued", _t("a grant cannot be issued in the future ({at})", at=grant.issued_at)
        )
    refusal = approval_terms_refusal(
        req,
        grant.officer,
        ttl=expires - issued,
        uses=grant.max_uses,
        max_ttl=max_ttl,
        max_uses=max_uses,
        max_records=max_records,
    )
    if refusal is not None:
        return refusal
    for state in records:
        if state.row is None or not state.has_keys:
            return Refusal("deleted", _t("record {id} was deleted", id=state.id))
        refusal = purpose_fields_refusal(req.purpose, req.fields, state.row, allowed)
        if refusal is not None:
            return refusal
    return cosign_refusal(basis, req.requester, grant.officer, cosigners)
