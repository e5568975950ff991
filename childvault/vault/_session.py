"""The session every service works over: who acts, with which roles, on which vault.

It holds the unlocked identity, its roles, the clock, the backend, the key
providers, the schema, the config and home, and the key-slot secrets, and
offers the few helpers every service uses: the time of an operation, logging,
and refusing (logged) an actor without the role (docs/architecture.md).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from childvault._i18n import _t
from childvault.keys import (
    AccessDenied,
    ConfigError,
    Identity,
    IntegrityError,
    KeySlots,
    NotFound,
    PublicIdentity,
    WrappedRecord,
)
from childvault.keys._encoding import check_hex_id
from childvault.vault import _audit, _settings
from childvault.vault._action_roles import role_at
from childvault.vault._audit import Event
from childvault.vault._backend import Backend, RecordRow
from childvault.vault._config import Config, Home
from childvault.vault._keyconfig import KeysConfig, OpenBaoCredentials
from childvault.vault._keyring import Keyring
from childvault.vault._notice_log import notice_problem
from childvault.vault._policy import RecordState, role_refusal
from childvault.vault._registrations import (
    _SAVE_AFTER,
    Verified,
    anchor_of,
    is_upgraded,
    load_saved,
    save_state,
    verify_log,
)
from childvault.vault._schema import Schema
from childvault.vault._statements import Anchor, TrustState
from childvault.vault._time import ZONE_SETTING, Clock, today

#: The meta row that says whether the vault still accepts records (checked
#: against the log before use: :meth:`Session.accepting_records`).
ACCEPTING = "accepting_records"

#: The meta rows of the notice register and of the current notice version.
NOTICES, NOTICE_VERSION = "notices", "notice_version"

#: The roles that write records and request access.
WRITERS = ("staff", "officer")


def _save_due(known: Verified) -> bool:
    """Whether :func:`verify_log` would save ``known`` now (its saved point is old)."""
    return known.saved_at is None or known.size - known.saved_at >= _SAVE_AFTER


def new_id() -> str:
    """A random 128-bit id (requests, grants, vaults) as 32 lowercase hex characters."""
    return secrets.token_hex(16)


def signer_name(vault_id: str, user: str) -> str:
    """The signed-note signer name of ``user`` in vault ``vault_id``."""
    return f"childvault/{vault_id}/{user}"


def log_origin(vault_id: str) -> str:
    """The checkpoint origin line of a vault's log."""
    return f"childvault/{vault_id}"


