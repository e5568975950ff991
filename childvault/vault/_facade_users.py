"""Users of the vault: enrolment (direct and by invite), entrusted accounts, disabling
and key renewal (the :class:`~._svc_users.UserService` and enrolment helpers).

One facet of :class:`~._facade.Vault`, kept apart so each area of the API reads on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from childvault.vault import _check as check
from childvault.vault._facade_base import VaultBase
from childvault.vault._registrations import enrol_with_invite, invite_summary, read_invite
from childvault.vault._time import Clock, iso, system_clock
from childvault.vault._types import UserInfo

if TYPE_CHECKING:
    # The result types are imported where a method builds one (issue 18: lazy loading).
    from childvault.vault._results import (
        DisabledUser,
        InviteSummary,
        KeyRenewal,
        KeyRenewalRequest,
        UserInvite,
    )


class UsersFacet(VaultBase):
    """The users and enrolment methods of :class:`Vault` (over :class:`UserService`)."""

    def add_user(
        self, name: str, roles: Sequence[str], passphrase: str, *, now: datetime | None = None
    ) -> UserInfo:
        """Admin: enrol a user with ``roles``, writing their identity file.

        The first officer receives the newly created custodian key; later
        officers receive it when an existing officer runs :meth:`share_custodian`.
        """
        w = self._live("Vault.add_user")
        check.str_arg(w, "name", name)
        roles = check.str_seq(w, "roles", roles)
        check.str_arg(w, "passphrase", passphrase, data=True)
        check.datetime_arg(w, "now", now)
        return self._users.add_user(name, roles, passphrase, now=now)

    def share_custodian(self, name: str, *, now: datetime | None = None) -> None:
        """Officer: give officer ``name`` the custodian key so they can approve.

        Rewrites ``name``'s key slot with the database and index keys plus every
        custodian generation the acting officer holds.
        """
        w = self._live("Vault.share_custodian")
        check.str_arg(w, "name", name)
        check.datetime_arg(w, "now", now)
        self._users.share_custodian(name, now=now)

    def disable_user(
        self, name: str, *, reason: str | None = None, now: datetime | None = None
    ) -> DisabledUser:
        """Admin: disable ``name`` (signed); removes their key slot and revokes their grants."""
        w = self._live("Vault.disable_user")
        check.str_arg(w, "name", name)
        check.str_arg(w, "reason", reason, optional=True)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import DisabledUser

        return DisabledUser.from_json(self._users.disable_user(name, reason=reason, now=now))

    def users(self) -> list[UserInfo]:
        """Every registered user with roles and (for signers) their verifier key."""
        self._live("Vault.users")
        return self._users.users()

    def invite_user(
        self,
        name: str,
        roles: Sequence[str],
        *,
        valid_for: timedelta = timedelta(days=7),
        now: datetime | None = None,
    ) -> UserInvite:
        """Admin: a one-time invite for ``name`` (``invite``: the file's bytes), logged.

        The person runs :meth:`enroll` with it in their own process, then the
        admin registers them with :meth:`add_user_from_request`.
        """
        w = self._live("Vault.invite_user")
        check.str_arg(w, "name", name)
        roles = check.str_seq(w, "roles", roles)
        check.timedelta_arg(w, "valid_for", valid_for, optional=False)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import UserInvite

        return UserInvite.from_json(
            self._users.invite_user(name, roles, valid_for=valid_for, now=now)
        )

    def add_user_from_request(self, request: bytes, *, now: datetime | None = None) -> UserInfo:
        """Admin: register the person whose enrolment request this is (signed by their
        new key, bound to a single-use invite of this vault); the admin countersigns."""
        w = self._live("Vault.add_user_from_request")
        check.instance(w, "request", request, bytes)
        check.datetime_arg(w, "now", now)
        return self._users.add_user_from_request(request, now=now)

    @staticmethod
    def read_invite(invite: bytes) -> InviteSummary:
        """The invite's user, roles, vault, expiry and anchor fingerprint (nothing verified
        but its form: the person confirms the fingerprint with the admin)."""
        check.instance("Vault.read_invite", "invite", invite, bytes)
        from childvault.vault._results import InviteSummary

        return InviteSummary.from_json(invite_summary(read_invite(invite)))

    @staticmethod
    def enroll(
        invite: bytes, passphrase: str, identity_path: Path | str, *, clock: Clock = system_clock
    ) -> bytes:
        """The new person's side of enrolment: new keys, their identity file at
        ``identity_path`` under their own ``passphrase``; returns the request bytes."""
        w = "Vault.enroll"
        check.instance(w, "invite", invite, bytes)
        check.str_arg(w, "passphrase", passphrase, data=True)
        path = check.path_arg(w, "identity_path", identity_path)
        check.callable_arg(w, "clock", clock)
        return enrol_with_invite(invite, passphrase, path, iso(clock()))

    def request_key_renewal(
        self,
        passphrase: str,
        *,
        now: datetime | None = None,
        identity_path: Path | str | None = None,
    ) -> KeyRenewalRequest:
        """Any user: new key pairs for oneself (the new identity file under
        ``passphrase``), pending an admin's :meth:`approve_key_renewal`.

        Over a server (:meth:`connect`) ``identity_path`` names where the new
        identity waits on the workstation (required there, refused locally,
        where it waits in the home as ``identities/NAME.renewing.id``)."""
        w = self._live("Vault.request_key_renewal")
        check.str_arg(w, "passphrase", passphrase, data=True)
        check.datetime_arg(w, "now", now)
        path = check.opt_path(w, "identity_path", identity_path)
        from childvault.vault._results import KeyRenewalRequest

        return KeyRenewalRequest.from_json(
            self._users.request_renewal(passphrase, now=now, identity_path=path)
        )

    def approve_key_renewal(self, name: str, *, now: datetime | None = None) -> KeyRenewal:
        """Admin: complete ``name``'s pending key renewal; their old key opens nothing new."""
        w = self._live("Vault.approve_key_renewal")
        check.str_arg(w, "name", name)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import KeyRenewal

        return KeyRenewal.from_json(self._users.approve_renewal(name, now=now))

    def identity_is_current(self) -> bool:
        """Whether the verified trust state registers this vault's acting identity as
        the acting user's current keys: true for a renewed identity once an admin
        approved it (``keys renew --finish`` checks it before swapping files),
        false for an identity a renewal replaced."""
        self._live("Vault.identity_is_current")
        return self._users.identity_is_current()

    def add_entrusted_user(
        self,
        name: str,
        passphrase: str,
        *,
        organisation: str,
        agreement: str,
        expires: date,
        now: datetime | None = None,
    ) -> UserInfo:
        """Admin: enrol a staff account of an entrusted organisation (受委托方, P-16).

        The organisation, the agreement reference and its expiry date are part
        of the signed registration; from the day after ``expires`` (the legal
        date in the vault's time zone) every operation of the account is refused.
        """
        w = self._live("Vault.add_entrusted_user")
        check.str_arg(w, "name", name)
        check.str_arg(w, "passphrase", passphrase, data=True)
        check.str_arg(w, "organisation", organisation)
        check.str_arg(w, "agreement", agreement)
        check.date_arg(w, "expires", expires)
        check.datetime_arg(w, "now", now)
        terms = {"organisation": organisation, "agreement": agreement}
        return self._users.add_user(
            name,
            ("staff",),
            passphrase,
            now=now,
            entrusted={**terms, "expires": expires.isoformat()},
        )

    def invite_entrusted_user(
        self,
        name: str,
        *,
        organisation: str,
        agreement: str,
        expires: date,
        valid_for: timedelta = timedelta(days=7),
        now: datetime | None = None,
    ) -> UserInvite:
        """Admin: a one-time invite for a staff account of an entrusted organisation.

        The invite carries the organisation, agreement reference and expiry
        date; the person's signed registration must carry them unchanged
        (:meth:`add_user_from_request` refuses anything else).
        """
        w = self._live("Vault.invite_entrusted_user")
        check.str_arg(w, "name", name)
        check.str_arg(w, "organisation", organisation)
        check.str_arg(w, "agreement", agreement)
        check.date_arg(w, "expires", expires)
        check.timedelta_arg(w, "valid_for", valid_for, optional=False)
        check.datetime_arg(w, "now", now)
        terms = {"organisation": organisation, "agreement": agreement}
        from childvault.vault._results import UserInvite

        return UserInvite.from_json(
            self._users.invite_user(
                name,
                ("staff",),
                valid_for=valid_for,
                now=now,
                entrusted={**terms, "expires": expires.isoformat()},
            )
        )
