"""``childvault upgrade``: anchoring a vault made before signed statements, and
each user's steps after it (adopting the anchor, registrations, custodian, records).

Kept apart from :mod:`._svc_users` (enrolment), which delegates to it: a
one-time migration with its own sequence of idempotent steps.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from childvault._i18n import _t, join
from childvault.keys import CustodianSecret, IntegrityError, PublicIdentity, UsageError
from childvault.vault import _audit, _statements
from childvault.vault import _record_trust as record_trust
from childvault.vault._audit import Event
from childvault.vault._keyring import CUSTODIAN
from childvault.vault._registrations import (
    PENDING,
    UPGRADED,
    append_with_statements,
    check_legacy_log,
    custodian_statement,
    is_upgraded,
    logged_anchor,
    register_statement,
    user_detail,
    with_statement,
)
from childvault.vault._session import Session
from childvault.vault._statement_trial import applies as _applies
from childvault.vault._statements import Anchor, Envelope, TrustState
from childvault.vault._time import iso


class VaultUpgrade:
    """The acting user's ``childvault upgrade`` steps (each idempotent)."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def upgrade(
        self, identity_path: Path, passphrase: str, confirm: Callable[[str], bool]
    ) -> dict[str, Any]:
        """``childvault upgrade`` for the acting user (docs/operators.md, "Upgrading").

        On a vault made before signed statements an admin (admin role only)
        anchors it: the log and the ``users`` rows are checked, the admin's
        self-signed founding registration is logged and the anchor is written
        into their identity file. After that each user runs it once: they
        confirm the anchor's fingerprint (``confirm``), it goes into their
        identity file, and their registration, signed by their own key, is
        logged pending. An admin running it again countersigns the pending
        registrations (an officer's also needs an officer's countersignature,
        given at ``keys share``); the first officer running it again states
        the custodian key and its holders. Every step is idempotent.
        """
        moment = self.s.now()
        done: dict[str, Any] = {"user": self.s.user, "steps": []}
        if not is_upgraded(self.s.db):
            self.s.require(("admin",), "vault.upgrade", moment, _t("upgrading the vault"))
            self._anchor_vault(identity_path, passphrase, moment)
            done["steps"].append(_t("anchored"))
        if self.s.anchor is None:
            self._adopt_anchor(identity_path, passphrase, confirm, moment)
            done["steps"].append(_t("anchor adopted"))
        state = self.s.trust()
        assert state is not None  # the anchor is set above
        if not state.is_active(self.s.user):
            if self._request_registration(state, moment):
                done["steps"].append(_t("registration requested"))
            state = self.s.trust()
            assert state is not None
        if state.is_active(self.s.user, "admin"):
            approved = self._approve_registrations(state, moment)
            if approved:
                done["steps"].append(
                    _t("registrations countersigned: {names}", names=join(", ", approved))
                )
            state = self.s.trust()
            assert state is not None
        if state.is_active(self.s.user, "officer") and self.s.keys.custodial:
            stated = self._state_custodian(state, moment)
            if stated:
                done["steps"].append(_t("custodian stated: {names}", names=join(", ", stated)))
        if state.is_active(self.s.user, "officer"):
            records = self._state_records(moment)
            if records:
                done["steps"].append(_t("records stated: {n}", n=records))
        if state.is_active(self.s.user):
            from childvault.vault._svc_settings import SettingsService

            # Settings a vault kept in meta before they were signed (docs/trust.md).
            settings = SettingsService(self.s).sign_unstated(moment)
            if settings:
                done["steps"].append(_t("settings signed: {keys}", keys=join(", ", settings)))
        anchor = self.s.anchor
        assert anchor is not None
        done["fingerprint"] = anchor.fingerprint()
        final = self.s.trust()
        done["pending"] = sorted(
            # Disabled users are in the verified state (not pending), just inactive.
            u.name
            for u in self.s.db.users.all()
            if final is None or u.name not in final.users
        )
        return done

    def _anchor_vault(self, identity_path: Path, passphrase: str, moment: datetime) -> None:
        """The admin's first step: check what exists, then log the founding registration."""
        if self.s.roles != frozenset({"admin"}):
            raise UsageError(
                _t(
                    "the vault's anchor is an admin with the admin role only: run `childvault "
                    "upgrade` as such an admin"
                )
            )
        check_legacy_log(self.s.db)
        me = self.s.me
        anchor = Anchor(self.s.vault_id, me.name, me.public.signing_key)
        founding = _statements.sign(
            register_statement(self.s.vault_id, iso(moment), me.name, ["admin"], me.public), [me]
        )
        if not _applies(TrustState.start(anchor), founding, self.s.db.audit.head()[0]):
            raise IntegrityError(
                _t("the founding registration would not verify; nothing was upgraded")
            )
        with self.s.db.transaction():
            self.s.db.meta.set(UPGRADED, "1")
            append_with_statements(
                self.s.db,
                [
                    (
                        Event(
                            me.name,
                            "vault.upgrade",
                            detail=with_statement(
                                {"phase": "anchor", "user": me.name, "schema": "statements/1"},
                                founding,
                            ),
                        ),
                        founding,
                    )
                ],
                moment,
            )
        self._keep_anchor(anchor, identity_path, passphrase)

    def _adopt_anchor(
        self,
        identity_path: Path,
        passphrase: str,
        confirm: Callable[[str], bool],
        moment: datetime,
    ) -> None:
        """Take the logged anchor into one's identity file, once its fingerprint is confirmed."""
        anchor = logged_anchor(self.s.db)
        if anchor is None or anchor.vault_id != self.s.vault_id:
            raise IntegrityError(_t("the log names no anchor of this vault: ask the admin"))
        founder = anchor.admin == self.s.user
        if founder and anchor.sign_key != self.s.me.public.signing_key:
            raise IntegrityError(_t("the logged anchor names your name with another key"))
        if not founder and not confirm(anchor.fingerprint()):
            raise UsageError(_t("the fingerprint was not confirmed: nothing was changed"))
        self._keep_anchor(anchor, identity_path, passphrase)

    def _keep_anchor(self, anchor: Anchor, identity_path: Path, passphrase: str) -> None:
        """Write ``anchor`` inside the acting user's identity file; verify from it from now on."""
        self.s.me.anchor = anchor.to_json()
        self.s.me.save(identity_path, passphrase)
        self.s.anchor = anchor

    def _request_registration(self, state: TrustState, moment: datetime) -> bool:
        """Log the acting user's registration, signed by their own key, as pending."""
        row = self.s.db.users.get(self.s.user)
        assert row is not None  # the session checked it
        if self._pending_registration(row.name) is not None:
            return False  # asked already: an admin countersigns it
        mine = _statements.sign(
            register_statement(self.s.vault_id, iso(moment), row.name, row.roles, self.s.me.public),
            [self.s.me],
        )
        detail = with_statement(
            user_detail(row.name, row.roles, self.s.me.public), mine, pending=True
        )
        with self.s.db.transaction():
            append_with_statements(
                self.s.db, [(Event(row.name, "user.add", detail=detail), mine)], moment
            )
        return True

    def _pending_registration(self, name: str) -> tuple[int, Envelope] | None:
        """The latest pending registration of ``name`` logged by ``name`` or an admin."""
        found: tuple[int, Envelope] | None = None
        for raw in self.s.db.audit.entries_by_action(("user.add",)):
            obj = _audit.decode_entry(raw)
            detail = obj.get("detail", {})
            if obj.get("outcome") != "ok" or detail.get("user") != name or PENDING not in detail:
                continue
            stored = self.s.db.statements.get(int(obj["seq"]))
            if stored is not None and Envelope.from_bytes(stored).digest() == detail[PENDING]:
                found = int(obj["seq"]), Envelope.from_bytes(stored)
        return found

    def _approve_registrations(self, state: TrustState, moment: datetime) -> list[str]:
        """Admin: countersign every pending upgrade registration that matches its row."""
        approved: list[str] = []
        for row in self.s.db.users.all():
            if state.is_active(row.name) or row.name in state.users:
                continue
            found = self._pending_registration(row.name)
            if found is None:
                continue
            seq, pending = found
            statement = pending.statement()
            public = PublicIdentity(row.name, row.enc_key, row.sign_key)
            if statement != {
                **statement,
                "user": row.name,
                "roles": sorted(row.roles),
                "enc_key": row.enc_key.hex(),
                "sign_key": row.sign_key.hex(),
            } or not pending.signed_by(row.sign_key):
                continue  # not this row's own registration: left for `audit verify`
            if any(sig_name == self.s.user for sig_name, _ in pending.signatures):
                continue  # countersigned already: waits for an officer (`keys share`)
            envelope = _statements.countersign(pending, self.s.me)
            if _applies(state, envelope, self.s.db.audit.head()[0]):
                item = (
                    Event(
                        self.s.user,
                        "user.countersign",
                        detail=with_statement({"user": row.name, "pending": seq}, envelope),
                    ),
                    envelope,
                )
                approved.append(row.name)
            elif "officer" in row.roles:
                # Re-logged pending with the admin's signature: the officer who runs
                # `keys share` for them adds the officer countersignature.
                detail = with_statement(
                    user_detail(row.name, row.roles, public), envelope, pending=True
                )
                item = (Event(self.s.user, "user.add", detail=detail), envelope)
            else:
                continue
            with self.s.db.transaction():
                append_with_statements(self.s.db, [item], moment)
            state = self.s.trust() or state
        return approved

    def _state_records(self, moment: datetime) -> int:
        """An officer: sign a ``record.version`` statement of every record the log
        names no statement for (a vault made before record statements).

        The upgrade is the point from which rows are trusted: what the database
        holds when an officer runs it is what gets signed (docs/trust.md), so
        the officer runs it on a vault whose `audit verify` passed. Each record
        is logged as ``record.resign`` (``on: vault.upgrade``), 500 to a batch.
        """
        found = record_trust.record_heads(self.s)
        if found is None:
            return 0
        heads = found[1].heads
        count, after = 0, ""
        while True:
            page = self.s.db.records.page(after=after, limit=500)
            if not page:
                return count
            after = page[-1].id
            items: list[tuple[Event, Envelope | None]] = []
            for row in page:
                if row.id in heads:
                    continue
                blob = self.s.db.records.keyblob(row.id)
                if blob is None:
                    continue
                fields = record_trust.stored_fields(self.s.db, row.id)
                envelope = record_trust.sign_version(self.s, row, fields, blob[1], moment)
                event = Event(
                    self.s.user, "record.resign", records=[row.id], detail={"on": "vault.upgrade"}
                )
                items.append((record_trust.with_record_statement(event, envelope), envelope))
            if items:
                with self.s.db.transaction():
                    record_trust.append_signed(self.s.db, items, moment)
                count += len(items)

    def _state_custodian(self, state: TrustState, moment: datetime) -> list[str]:
        """The first officer: sign the custodian key they hold, and its other holders."""
        stated: list[str] = []
        current = [(g, p) for g, p, st in self.s.db.custodians.all() if st == "current"]
        if not current:
            return stated
        generation, public = current[0]
        mine = self.s.keys.custodian_secrets()
        if f"{CUSTODIAN}{generation}" not in mine:
            return stated
        if state.current_custodian() is None:
            if generation != 1:
                raise UsageError(
                    _t(
                        "the custodian key is at generation {generation}: an upgrade states "
                        "generation 1 only; restore the signed statements from a newer backup or "
                        "re-create the vault",
                        generation=generation,
                    )
                )
            held = CustodianSecret.from_bytes(generation, mine[f"{CUSTODIAN}{generation}"])
            if held.public != public:
                self.s.distrust(
                    "vault.upgrade",
                    "the custodian key in the database is not the one in your key slot",
                    moment,
                )
            envelope = _statements.sign(
                custodian_statement(
                    self.s.vault_id,
                    iso(moment),
                    "custodian.create",
                    generation=1,
                    public_key=public.hex(),
                    holder=self.s.user,
                ),
                [self.s.me],
            )
            if not _applies(state, envelope, self.s.db.audit.head()[0]):
                self.s.distrust("vault.upgrade", "the custodian key cannot be stated", moment)
            detail = with_statement(
                {"generation": 1, "to": self.s.user, "public_key": public.hex()}, envelope
            )
            with self.s.db.transaction():
                append_with_statements(
                    self.s.db,
                    [(Event(self.s.user, "custodian.create", detail=detail), envelope)],
                    moment,
                )
            stated.append(self.s.user)
            state = self.s.trust() or state
        if state.current_custodian() != (generation, public):
            return stated
        for holder in sorted(self.s.db.custodians.holders(generation)):
            if holder in state.active_holders(generation) or not state.is_active(holder, "officer"):
                continue
            envelope = _statements.sign(
                custodian_statement(
                    self.s.vault_id,
                    iso(moment),
                    "custodian.share",
                    generation=generation,
                    to=holder,
                ),
                [self.s.me],
            )
            if not _applies(state, envelope, self.s.db.audit.head()[0]):
                continue
            with self.s.db.transaction():
                append_with_statements(
                    self.s.db,
                    [
                        (
                            Event(
                                self.s.user,
                                "custodian.share",
                                detail=with_statement({"to": holder}, envelope),
                            ),
                            envelope,
                        )
                    ],
                    moment,
                )
            stated.append(holder)
            state = self.s.trust() or state
        return stated
