"""Typed results of the user and key operations: disabling, inviting, upgrading, key renewal.

Separate from :mod:`childvault.vault._results` (which re-exports them) so each
group of result types stays a readable size; the conventions are the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from childvault.vault._time import iso, parse_iso

__all__ = [
    "DisabledUser",
    "InviteSummary",
    "KeyRenewal",
    "KeyRenewalRequest",
    "UpgradeReport",
    "UserInvite",
]


@dataclass(frozen=True)
class DisabledUser:
    """Outcome of :meth:`Vault.disable_user`."""

    user: str
    #: The grants of that user revoked in the same operation.
    revoked_grants: tuple[str, ...]
    #: They held the custodian key: an officer must run ``keys rotate`` before
    #: new records can be written.
    rotation_required: bool

    def to_json(self) -> dict[str, Any]:
        """JSON form (``user disable --json``)."""
        return {
            "ok": True,
            "user": self.user,
            "revoked_grants": list(self.revoked_grants),
            "rotation_required": self.rotation_required,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DisabledUser:
        """From :meth:`to_json` output (or the service's mapping)."""
        return cls(
            user=str(doc["user"]),
            revoked_grants=tuple(str(g) for g in doc["revoked_grants"]),
            rotation_required=bool(doc["rotation_required"]),
        )


@dataclass(frozen=True)
class UserInvite:
    """A one-time invite made by :meth:`Vault.invite_user`."""

    user: str
    roles: tuple[str, ...]
    #: Until when :meth:`Vault.add_user_from_request` accepts it (UTC).
    expires: datetime
    #: The vault anchor's fingerprint, to tell the person in person or by phone.
    fingerprint: str
    #: The invite file's bytes, to hand to the person.
    invite: bytes

    def to_json(self, written_to: Path) -> dict[str, Any]:
        """JSON form (``user invite --json``): the invite's path, not its bytes."""
        return {
            "ok": True,
            "user": self.user,
            "roles": list(self.roles),
            "expires": iso(self.expires),
            "fingerprint": self.fingerprint,
            "invite": str(written_to),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> UserInvite:
        """From the service's mapping (``invite`` holds the bytes)."""
        return cls(
            user=str(doc["user"]),
            roles=tuple(str(r) for r in doc["roles"]),
            expires=parse_iso(str(doc["expires"])),
            fingerprint=str(doc["fingerprint"]),
            invite=bytes(doc["invite"]),
        )


@dataclass(frozen=True)
class InviteSummary:
    """What :meth:`Vault.read_invite` shows before enrolling (only its form is checked)."""

    user: str
    roles: tuple[str, ...]
    vault_id: str
    invited_by: str
    expires: datetime
    #: The vault anchor's fingerprint, to confirm with the admin.
    fingerprint: str

    def to_json(self) -> dict[str, Any]:
        """JSON form (the invite's public members)."""
        return {
            "user": self.user,
            "roles": list(self.roles),
            "vault_id": self.vault_id,
            "invited_by": self.invited_by,
            "expires": iso(self.expires),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> InviteSummary:
        """From :meth:`to_json` output."""
        return cls(
            user=str(doc["user"]),
            roles=tuple(str(r) for r in doc["roles"]),
            vault_id=str(doc["vault_id"]),
            invited_by=str(doc["invited_by"]),
            expires=parse_iso(str(doc["expires"])),
            fingerprint=str(doc["fingerprint"]),
        )


@dataclass(frozen=True)
class UpgradeReport:
    """Outcome of :meth:`Vault.upgrade` for the user who ran it."""

    user: str
    #: What was done, in order (empty: nothing to do).
    steps: tuple[str, ...]
    #: The vault anchor's fingerprint.
    fingerprint: str
    #: Users whose registration is not verified yet (they run ``upgrade``).
    pending: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form (``upgrade --json``)."""
        return {
            "ok": True,
            "user": self.user,
            "steps": list(self.steps),
            "fingerprint": self.fingerprint,
            "pending": list(self.pending),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> UpgradeReport:
        """From :meth:`to_json` output."""
        return cls(
            user=str(doc["user"]),
            # A step made in this process stays a Message (shown in the reader's language).
            steps=tuple(s if isinstance(s, str) else str(s) for s in doc["steps"]),
            fingerprint=str(doc["fingerprint"]),
            pending=tuple(str(p) for p in doc["pending"]),
        )


@dataclass(frozen=True)
class KeyRenewalRequest:
    """Outcome of :meth:`Vault.request_key_renewal`: new keys waiting for an admin."""

    user: str
    #: The log sequence number of the pending renewal.
    request: int
    #: The new identity file (used once an admin approves).
    identity: Path

    def to_json(self) -> dict[str, Any]:
        """JSON form (``keys renew --json``)."""
        return {
            "ok": True,
            "user": self.user,
            "request": self.request,
            "identity": str(self.identity),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> KeyRenewalRequest:
        """From :meth:`to_json` output."""
        return cls(
            user=str(doc["user"]),
            request=int(doc["request"]),
            identity=Path(doc["identity"]),
        )


@dataclass(frozen=True)
class KeyRenewal:
    """Outcome of :meth:`Vault.approve_key_renewal`."""

    user: str
    #: The log sequence number of the renewal request that was approved.
    request: int

    def to_json(self) -> dict[str, Any]:
        """JSON form (``keys renew --approve --json``)."""
        return {"ok": True, "user": self.user, "request": self.request}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> KeyRenewal:
        """From :meth:`to_json` output."""
        return cls(user=str(doc["user"]), request=int(doc["request"]))