class Session:
    """One unlocked user acting on one open vault."""

    def __init__(
        self,
        home: Home,
        config: Config,
        identity: Identity,
        db: Backend,
        secrets_: Mapping[str, bytes],
        schema: Schema,
        clock: Clock,
        keys: KeysConfig,
        credentials: OpenBaoCredentials | None = None,
    ) -> None:
        self.home = home
        self.config = config
        self.me = identity
        self.db = db
        self.secrets = dict(secrets_)
        self.schema = schema
        self.clock = clock
        self.keys = Keyring(keys, config.vault_id, identity.name, db, self.secrets, credentials)
        user = db.users.get(identity.name)
        if user is None:
            raise AccessDenied(
                _t("user {name!r} is not registered in this vault", name=identity.name)
            )
        if (user.enc_key, user.sign_key) != (
            identity.public.encryption_key,
            identity.public.signing_key,
        ):
            raise AccessDenied(
                _t(
                    "the identity file of {name!r} does not match the registered keys",
                    name=identity.name,
                )
            )
        self.roles = frozenset(user.roles)
        #: The vault's trust anchor from the acting user's own identity file; None
        #: for an identity made before anchors (then nothing can be verified:
        #: docs/trust.md, `childvault upgrade`).
        self.anchor: Anchor | None = anchor_of(identity)
        if self.anchor is not None and self.anchor.vault_id != config.vault_id:
            raise IntegrityError(
                _t(
                    "the identity of {name!r} trusts another vault ({vault_id}), not {vault_id2}",
                    name=identity.name,
                    vault_id=self.anchor.vault_id,
                    vault_id2=config.vault_id,
                )
            )
        self._verified: Verified | None = None
        #: Where this session's record scan (_record_trust.record_heads) resumes:
        #: the trust sync reads the log from there too (docs/server.md).
        self.scan_from: int | None = None
        self.keys.trust = self.trust
        # Entries in the acting user's name carry their signature (docs/trust.md).
        db.audit.signer = identity

    @property
    def user(self) -> str:
        """The acting user."""
        return self.me.name

    @property
    def vault_id(self) -> str:
        """This vault's random id."""
        return self.config.vault_id

    @property
    def witness_path(self) -> Path:
        """Where checkpoints are witnessed."""
        return self.config.witness_path(self.home)

    def now(self, at: datetime | None = None) -> datetime:
        """The time of an operation: ``at`` if the caller gave one, else the clock."""
        return at if at is not None else self.clock()

    def setting(self, key: str) -> str:
        """A vault-wide setting: a signed one (:data:`_settings.SPECS`) as verified
        statements give it, else its default; any other (notice version, institution,
        ...) from its ``meta`` row."""
        if key in _settings.SPECS:
            return self.settings.get(key)
        if key == ACCEPTING:
            return "1" if self.accepting_records() else "0"
        if key == NOTICE_VERSION:
            return self.verified_notices()[1]
        value = self.db.meta.get(key)
        if value is None:
            raise ConfigError(_t("vault setting {key!r} is missing from the database", key=key))
        return value

    def _notice_rows(self) -> tuple[dict[str, dict[str, Any]], str | None]:
        raw = self.db.meta.get(NOTICES) or "{}"
        try:
            doc = json.loads(raw)
            register = {str(k): dict(v) for k, v in doc.items()}
        except (ValueError, TypeError, AttributeError) as exc:
            raise IntegrityError(_t("the notice register in the database is damaged")) from exc
        return register, self.db.meta.get(NOTICE_VERSION)

    def notice_problem(self) -> str | None:
        """What in the notice register rows disagrees with the verified log (None: nothing;
        always None without an anchor). Logs nothing: for ``doctor``."""
        register, current = self._notice_rows()
        if self.anchor is None:
            return None
        state = self._trust_state(save=False)  # raises if the log does not verify
        assert state is not None
        return notice_problem(self.db, state, register, current)

    def verified_notices(self) -> tuple[dict[str, dict[str, Any]], str]:
        """The notice register and the current version, checked against the verified
        log before use (:mod:`_notice_log`): a disagreement is refused and logged."""
        register, current = self._notice_rows()
        problem = self.notice_problem()
        if problem is not None:
            self.distrust("notice", problem, self.clock())
        if current is None:
            raise ConfigError(
                _t("vault setting {key!r} is missing from the database", key=NOTICE_VERSION)
            )
        return register, current

    def accepting_records(self) -> bool:
        """Whether the vault still accepts records (P-23).

        The verified log decides: a logged ``vault.decommission`` ends
        collection for good, whatever the ``meta`` row says; a row that says
        "accepting" after one is refused and logged (``trust.refuse``). A row
        that says "not accepting" is obeyed (failing closed). Only an admin's
        entry ends collection, by their verified registration, never the
        ``users`` row (``role_at``, "held": why there).
        """
        row = self.db.meta.get(ACCEPTING)
        if self.anchor is None:
            return row == "1"  # verifies nothing (made before anchors), as before
        # The log is verified to its head (chain, actors) before it is read; a log
        # that does not verify refuses here (fail closed).
        state = self._trust_state(save=False)
        ended = False
        for raw in self.db.audit.entries_by_action(("vault.decommission",)):
            doc = _audit.decode_entry(raw)
            # The co-signature and the contact list come before; "start" ends collection.
            detail = doc.get("detail")
            phase = detail.get("phase") if isinstance(detail, dict) else None
            seq = doc.get("seq")
            # An admin's only (review RV9-5): any user may log an entry in their own
            # name, and a staff member's would end collection for everyone, for good.
            # role_at's "held": ending collection is the safe side, so an admin's
            # start logged before a vault's upgrade registered them still counts.
            admin = role_at(state, doc.get("actor"), "admin", seq, mode="held")
            ended = ended or (doc.get("outcome") == "ok" and phase in ("start", "done") and admin)
        if ended and row == "1":
            self.distrust(
                "record.create",
                "the log says the vault was decommissioned but the database says it accepts "
                "records",
                self.clock(),
            )
        return row == "1" and not ended

    @property
    def settings(self) -> SignedSettings:
        """The signed settings, for ``legal_today`` and the consent rules (``.get(key)``)."""
        return SignedSettings(self)

    def settings_state(self) -> TrustState | None:
        """The verified state the signed settings come from (None: no anchor).

        The state this session last verified (every operation that seals,
        approves or reads verifies first), else a replay that writes nothing;
        when the log does not verify, the user's own last signed state, so an
        edited log cannot bring back a default.
        """
        if self._verified is not None:
            return self._verified.state
        try:
            return self._trust_state(save=False)
        except IntegrityError:
            return self._last_verified_state()

    def log(self, events: Sequence[Event], now: datetime) -> None:
        """Append ``events`` in a transaction of their own."""
        with self.db.transaction():
            _audit.append(self.db.audit, events, now)

    def expect(self, kind: str, ident: str) -> None:
        """Tell the backend which operation is about to run (``approval`` of a
        request, ``read`` with a grant), so a remote one can fetch its inputs in
        one request (docs/server.md "Operation inputs"). A hint only: nothing
        is trusted for it, and the embedded backends ignore it."""
        hook = getattr(self.db, "expect_operation", None)
        if hook is not None:
            hook(kind, ident)

    def deny(self, event: Event, message: str, now: datetime) -> NoReturn:
        """Log a denied attempt, then raise AccessDenied. Fail closed if logging fails."""
        self.log([event], now)
        raise AccessDenied(message)

    def require(self, roles: Sequence[str], action: str, now: datetime, what: str) -> None:
        """Refuse (logged) unless the actor has one of ``roles``."""
        refusal = role_refusal(self.roles, roles, self.user, what)
        if refusal is not None:
            self.deny(
                Event(self.user, action, "denied", detail={"reason": refusal.reason}),
                refusal.message,
                now,
            )
        self.refuse_unanchored(action, now)
        try:
            # Writes nothing (no saved state): `audit verify` and other reading
            # commands stay read-only; trust() saves when an operation uses it.
            state = self._trust_state(save=False)
        except IntegrityError:
            # A log that does not verify is the operation's own refusal to make
            # (and `audit verify`'s to report). The expiry check then uses the last
            # state this user verified (signed by their own key), so breaking the
            # log does not lift an ended agreement.
            state = self._last_verified_state()
        expired = self._expiry_refusal(state, now)
        if expired is not None:
            self.deny(
                Event(self.user, action, "denied", detail={"reason": "entrusted agreement ended"}),
                expired,
                now,
            )

    def _last_verified_state(self) -> TrustState | None:
        """This session's last verified state, else the user's own signed save."""
        if self._verified is not None:
            return self._verified.state
        if self.anchor is None:
            return None
        saved = load_saved(self.db, self.me, self.anchor)
        return saved.state if saved is not None else None

    def _expiry_refusal(self, state: TrustState | None, now: datetime) -> str | None:
        """Why the acting user is refused when their entrusted organisation's agreement
        (from their verified registration, never the users row) ended before today's
        legal date; None for anyone else."""
        me = state.users.get(self.user) if state is not None else None
        if me is None or me.entrusted is None:
            return None
        if not me.expired_on(today(now, state.setting(ZONE_SETTING) if state else None)):
            return None
        # A Message (a str that keeps its template), so the CLI can translate it.
        return _t(
            "the account {name!r} of {organisation} is refused: agreement {agreement} "
            "ended on {date}; ask an admin",
            name=self.user,
            organisation=me.entrusted["organisation"],
            agreement=me.entrusted["agreement"],
            date=me.entrusted["expires"],
        )

    def trust(self, *, save: bool = True) -> TrustState | None:
        """The trust state over the whole log, verified from the acting user's anchor.

        Resumed from this session's last verified point, else from the user's
        own saved state (signed by their key), else replayed from the anchor.
        None when the acting identity holds no anchor (made before anchors).
        ``save=False``: write nothing (see :meth:`save_trust`).
        """
        self.refuse_unanchored("trust", self.clock())
        state = self._trust_state(save=save)
        # Every operation that relies on the verified state refuses an entrusted
        # account whose agreement has ended, as it would a disabled user.
        expired = self._expiry_refusal(state, self.clock())
        if expired is not None:
            raise AccessDenied(expired)
        return state

    def refuse_unanchored(self, action: str, now: datetime) -> None:
        """Refuse (logged, :class:`IntegrityError`) an identity without an anchor in a
        vault that has one: it could verify nothing, and the rows it would trust
        instead (``users``, ``custodian_holders``) are any user's to edit."""
        if self.anchor is not None or not is_upgraded(self.db):
            return
        self.log(
            [
                Event(
                    self.user,
                    "trust.refuse",
                    "denied",
                    detail={"on": action, "reason": "identity holds no anchor"},
                )
            ],
            now,
        )
        raise IntegrityError(
            _t(
                "your identity file holds no anchor of this upgraded vault, so nothing "
                "can be verified: run `childvault upgrade` first (docs/operators.md)"
            )
        )

    def _trust_state(self, *, save: bool = True) -> TrustState | None:
        """:meth:`trust` without the acting user's expiry check (``save``: may save)."""
        if self.anchor is None:
            return None
        known = self._verified
        prefetch = getattr(self.db, "prefetch_log", None)
        if prefetch is not None and known is None:
            # A fresh session through a server resumes from the user's own signed
            # saved state, as verify_log would (and as verified_point does), so the
            # entries after it come with the trust sync below.
            known = self._verified = load_saved(self.db, self.me, self.anchor)
            if known is None:
                # Nothing saved: the replay starts at the anchor, and its first page
                # and that page's signatures come with the head in one request.
                prefetch(0)
        if prefetch is not None and known is not None and known.head is not None:
            # Through a server (docs/server.md "Trust sync"): the head, the entries
            # since this session's verified point and their signatures in one
            # request, from one entry early (the record scans resume there). The
            # checks below and in the replay are unchanged.
            resume = min(known.size, self.scan_from if self.scan_from is not None else known.size)
            prefetch(max(resume - 1, 0))
        if (
            known is not None
            and known.head is not None
            and not (save and _save_due(known))
            and self.db.audit.head() == (known.size, known.head)
        ):
            # Nothing was appended since this session verified the log: its state
            # stands, and a replay would read nothing (it would only copy the
            # state). Every role-gated operation asks (require), so a process
            # doing many of them verifies once per log head (issue 18).
            return known.state
        self._verified = verify_log(self.db, self.me, self.anchor, known, save=save)
        return self._verified.state

    def known_trust(self) -> TrustState | None:
        """The trust state this session verified last, without reading the log (None:
        not verified yet, or no anchor). For look-ups that the entries appended
        since cannot change (a key of a row checked inside the caller's own
        transaction); anything that decides on the log uses :meth:`trust`."""
        known = self._verified
        return known.state if self.anchor is not None and known is not None else None

    def save_trust(self) -> None:
        """Save this session's verified state for the next command, if it is due.

        The saved state only spares the next command a replay, so a command that
        only reads (``audit verify``) calls this and may ignore a StorageError.
        """
        known = self._verified
        if self.anchor is None or known is None or not _save_due(known):
            return
        save_state(self.db, self.me, self.anchor, known)
        known.saved_at = known.size

    def verify_trust_from_anchor(self) -> None:
        """Replay the whole log from the anchor (`audit verify`): every statement and
        every entry's actor signature, ignoring any saved state. No-op without an anchor."""
        if self.anchor is None:
            return
        self._verified = verify_log(
            self.db,
            self.me,
            self.anchor,
            Verified(TrustState.start(self.anchor), 0, None),
            save=False,
        )

    def verified_point(self) -> tuple[int, bytes] | None:
        """``(N, H)``: this user already verified every actor signature and statement of
        the log's first N entries, the last of which hashed to H (this session's
        verified state, else the user's own saved state, its signature checked
        with their key). Nothing is replayed; None without an anchor or a state.
        """
        if self.anchor is None:
            return None
        if self._verified is None:
            # Kept as this session's state, so the trust() that follows resumes
            # from it without loading and checking it a second time.
            self._verified = load_saved(self.db, self.me, self.anchor)
        known = self._verified
        if known is None or known.head is None or known.size < 1:
            return None
        return known.size, known.head

    def distrust(self, action: str, message: str, now: datetime) -> NoReturn:
        """Log that a row disagreed with the verified statements, then raise IntegrityError."""
        self.log(
            [Event(self.user, "trust.refuse", "denied", detail={"on": action, "reason": message})],
            now,
        )
        raise IntegrityError(
            _t(
                "{message}: refused; the database was altered. Run `childvault audit verify` "
                "and alert the officers",
                message=message,
            )
        )

    def trusted_public(
        self, name: str, action: str, now: datetime, role: str | None = None
    ) -> PublicIdentity:
        """The public keys of ``name`` as verified statements give them (before sealing).

        Refuses (logged, :class:`IntegrityError`) when ``name`` has no verified
        active registration (with ``role``, if given) or the ``users`` row
        disagrees with it. Without an anchor (an identity made before anchors),
        the row is used as before.
        """
        state = self.trust()
        if state is None:
            return self.public(name)
        if not state.is_active(name, role):
            self.distrust(
                action,
                f"user {name!r} has no verified active registration"
                + (f" as {role}" if role else ""),
                now,
            )
        verified = state.user(name)
        row = self.db.users.get(name)
        if row is None or (row.enc_key, row.sign_key) != (verified.enc_key, verified.sign_key):
            self.distrust(
                action, f"the users row of {name!r} differs from their signed registration", now
            )
        return PublicIdentity(name, verified.enc_key, verified.sign_key)

    def public(self, name: str) -> PublicIdentity:
        """The registered public keys of ``name``."""
        row = self.db.users.get(name)
        if row is None:
            raise NotFound(_t("unknown user {name!r}", name=name))
        return PublicIdentity(row.name, row.enc_key, row.sign_key)

    def signers(self) -> dict[str, bytes]:
        """Signed-note names and keys of everyone allowed to sign checkpoints."""
        return {
            signer_name(self.vault_id, u.name): u.sign_key
            for u in self.db.users.all()
            if {"officer", "admin"} & set(u.roles)
        }

    def live_record(self, record_id: str) -> RecordRow:
        """A record that exists; :class:`NotFound` (saying if it was deleted) otherwise."""
        row = self.db.records.get(check_hex_id(record_id, "record"))
        if row is None:
            if self.db.records.tombstone(record_id):
                raise NotFound(_t("record {record_id} was deleted", record_id=record_id))
            raise NotFound(_t("no record {record_id}", record_id=record_id))
        return row

    def record_state(self, record_id: str) -> RecordState:
        """A record's bookkeeping (or None) and whether its wrapped keys remain, for the rules."""
        return RecordState(
            record_id,
            self.db.records.get(record_id),
            self.db.records.keyblob(record_id) is not None,
        )

    def wrapped(self, record_id: str) -> WrappedRecord:
        """A record's wrapped keys as the provider needs them."""
        found = self.db.records.keyblob(record_id)
        if found is None:
            raise NotFound(_t("record {record_id} has no keys (deleted)", record_id=record_id))
        return WrappedRecord(record_id, found[0], found[1])

    def key_slots(self) -> KeySlots:
        """The key-slot file to write: the home's, or in server mode the server's
        through the backend (checked there before it is stored: _remote/_slots.py)."""
        remote = getattr(self.db, "key_slots", None)
        return remote if isinstance(remote, KeySlots) else KeySlots(self.home.keyslots)

    def close(self) -> None:
        """Close the Vault session (if any) and the database."""
        self.keys.close()
        self.db.close()


class SignedSettings:
    """The signed settings of a session, read like the ``meta`` repository (``get``).

    With an anchor: the latest verified ``setting.set`` of each key, else its
    default; a ``meta`` row is never read for them (docs/trust.md). Without an
    anchor (an identity made before anchors, which verifies nothing): the
    ``meta`` row, as before.
    """

    def __init__(self, session: Session) -> None:
        self._s = session

    def get(self, key: str) -> str:
        """The effective value of signed setting ``key``."""
        spec = _settings.spec(key)
        if self._s.anchor is None:
            raw = self._s.db.meta.get(key)
            return raw if raw is not None and _settings.is_canonical(key, raw) else spec.default
        state = self._s.settings_state()
        return state.setting(key) if state is not None else spec.default
