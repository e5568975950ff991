"""Reads with a grant: the token checked, one use consumed and logged, the read
witnessed, the keys redeemed and the fields opened. One step of the access flow
(:class:`~._svc_access.AccessService`).
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import NoReturn

from childvault._i18n import _t
from childvault.keys import (
    AccessDenied,
    ApprovalInvalid,
    ChildVaultError,
    DecryptionFailed,
    FieldKey,
    ProviderUnavailable,
    ReleasedKeys,
)
from childvault.keys._encoding import b64, is_hex_id, unb64
from childvault.vault import _audit, _tokens
from childvault.vault._action_roles import role_at
from childvault.vault._audit import DetailValue, Event
from childvault.vault._audit_entry import GRANT_ACTIONS
from childvault.vault._fieldcrypto import open_field
from childvault.vault._policy import RecordState, grant_refusal, token_refusal
from childvault.vault._svc_access_base import AccessBase
from childvault.vault._svc_notices import NoticeService
from childvault.vault._time import legal_today

#: The ``grant.read`` error reasons of a read that gave its use back
#: (:meth:`AccessReads._refund_use`), which :func:`spent_uses` counts: the
#: witness not written, and the key provider failing (then its error's name).
REFUND_WITNESS = "witness not written"
REFUND_PROVIDER = "key provider: "


class AccessReads(AccessBase):
    """Read approved fields with an approval token."""

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
        revoked, spent = self._grant_in_log(claims.jti)
        if revoked:
            # The grants row said live (else _check_grant refused): it was edited.
            self.s.distrust(
                "grant.read",
                _t("grant {grant} is revoked in the log, not in its grants row", grant=claims.jti),
                moment,
            )
        if spent >= claims.uses and not self._row_spent(claims.jti):
            # The row said a use was left (else _check_grant refused), and still
            # does: its counter was reset. (Another read of this grant that took
            # the last use meanwhile leaves the row spent: then the plain denial.)
            self.s.distrust(
                "grant.read",
                _t(
                    "grant {grant} has its {uses} uses spent in the log, not in its grants row",
                    grant=claims.jti,
                    uses=claims.uses,
                ),
                moment,
            )
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
                reason = REFUND_PROVIDER + type(exc).__name__
                self._refund_use(claims, want_recs, want_flds, reason, moment)
            raise

    def _grant_in_log(self, grant_id: str) -> tuple[bool, int]:
        """Whether the verified log revokes ``grant_id``, and how many of its uses the
        reader's logged reads have consumed: ``(revoked, spent)``.

        The ``grants`` row's ``revoked_at`` and ``uses`` are any user's to reset
        by SQL; the entries are signed and chained. Only an officer's
        ``grant.revoke`` counts (``role_at``, ``held``: counting one more
        revocation is the safe side), as anyone may log an entry naming the
        grant in their own name; for the same reason only the reader's own reads
        count (the token was issued to them: :func:`spent_uses`). One lookup
        through the log's generated ``grant_ref`` index (docs/trust.md, "Log
        indexes"), the one a server sends ahead with a read's inputs
        (``GRANT_ACTIONS``).
        """
        state = self.s.trust()
        point = self.s.verified_point()
        entries = [
            json.loads(raw) for raw in self.s.db.audit.entries_by_ref(GRANT_ACTIONS, grant=grant_id)
        ]
        revoked = any(
            (doc.get("action"), doc.get("outcome"), doc.get("grant"))
            == ("grant.revoke", "ok", grant_id)
            and role_at(state, doc.get("actor"), "officer", doc.get("seq"), mode="held")
            for doc in entries
        )
        spent = spent_uses(entries, grant_id, self.s.user, point[0] if point else 0)
        return revoked, spent

    def _row_spent(self, grant_id: str) -> bool:
        """Whether the ``grants`` row, read again, says no use is left (or is gone)."""
        grant = self.s.db.access.grant(grant_id)
        return grant is None or grant.uses >= grant.max_uses

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
                self._refund_use(claims, recs, flds, REFUND_WITNESS, moment)
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
        # Empty for a plain consent read; a transfer's recipient otherwise.
        detail.update(self.basis_of(claims.req, claims.sub).detail())
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


def spent_uses(
    entries: Sequence[Mapping[str, object]], grant_id: str, reader: str, verified: int
) -> int:
    """The uses of ``grant_id`` that ``reader``'s logged reads consumed.

    ``entries``: the grant's log entries in log order (others are skipped).
    A read takes its use in the transaction that logs it ``ok``; a read that
    then fails logs an ``error`` and keeps the use spent, except the two
    failures before any plaintext that give it back in the transaction that
    logs them (:meth:`AccessReads._refund_use`: the witness not written, the
    key provider failing), each returning the use of a read before it. Only
    ``reader``'s entries count: anyone may log one naming the grant, and a
    stranger's would spend the reader's uses. A give-back counts only below
    ``verified`` (the log size whose every signature the caller verified):
    an unverified one could only add a use; any ``ok`` read counts, the safe
    side.
    """
    spent = 0
    for doc in entries:
        if (doc.get("action"), doc.get("grant"), doc.get("actor")) != (
            "grant.read",
            grant_id,
            reader,
        ):
            continue
        if doc.get("outcome") == "ok":
            spent += 1
        elif doc.get("outcome") == "error" and spent > 0 and _refunds(doc, verified):
            spent -= 1
    return spent


def _refunds(doc: Mapping[str, object], verified: int) -> bool:
    """Whether a ``grant.read`` error entry is one that gave its use back."""
    detail, seq = doc.get("detail"), doc.get("seq")
    reason = detail.get("reason") if isinstance(detail, Mapping) else None
    return (
        type(seq) is int
        and seq < verified
        and isinstance(reason, str)
        and (reason == REFUND_WITNESS or reason.startswith(REFUND_PROVIDER))
    )


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
