"""Users: enrolment, custodian key sharing, listing."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime

from childvault.keys import (
    ChildVaultError,
    CustodianSecret,
    Identity,
    KeySlots,
    NotFound,
    PublicIdentity,
    UsageError,
    check_user_name,
)
from childvault.vault import _audit, _note
from childvault.vault._audit import Event
from childvault.vault._backend import UserRow
from childvault.vault._keyring import CUSTODIAN
from childvault.vault._registrations import user_detail
from childvault.vault._session import Session, signer_name
from childvault.vault._time import iso
from childvault.vault._types import ROLES, UserInfo


class UserService:
    """Enrol users and share the custodian key."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def add_user(
        self, name: str, roles: Sequence[str], passphrase: str, *, now: datetime | None = None
    ) -> UserInfo:
        """Admin: enrol a user with ``roles``, writing their identity file.

        The first officer receives the newly created custodian key; later
        officers receive it when an existing officer runs :meth:`share_custodian`.
        """
        moment = self.s.now(now)
        self.s.require(("admin",), "user.add", moment, "adding users")
        check_user_name(name)
        role_set = tuple(sorted(set(roles)))
        if not role_set or any(r not in ROLES for r in role_set):
            raise UsageError(f"roles must be among {', '.join(ROLES)}")
        if self.s.db.users.get(name) is not None or self.s.home.identity(name).exists():
            raise UsageError(f"user {name!r} already exists")
        ident = Identity.generate(name)
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
            events = [
                Event(self.s.user, "user.add", detail=user_detail(name, role_set, ident.public))
            ]
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
                    events.append(
                        Event(
                            self.s.user,
                            "custodian.create",
                            detail={
                                "generation": 1,
                                "to": name,
                                "public_key": custodian.public.hex(),
                            },
                        )
                    )
                _audit.append(self.s.db.audit, events, moment)
        except BaseException:
            with contextlib.suppress(ChildVaultError, OSError):
                slots.remove(name)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        finally:
            del custodian, secrets_
        return self.user_info(name)

    def share_custodian(self, name: str, *, now: datetime | None = None) -> None:
        """Officer: give officer ``name`` the custodian key so they can approve.

        Rewrites ``name``'s key slot with the database and index keys plus every
        custodian generation the acting officer holds.
        """
        moment = self.s.now(now)
        self.s.require(("officer",), "custodian.share", moment, "sharing the custodian key")
        if not self.s.keys.custodial:
            raise UsageError("the Vault provider has no custodian key: officers use Vault policy")
        target = self.s.db.users.get(name)
        if target is None or "officer" not in target.roles:
            raise UsageError(f"{name!r} is not a registered officer")
        self.s.keys.local_officer()  # fails clearly unless the acting officer holds the current key
        pub = PublicIdentity(target.name, target.enc_key, target.sign_key)
        mine = self.s.keys.custodian_secrets()
        KeySlots(self.s.home.keyslots).add(
            pub, self.s.vault_id, {**self.s.keys.base_secrets(), **mine}
        )
        with self.s.db.transaction():
            for key in mine:
                self.s.db.custodians.add_holder(int(key[len(CUSTODIAN) :]), name)
            _audit.append(
                self.s.db.audit,
                [Event(self.s.user, "custodian.share", detail={"to": name})],
                moment,
            )

    def user_info(self, name: str) -> UserInfo:
        row = self.s.db.users.get(name)
        if row is None:
            raise NotFound(f"unknown user {name!r}")
        return self._info(row)

    def _info(self, row: UserRow) -> UserInfo:
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
        return UserInfo(
            row.name,
            row.roles,
            row.created_at,
            _note.vkey(signer_name(self.s.vault_id, row.name), row.sign_key) if signs else None,
            can,
        )

    def users(self) -> list[UserInfo]:
        """Every registered user with roles and (for signers) their verifier key."""
        return [self._info(r) for r in self.s.db.users.all()]
