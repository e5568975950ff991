"""Users: enrolment, custodian key sharing, listing.

Key renewal (:mod:`._svc_renewal`) and ``childvault upgrade`` (:mod:`._svc_upgrade`)
live in their own modules; :class:`UserService` delegates to them.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from childvault._i18n import _t, join
from childvault.keys import (
    ChildVaultError,
    CustodianSecret,
    Identity,
    IntegrityError,
    KeySlots,
    NotFound,
    PublicIdentity,
    UsageError,
    check_user_name,
    public_identity_from_file,
)
from childvault.vault import _audit, _note, _statements
from childvault.vault._audit import DetailValue, Event
from childvault.vault._backend import UserRow
from childvault.vault._keyring import CUSTODIAN
from childvault.vault._registrations import (
    PENDING,
    append_with_statements,
    custodian_statement,
    invite_ref,
    make_invite,
    read_request,
    register_statement,
    user_detail,
    with_statement,
)
from childvault.vault._session import Session, signer_name
from childvault.vault._statement_trial import applies as _applies
from childvault.vault._statements import Envelope, TrustState
from childvault.vault._svc_renewal import KeyRenewal
from childvault.vault._svc_upgrade import VaultUpgrade
from childvault.vault._time import iso, legal_today, parse_iso
from childvault.vault._types import ROLES, UserInfo


class UserService:
    """Enrol users and share the custodian key."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def add_user(
        self,
        name: str,
        roles: Sequence[str],
        passphrase: str,
        *,
        now: datetime | None = None,
        entrusted: Mapping[str, str] | None = None,
    ) -> UserInfo:
        """Admin: enrol a user with ``roles``, writing their identity file.

        The first officer receives the newly created custodian key; later
        officers receive it when an existing officer runs :meth:`share_custodian`.
        ``entrusted`` (``{organisation, agreement, expires}``) makes the account
        an entrusted organisation's: staff only, its terms in the signed
        registration (P-16).
        """
        moment = self.s.now(now)
        self.s.require(("admin",), "user.add", moment, _t("adding users"))
        if entrusted is not None:
            entrusted = self._entrusted_terms(roles, entrusted, moment)
        if getattr(self.s.db, "witnessed_by_server", False):
            # The identity file would be made on the admin's workstation, under a
            # passphrase typed there: over a server the person enrols themselves.
            raise UsageError(
                _t(
                    "over a server, enrol with `user invite`, then `user enroll` (the person) "
                    "and `user add --request`"
                )
            )
        check_user_name(name)
        role_set = tuple(sorted(set(roles)))
        if not role_set or any(r not in ROLES for r in role_set):
            raise UsageError(_t("roles must be among {roles}", roles=join(", ", ROLES)))
        if self.s.db.users.get(name) is not None or self.s.home.identity(name).exists():
            raise UsageError(_t("user {name!r} already exists", name=name))
        ident = Identity.generate(name)
        # The new user trusts what the acting admin trusts (their anchor).
        ident.anchor = self.s.me.anchor
        state = self.s.trust()
        path = self.s.home.identity(name)
        ident.save(path, passphrase)
        slots = KeySlots(self.s.home.keyslots)
        secrets_ = self.s.keys.base_secrets()
        first_officer = "officer" in role_set and not self.s.db.custodians.all()
        custodian = CustodianSecret.generate(1) if first_officer else None
        if custodian is not None:
            # The first officer: the custodian key is created and given to them only.
            secrets_[f"{CUSTODIAN}1"] = custodian.secret_bytes()
        try:
            slots.add(ident.public, self.s.vault_id, secrets_)
            detail = user_detail(name, role_set, ident.public, entrusted)
            items: list[tuple[Event, Envelope | None]] = []
            if state is None:
                if entrusted is not None:
                    # Without a signed statement the terms would only be a row.
                    raise UsageError(
                        _t(
                            "an entrusted account needs signed statements: run "
                            "`childvault upgrade` first"
                        )
                    )
                items.append((Event(self.s.user, "user.add", detail=detail), None))
            else:
                items.append(self._registration(state, ident, role_set, detail, moment, entrusted))
            with self.s.db.transaction():
                self.s.db.users.add(
                    UserRow(
                        name,
                        role_set,
                        ident.public.encryption_key,
                        ident.public.signing_key,
                        iso(moment),
                        self.s.user,
                    )
                )
                if custodian is not None:
                    self.s.db.custodians.add(1, custodian.public, "current", iso(moment))
                    self.s.db.custodians.add_holder(1, name)
                    created: dict[str, DetailValue] = {
                        "generation": 1,
                        "to": name,
                        "public_key": custodian.public.hex(),
                    }
                    envelope = None
                    if state is not None:
                        # Signed by its holder, the new officer (docs/trust.md).
                        envelope = _statements.sign(
                            custodian_statement(
                                self.s.vault_id,
                                iso(moment),
                                "custodian.create",
                                generation=1,
                                public_key=custodian.public.hex(),
                                holder=name,
                            ),
                            [ident],
                        )
                        created = with_statement(created, envelope)
                    items.append((Event(self.s.user, "custodian.create", detail=created), envelope))
                append_with_statements(self.s.db, items, moment)
        except BaseException:
            with contextlib.suppress(ChildVaultError, OSError):
                slots.remove(name)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        finally:
            del custodian, secrets_
        return self.user_info(name)

    def _registration(
        self,
        state: TrustState,
        ident: Identity,
        roles: tuple[str, ...],
        detail: Mapping[str, DetailValue],
        moment: datetime,
        entrusted: Mapping[str, str] | None = None,
    ) -> tuple[Event, Envelope]:
        """The signed ``user.register`` entry of a new user (checked before it is logged).

        Signed by the new user's key and the acting admin. An officer needs an
        existing officer's countersignature too: the acting admin gives it when
        they are an officer, or, for the vault's first officer, as the founding
        admin; otherwise the registration is logged as pending and the officer
        who shares the custodian key countersigns it (:meth:`share_custodian`).
        """
        envelope = _statements.sign(
            register_statement(
                self.s.vault_id, iso(moment), ident.name, roles, ident.public, entrusted
            ),
            [ident, self.s.me],
        )
        return self._registration_entry(state, envelope, ident.name, roles, detail, moment)

    def _registration_entry(
        self,
        state: TrustState,
        envelope: Envelope,
        name: str,
        roles: tuple[str, ...],
        detail: Mapping[str, DetailValue],
        moment: datetime,
    ) -> tuple[Event, Envelope]:
        """The ``user.add`` entry carrying ``envelope`` (already signed by the new
        key and the acting admin): applied, pending an officer, or refused."""
        if _applies(state, envelope, self.s.db.audit.head()[0]):
            return Event(self.s.user, "user.add", detail=with_statement(detail, envelope)), envelope
        if "officer" in roles and state.is_active(self.s.user, "admin"):
            pending = with_statement(detail, envelope, pending=True)
            return Event(self.s.user, "user.add", detail=pending), envelope
        self.s.distrust("user.add", f"the registration of {name!r} would not verify", moment)

    def _entrusted_terms(
        self, roles: Sequence[str], terms: Mapping[str, str], moment: datetime
    ) -> dict[str, str]:
        """Checked terms of an entrusted organisation's account (staff only, not expired)."""
        if tuple(sorted(set(roles))) != ("staff",):
            raise UsageError(_t("an entrusted organisation's account can only have the staff role"))
        try:
            checked = _statements.entrusted_member(dict(terms))
        except IntegrityError as exc:
            raise UsageError(
                _t(
                    "give the organisation, the agreement reference (each one line of at most "
                    "200 characters) and the expiry date (YYYY-MM-DD)"
                )
            ) from exc
        if date.fromisoformat(checked["expires"]) < legal_today(self.s.settings, moment):
            raise UsageError(
                _t("the agreement's expiry date {date} has passed", date=checked["expires"])
            )
        return checked

    def _countersign_pending(self, state: TrustState, name: str, moment: datetime) -> None:
        """Countersign (as an officer) and log ``name``'s pending officer registration."""
        if state.is_active(name):
            return
        found: tuple[int, Envelope] | None = None
        for raw in self.s.db.audit.entries_by_action(("user.add",)):
            obj = _audit.decode_entry(raw)
            detail = obj.get("detail", {})
            if obj.get("outcome") != "ok" or detail.get("user") != name or PENDING not in detail:
                continue
            stored = self.s.db.statements.get(int(obj["seq"]))
            if stored is not None and _statements.Envelope.from_bytes(stored).digest() == str(
                detail[PENDING]
            ):
                found = int(obj["seq"]), _statements.Envelope.from_bytes(stored)
        if found is None:
            self.s.distrust(
                "custodian.share",
                f"user {name!r} has no signed registration to countersign",
                moment,
            )
        registered = found[1].statement()
        row = self.s.db.users.get(name)
        if row is None or (row.enc_key.hex(), row.sign_key.hex()) != (
            registered.get("enc_key"),
            registered.get("sign_key"),
        ):
            self.s.distrust(
                "custodian.share",
                f"the users row of {name!r} differs from their signed registration",
                moment,
            )
        envelope = _statements.countersign(found[1], self.s.me)
        if not _applies(state, envelope, self.s.db.audit.head()[0]):
            self.s.distrust(
                "custodian.share", f"the registration of {name!r} does not verify", moment
            )
        with self.s.db.transaction():
            append_with_statements(
                self.s.db,
                [
                    (
                        Event(
                            self.s.user,
                            "user.countersign",
                            detail=with_statement({"user": name, "pending": found[0]}, envelope),
                        ),
                        envelope,
                    )
                ],
                moment,
            )

    def share_custodian(self, name: str, *, now: datetime | None = None) -> None:
        """Officer: give officer ``name`` the custodian key so they can approve.

        Rewrites ``name``'s key slot with the database and index keys plus every
        custodian generation the acting officer holds.
        """
        moment = self.s.now(now)
        self.s.require(("officer",), "custodian.share", moment, _t("sharing the custodian key"))
        if not self.s.keys.custodial:
            raise UsageError(
                _t("the Vault provider has no custodian key: officers use Vault policy")
            )
        target = self.s.db.users.get(name)
        if target is None or "officer" not in target.roles:
            raise UsageError(_t("{name!r} is not a registered officer", name=name))
        self.s.keys.local_officer()  # fails clearly unless the acting officer holds the current key
        state = self.s.trust()
        envelope: Envelope | None = None
        if state is None:
            pub = PublicIdentity(target.name, target.enc_key, target.sign_key)
        else:
            self._countersign_pending(state, name, moment)
            # The key sealed to is the verified one, never the row's (issue 12, attack 2).
            pub = self.s.trusted_public(name, "custodian.share", moment, role="officer")
            state = self.s.trust()
            current = state.current_custodian() if state is not None else None
            if state is None or current is None:
                self.s.distrust("custodian.share", "no verified custodian key exists", moment)
            envelope = _statements.sign(
                custodian_statement(
                    self.s.vault_id,
                    iso(moment),
                    "custodian.share",
                    generation=current[0],
                    to=name,
                ),
                [self.s.me],
            )
            if name in state.active_holders(current[0]):
                envelope = None  # already a verified holder: only the slot is rewritten
            elif not _applies(state, envelope, self.s.db.audit.head()[0]):
                self.s.distrust(
                    "custodian.share",
                    f"{self.s.user!r} is not a verified holder of the custodian key",
                    moment,
                )
        mine = self.s.keys.custodian_secrets()
        self.s.key_slots().add(pub, self.s.vault_id, {**self.s.keys.base_secrets(), **mine})
        detail: dict[str, DetailValue] = {"to": name}
        if envelope is not None:
            detail = with_statement(detail, envelope)
        with self.s.db.transaction():
            for key in mine:
                self.s.db.custodians.add_holder(int(key[len(CUSTODIAN) :]), name)
            append_with_statements(
                self.s.db,
                [(Event(self.s.user, "custodian.share", detail=detail), envelope)],
                moment,
            )

    def disable_user(
        self, name: str, *, reason: str | None = None, now: datetime | None = None
    ) -> dict[str, object]:
        """Admin: disable ``name`` with a signed ``user.disable`` statement.

        ``reason`` (optional, at most 500 characters) is kept in the log entry,
        not in the statement: the statement's members are fixed (docs/trust.md).

        Their key slot is removed and their grants are revoked in the same
        operation. If they held the custodian key, writers refuse to seal to
        it until an officer runs ``keys rotate`` (the trust state, not a row,
        says so: :meth:`Keyring.writer`).
        """
        moment = self.s.now(now)
        self.s.require(("admin",), "user.disable", moment, _t("disabling users"))
        check_user_name(name)
        if reason is not None and (not reason.strip() or len(reason) > 500):
            raise UsageError(_t("the reason must be non-empty text of at most 500 characters"))
        state = self.s.trust()
        if state is None:
            raise UsageError(
                _t(
                    "this identity file has no trust anchor (made before signed statements): "
                    "disabling needs one"
                )
            )
        if name == self.s.user:
            raise UsageError(_t("an admin cannot disable themselves: ask another admin"))
        if not state.is_active(name):
            raise UsageError(
                _t("{name!r} is not an active user with a verified registration", name=name)
            )
        envelope = _statements.sign(
            {
                "v": 1,
                "kind": "user.disable",
                "vault": self.s.vault_id,
                "at": iso(moment),
                "user": name,
            },
            [self.s.me],
        )
        if not _applies(state, envelope, self.s.db.audit.head()[0]):
            self.s.distrust("user.disable", f"disabling {name!r} would not verify", moment)
        current = state.current_custodian()
        held = current is not None and name in state.active_holders(current[0])
        self.s.key_slots().remove(name)
        with self.s.db.transaction():
            revoked = self.s.db.access.live_grants_of(name)
            for grant_id in revoked:
                self.s.db.access.revoke_grant(grant_id, at=iso(moment), by=self.s.user)
            detail: dict[str, DetailValue] = {
                "user": name,
                "revoked": revoked[:100],
                "held_custodian": held,
            }
            if reason is not None:
                detail["reason"] = reason
            append_with_statements(
                self.s.db,
                [
                    (
                        Event(self.s.user, "user.disable", detail=with_statement(detail, envelope)),
                        envelope,
                    )
                ],
                moment,
            )
        return {"user": name, "revoked_grants": revoked, "rotation_required": held}

    # ------------------------------------------------------------- enrolment

    def invite_user(
        self,
        name: str,
        roles: Sequence[str],
        *,
        valid_for: timedelta = timedelta(days=7),
        now: datetime | None = None,
        entrusted: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Admin: a one-time invite for ``name`` (the vault's anchor and a nonce, signed).

        The new person runs ``user enroll`` with it in their own process; the
        invite is logged (by the SHA-256 of its nonce) so ``user add --request``
        accepts it once, before it expires. ``entrusted``: the terms of an
        entrusted organisation's account, which the registration must carry.
        """
        moment = self.s.now(now)
        self.s.require(("admin",), "user.invite", moment, _t("inviting users"))
        check_user_name(name)
        role_set = _check_roles(roles)
        if entrusted is not None:
            entrusted = self._entrusted_terms(role_set, entrusted, moment)
        if not timedelta(minutes=1) <= valid_for <= timedelta(days=30):
            raise UsageError(_t("an invite is valid for between 1 minute and 30 days"))
        anchor = self.s.anchor
        if anchor is None or self.s.trust() is None:
            raise UsageError(
                _t("this identity file has no trust anchor: run `childvault upgrade` first")
            )
        if self.s.db.users.get(name) is not None:
            raise UsageError(_t("user {name!r} already exists", name=name))
        nonce = secrets.token_hex(32)
        expires = iso(moment + valid_for)
        data = make_invite(self.s.me, anchor, name, role_set, nonce, expires, entrusted)
        self.s.log(
            [
                Event(
                    self.s.user,
                    "user.invite",
                    detail={
                        "user": name,
                        "roles": list(role_set),
                        "invite": invite_ref(nonce),
                        "expires": expires,
                    },
                )
            ],
            moment,
        )
        return {
            "user": name,
            "roles": list(role_set),
            "expires": expires,
            "fingerprint": anchor.fingerprint(),
            "invite": data,
        }

    def add_user_from_request(self, data: bytes, *, now: datetime | None = None) -> UserInfo:
        """Admin: register the person whose own process made enrolment request ``data``.

        The invite must be this vault's, signed by an admin who is active now,
        logged, unexpired and not used before; the registration must be signed
        by the key it registers (``read_request``). The admin countersigns it;
        an officer still needs an officer's countersignature (``keys share``),
        as for ``user add``. The admin's process never sees the new passphrase.
        """
        moment = self.s.now(now)
        self.s.require(("admin",), "user.add", moment, _t("adding users"))
        state = self.s.trust()
        if state is None or self.s.anchor is None:
            raise UsageError(
                _t("this identity file has no trust anchor: run `childvault upgrade` first")
            )
        try:
            request = read_request(data)
        except IntegrityError as exc:
            self._refuse_request(str(exc), moment)
        invite = request.invite
        if invite.anchor != self.s.anchor:
            self._refuse_request("the invite belongs to another vault", moment)
        inviter = str(invite.payload["by"])
        if not state.is_active(inviter, "admin") or not invite.signed_by(
            state.user(inviter).sign_key
        ):
            self._refuse_request("the invite is not signed by an active admin", moment)
        if moment > parse_iso(str(invite.payload["expires"])):
            self._refuse_request("the invite has expired: ask for a new one", moment)
        ref = invite_ref(str(invite.payload["nonce"]))
        issued = used = False
        # The log's entries are verified (chain and actor signatures) by trust() above.
        for raw in self.s.db.audit.entries_by_action(("user.invite", "user.add")):
            obj = _audit.decode_entry(raw)
            detail = obj.get("detail", {})
            if obj.get("outcome") != "ok" or detail.get("invite") != ref:
                continue
            if obj["action"] == "user.invite" and obj.get("actor") == inviter:
                issued = True
            elif obj["action"] == "user.add":
                used = True
        if not issued:
            self._refuse_request("the invite was not issued in this vault's log", moment)
        if used:
            self._refuse_request("the invite was used already: each invite enrols once", moment)
        name, roles = invite.user, invite.roles
        if self.s.db.users.get(name) is not None:
            raise UsageError(_t("user {name!r} already exists", name=name))
        path = self.s.home.identity(name)
        if path.exists() and public_identity_from_file(path) != request.public:
            self._refuse_request(
                f"the identity file of {name!r} in this home holds other keys", moment
            )
        if self.s.keys.custodial and "officer" in roles and not self.s.db.custodians.all():
            raise UsageError(
                _t(
                    "the vault's first officer creates the custodian key as they are added: enrol "
                    "them with `childvault user add NAME --role officer` at the admin's desk, "
                    "where they type their own passphrase"
                )
            )
        if invite.entrusted is not None:
            # The terms the admin signed in the invite; refused once the agreement ended.
            self._entrusted_terms(roles, invite.entrusted, moment)
        envelope = _statements.countersign(request.registration, self.s.me)
        detail = {**user_detail(name, roles, request.public, invite.entrusted), "invite": ref}
        item = self._registration_entry(state, envelope, name, roles, detail, moment)
        slots = self.s.key_slots()
        slots.add(request.public, self.s.vault_id, self.s.keys.base_secrets())
        try:
            with self.s.db.transaction():
                self.s.db.users.add(
                    UserRow(
                        name,
                        roles,
                        request.public.encryption_key,
                        request.public.signing_key,
                        iso(moment),
                        self.s.user,
                    )
                )
                append_with_statements(self.s.db, [item], moment)
        except BaseException:
            with contextlib.suppress(ChildVaultError, OSError):
                slots.remove(name)
            raise
        return self.user_info(name)

    def _refuse_request(self, reason: str, moment: datetime) -> NoReturn:
        """Log a denied ``user.add`` naming why an enrolment request was refused; raise."""
        reason = reason.removeprefix("enrolment refused: ")
        self.s.log(
            [Event(self.s.user, "user.add", "denied", detail={"reason": reason[:300]})], moment
        )
        raise IntegrityError(_t("enrolment request refused: {reason}", reason=reason))

    # ------------------------------------------------------------ key renewal

    def request_renewal(
        self,
        passphrase: str,
        *,
        now: datetime | None = None,
        identity_path: Path | None = None,
    ) -> dict[str, Any]:
        """Any user: new key pairs for oneself, pending an admin's approval
        (:meth:`KeyRenewal.request_renewal`)."""
        return KeyRenewal(self.s).request_renewal(passphrase, now=now, identity_path=identity_path)

    def approve_renewal(self, name: str, *, now: datetime | None = None) -> dict[str, Any]:
        """Admin: complete ``name``'s pending key renewal (:meth:`KeyRenewal.approve_renewal`)."""
        return KeyRenewal(self.s).approve_renewal(name, now=now)

    def identity_is_current(self) -> bool:
        """Whether the verified trust state registers the acting identity's keys as the
        acting user's current ones (:meth:`KeyRenewal.identity_is_current`)."""
        return KeyRenewal(self.s).identity_is_current()

    # --------------------------------------------------------------- upgrade

    def upgrade(
        self, identity_path: Path, passphrase: str, confirm: Callable[[str], bool]
    ) -> dict[str, Any]:
        """``childvault upgrade`` for the acting user (:meth:`VaultUpgrade.upgrade`)."""
        return VaultUpgrade(self.s).upgrade(identity_path, passphrase, confirm)

    def user_info(self, name: str) -> UserInfo:
        row = self.s.db.users.get(name)
        if row is None:
            raise NotFound(_t("unknown user {name!r}", name=name))
        return self._info(row, self._state())

    def _state(self) -> TrustState | None:
        """The verified state for listing; None when the log does not verify (listing
        still works then, without entrusted terms; `audit verify` says what is wrong)."""
        try:
            return self.s.trust()
        except IntegrityError:
            return None

    def _info(self, row: UserRow, state: TrustState | None = None) -> UserInfo:
        current = [g for g, _, s in self.s.db.custodians.all() if s == "current"]
        if self.s.keys.custodial:
            can = (
                "officer" in row.roles
                and bool(current)
                and row.name in self.s.db.custodians.holders(current[0])
            )
        else:
            can = "officer" in row.roles
        signs = {"officer", "admin"} & set(row.roles)
        # An entrusted account's terms come from its verified registration, never the row.
        verified = state.users.get(row.name) if state is not None else None
        entrusted = verified.entrusted if verified is not None else None
        day = legal_today(self.s.settings, self.s.now())
        return UserInfo(
            row.name,
            row.roles,
            parse_iso(row.created_at),
            _note.vkey(signer_name(self.s.vault_id, row.name), row.sign_key) if signs else None,
            can,
            entrusted,
            verified is not None and verified.expired_on(day),
        )

    def users(self) -> list[UserInfo]:
        """Every registered user with roles and (for signers) their verifier key, and
        the signed terms of entrusted organisations' accounts."""
        state = self._state()
        return [self._info(r, state) for r in self.s.db.users.all()]


def _check_roles(roles: Sequence[str]) -> tuple[str, ...]:
    role_set = tuple(sorted(set(roles)))
    if not role_set or any(r not in ROLES for r in role_set):
        raise UsageError(_t("roles must be among {roles}", roles=join(", ", ROLES)))
    return role_set
