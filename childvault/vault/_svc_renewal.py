"""Key renewal: ``keys renew`` (a user's new key pairs) and its approval by an admin.

Kept apart from :mod:`._svc_users` (enrolment), which delegates to it: one
protocol of its own, with its pending identity file and sealed slot.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from childvault._i18n import _t
from childvault.keys import (
    ChildVaultError,
    Identity,
    PublicIdentity,
    UsageError,
    check_user_name,
    public_identity_from_file,
)
from childvault.keys._slots import sealed_slot
from childvault.vault import _audit, _statements
from childvault.vault._audit import Event
from childvault.vault._registrations import PENDING, append_with_statements, with_statement
from childvault.vault._session import Session
from childvault.vault._statement_trial import applies as _applies
from childvault.vault._statements import Envelope
from childvault.vault._time import iso


class KeyRenewal:
    """Renew the acting user's keys; approve another user's renewal (admins)."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def request_renewal(
        self,
        passphrase: str,
        *,
        now: datetime | None = None,
        identity_path: Path | None = None,
    ) -> dict[str, Any]:
        """Any user: new key pairs for oneself, pending an admin's approval.

        The new identity (same name and anchor) is written beside the current
        one (``NAME.renewing.id``, under ``passphrase``); a ``user.renew``
        statement signed by the old and the new key is logged as pending,
        with the acting user's key-slot secrets sealed to the new key (only
        the new identity opens them). :meth:`approve_renewal` completes it.

        Over a server the home is a scratch directory, so ``identity_path``
        names where the new identity waits on the workstation (required
        there; locally it always waits in the home). Nothing private leaves
        the workstation: the server gets the signed statement and the slot
        sealed to the new key.
        """
        moment = self.s.now(now)
        remote = _over_a_server(self.s)
        if remote and identity_path is None:
            raise UsageError(
                _t("over a server, name where the new identity waits on this workstation")
            )
        if not remote and identity_path is not None:
            raise UsageError(_t("locally the new identity always waits in the home"))
        state = self.s.trust()
        if state is None:
            raise UsageError(
                _t("this identity file has no trust anchor: run `childvault upgrade` first")
            )
        name = self.s.user
        if not state.is_active(name):
            self.s.distrust(
                "user.renew", f"user {name!r} has no verified active registration", moment
            )
        new = Identity.generate(name)
        new.anchor = self.s.me.anchor
        envelope = _statements.sign(
            {
                "v": 1,
                "kind": "user.renew",
                "vault": self.s.vault_id,
                "at": iso(moment),
                "user": name,
                "enc_key": new.public.encryption_key.hex(),
                "sign_key": new.public.signing_key.hex(),
            },
            [self.s.me, new],
        )
        slot = sealed_slot(new.public, self.s.vault_id, dict(self.s.secrets))
        pending_path = identity_path or _renewing(self.s.home.identities, name)
        new.save(pending_path, passphrase)  # checks the passphrase before anything is logged
        try:
            with self.s.db.transaction():
                seqs = append_with_statements(
                    self.s.db,
                    [
                        (
                            Event(
                                name,
                                "user.renew",
                                detail=with_statement(
                                    {"user": name, "phase": "request", "slot": slot},
                                    envelope,
                                    pending=True,
                                ),
                            ),
                            envelope,
                        )
                    ],
                    moment,
                )
        except BaseException:
            with contextlib.suppress(OSError):
                pending_path.unlink()
            raise
        return {"user": name, "request": seqs[0], "identity": str(pending_path)}

    def approve_renewal(self, name: str, *, now: datetime | None = None) -> dict[str, Any]:
        """Admin: complete ``name``'s pending key renewal (countersigned, logged).

        Checks the pending statement is signed by ``name``'s verified current
        key and by the new key, countersigns it, installs the slot sealed to
        the new key, points the ``users`` row at the new keys and puts the new
        identity file in place. From then on the old key opens no slot, no new
        grant is sealed to it, and its signatures no longer count.

        Over a server the new identity file is on the person's workstation,
        never here: the pending statement (signed by the new key) is the
        proof of the new keys, the server stores the slot sealed to them only
        if it is the one the person's signed request carries, and the person
        swaps their file with ``keys renew --finish`` (:meth:`identity_is_current`).
        """
        moment = self.s.now(now)
        self.s.require(("admin",), "user.renew", moment, _t("approving key renewals"))
        remote = _over_a_server(self.s)
        check_user_name(name)
        state = self.s.trust()
        if state is None:
            raise UsageError(
                _t("this identity file has no trust anchor: run `childvault upgrade` first")
            )
        if not state.is_active(name):
            raise UsageError(
                _t("{name!r} is not an active user with a verified registration", name=name)
            )
        found: tuple[int, Envelope, str] | None = None
        for raw in self.s.db.audit.entries_by_action(("user.renew",)):
            obj = _audit.decode_entry(raw)
            detail = obj.get("detail", {})
            if obj.get("outcome") != "ok" or obj.get("actor") != name or PENDING not in detail:
                continue
            stored = self.s.db.statements.get(int(obj["seq"]))
            if stored is None or Envelope.from_bytes(stored).digest() != detail[PENDING]:
                continue
            found = int(obj["seq"]), Envelope.from_bytes(stored), str(detail.get("slot", ""))
        if found is None:
            raise UsageError(
                _t("{name!r} has no pending key renewal: they run `keys renew` first", name=name)
            )
        seq, pending, slot = found
        statement = pending.statement()
        current = state.user(name)
        if statement.get("user") != name or statement.get("vault") != self.s.vault_id:
            self.s.distrust("user.renew", f"the pending renewal of {name!r} is not theirs", moment)
        done = statement.get("sign_key") == current.sign_key.hex()
        if done or not pending.signed_by(current.sign_key):
            raise UsageError(
                _t(
                    "the pending renewal of {name!r} was not signed by their current key (it is "
                    "stale or done): they run `keys renew` again",
                    name=name,
                )
            )
        envelope = _statements.countersign(pending, self.s.me)
        if not _applies(state, envelope, self.s.db.audit.head()[0]):
            self.s.distrust("user.renew", f"the key renewal of {name!r} would not verify", moment)
        new_public = PublicIdentity(
            name,
            bytes.fromhex(str(statement["enc_key"])),
            bytes.fromhex(str(statement["sign_key"])),
        )
        pending_path = _renewing(self.s.home.identities, name)
        if not remote and (
            not pending_path.exists() or public_identity_from_file(pending_path) != new_public
        ):
            raise UsageError(
                _t(
                    "the new identity file of {name!r} ({pending_path}) is missing or holds other "
                    "keys: they run `keys renew` again",
                    name=name,
                    pending_path=pending_path,
                )
            )
        slots = self.s.key_slots()
        previous = slots.install(name, self.s.vault_id, slot)
        try:
            with self.s.db.transaction():
                self.s.db.users.set_keys(name, new_public.encryption_key, new_public.signing_key)
                append_with_statements(
                    self.s.db,
                    [
                        (
                            Event(
                                self.s.user,
                                "user.renew",
                                detail=with_statement(
                                    {
                                        "user": name,
                                        "enc_key": new_public.encryption_key.hex(),
                                        "sign_key": new_public.signing_key.hex(),
                                        "phase": "approve",
                                        "pending": seq,
                                    },
                                    envelope,
                                ),
                            ),
                            envelope,
                        )
                    ],
                    moment,
                )
        except BaseException:
            with contextlib.suppress(ChildVaultError, OSError):
                slots.install(name, self.s.vault_id, previous)
            raise
        if not remote:
            # The new identity replaces the old file; a copy of the old one opens nothing new.
            os.replace(pending_path, self.s.home.identity(name))
        return {"user": name, "request": seq}

    def identity_is_current(self) -> bool:
        """Whether the verified trust state registers the acting identity's keys as the
        acting user's current ones (false for an identity a renewal replaced, or a
        new one still waiting for approval)."""
        state = self.s.trust()
        if state is None:
            return False
        found = state.users.get(self.s.user)
        public = self.s.me.public
        return (
            found is not None
            and found.sign_key == public.signing_key
            and found.enc_key == public.encryption_key
        )


def _over_a_server(session: Session) -> bool:
    """Whether ``session`` runs over ``childvault serve`` (its home is a scratch copy)."""
    return bool(getattr(session.db, "witnessed_by_server", False))


def _renewing(identities: Path, name: str) -> Path:
    """Where ``keys renew`` keeps the new identity until an admin approves it."""
    return identities / f"{name}.renewing.id"
