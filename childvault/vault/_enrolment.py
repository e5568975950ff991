"""Enrolment: invites, enrolment requests and the ``user.register`` statement.

Separate from the log's replay: these parse files handed between people
(`user invite` -> `user enroll` -> `user add --request`), hostile input that
never touches the log until an admin's ``user add`` checks and logs it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from childvault._i18n import _t
from childvault.keys import Identity, IntegrityError, PublicIdentity, UsageError, check_user_name
from childvault.keys._encoding import b64, unb64
from childvault.vault import _audit, _statements
from childvault.vault._statement_envelope import _verify as _verify_sig
from childvault.vault._statements import Anchor, Envelope
from childvault.vault._time import parse_iso


def register_statement(
    vault_id: str,
    at: str,
    name: str,
    roles: Sequence[str],
    public: PublicIdentity,
    entrusted: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``user.register`` statement of ``name`` (``entrusted``: the organisation,
    agreement and expiry of an entrusted organisation's account, signed with it)."""
    statement: dict[str, Any] = {
        "v": 1,
        "kind": "user.register",
        "vault": vault_id,
        "at": at,
        "user": name,
        "roles": sorted(set(roles)),
        "enc_key": public.encryption_key.hex(),
        "sign_key": public.signing_key.hex(),
    }
    if entrusted is not None:
        # Absent, not null, for everyone else: old statements keep their bytes.
        statement["entrusted"] = dict(entrusted)
    return statement


# ------------------------------------------------------------------ enrolment
#
# `user invite` (admin) -> `user enroll` (the new person's own process) ->
# `user add --request` (admin). The invite and the request are files handed
# between people, so their parsers take hostile input: strict, bounded, and
# raising only IntegrityError naming the defect.

INVITE_FORMAT = "childvault-invite/1"
REQUEST_FORMAT = "childvault-enrolment-request/1"
#: Largest invite or request file read (either is about 2 KiB).
MAX_ENROLMENT_FILE = 64 * 1024
_INVITE_DOMAIN = b"childvault/invite/1\x00"
_BIND_DOMAIN = b"childvault/enrolment/1\x00"
_NONCE = re.compile(r"[0-9a-f]{64}")
_ENROL_ROLES = ("admin", "officer", "staff")


def _refused(what: str) -> IntegrityError:
    return IntegrityError(_t("enrolment refused: {problem}", problem=what))


def _parse_json(data: bytes, what: str) -> dict[str, Any]:
    if not isinstance(data, bytes) or len(data) > MAX_ENROLMENT_FILE:
        raise _refused(_t("the {what} file is too large", what=what))
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refused(_t("the {what} file is not JSON", what=what)) from exc
    if not isinstance(doc, dict):
        raise _refused(_t("the {what} file is not a JSON object", what=what))
    return doc


def invite_ref(nonce: str) -> str:
    """How the log names an invite: the SHA-256 of its nonce (the nonce stays in the file)."""
    return hashlib.sha256(nonce.encode("ascii")).hexdigest()


def _invite_message(payload: Mapping[str, Any]) -> bytes:
    return _INVITE_DOMAIN + _audit.canonical(dict(payload))


def make_invite(
    admin: Identity,
    anchor: Anchor,
    name: str,
    roles: Sequence[str],
    nonce: str,
    expires: str,
    entrusted: Mapping[str, str] | None = None,
) -> bytes:
    """An invite for ``name``: the vault's anchor and a single-use nonce, signed by ``admin``
    (``entrusted``: the terms of an entrusted organisation's account, which the new
    person's registration must carry unchanged)."""
    payload: dict[str, Any] = {
        "format": INVITE_FORMAT,
        "vault": anchor.vault_id,
        "anchor": anchor.to_json(),
        "user": name,
        "roles": sorted(set(roles)),
        "nonce": nonce,
        "expires": expires,
        "by": admin.name,
    }
    if entrusted is not None:
        payload["entrusted"] = dict(entrusted)
    doc = {"invite": payload, "sig": b64(admin.sign(_invite_message(payload)))}
    return json.dumps(doc, indent=1, sort_keys=True).encode("utf-8") + b"\n"


@dataclass(frozen=True)
class Invite:
    """A parsed invite (its signature is checked by whoever can know the signer's key)."""

    payload: dict[str, Any]
    sig: bytes

    @property
    def anchor(self) -> Anchor:
        """The anchor the invite carries."""
        return Anchor.from_json(self.payload["anchor"])

    @property
    def user(self) -> str:
        """The invited user's name."""
        return str(self.payload["user"])

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles the admin invited the user to."""
        return tuple(self.payload["roles"])

    @property
    def entrusted(self) -> dict[str, str] | None:
        """The entrusted organisation's terms the invite sets, if any."""
        terms = self.payload.get("entrusted")
        return None if terms is None else dict(terms)

    def signed_by(self, key: bytes) -> bool:
        """Whether the invite's signature verifies under ``key``."""
        return _verify_sig(key, _invite_message(self.payload), self.sig)


def _check_invite_payload(payload: object) -> dict[str, Any]:
    keys = {"format", "vault", "anchor", "user", "roles", "nonce", "expires", "by"}
    if isinstance(payload, dict) and "entrusted" in payload:
        keys.add("entrusted")  # optional: invites made before it stay readable
    if not isinstance(payload, dict) or set(payload) != keys:
        raise _refused(_t("the invite does not have the invite members"))
    if "entrusted" in payload:
        payload["entrusted"] = _statements.entrusted_member(payload["entrusted"])
        if payload["roles"] != ["staff"]:
            raise _refused(_t("an entrusted organisation's account can only have the staff role"))
    if payload["format"] != INVITE_FORMAT:
        raise _refused(_t("not a childvault invite"))
    anchor = Anchor.from_json(payload["anchor"])
    if payload["vault"] != anchor.vault_id:
        raise _refused(_t("the invite's vault differs from its anchor's"))
    user, by, roles = payload["user"], payload["by"], payload["roles"]
    if not isinstance(user, str) or not isinstance(by, str):
        raise _refused(_t("the invite names no user or admin"))
    try:
        check_user_name(user)
        check_user_name(by)
    except UsageError as exc:
        raise _refused(_t("the invite names an invalid user")) from exc
    if (
        not isinstance(roles, list)
        or not roles
        or any(r not in _ENROL_ROLES for r in roles)
        or roles != sorted(set(roles))
    ):
        raise _refused(_t("the invite's roles are not valid"))
    if not isinstance(payload["nonce"], str) or not _NONCE.fullmatch(payload["nonce"]):
        raise _refused(_t("the invite's nonce is malformed"))
    expires = payload["expires"]
    try:
        if not isinstance(expires, str):
            raise ValueError(expires)
        parse_iso(expires)
    except ValueError as exc:
        raise _refused(_t("the invite's expiry is not a time")) from exc
    return payload


def read_invite(obj: object) -> Invite:
    """Parse an invite (the file's bytes, or its ``invite``/``sig`` object) strictly."""
    doc = _parse_json(obj, _t("invite")) if isinstance(obj, bytes) else obj
    if not isinstance(doc, dict) or set(doc) != {"invite", "sig"}:
        raise _refused(_t("the invite file does not hold an invite and its signature"))
    try:
        sig = unb64(doc["sig"])
    except ValueError as exc:
        raise _refused(_t("the invite's signature is not base64")) from exc
    return Invite(_check_invite_payload(doc["invite"]), sig)


def _binding_message(invite: Invite, registration: Envelope) -> bytes:
    # The new key binds its registration to this one invite (its nonce), so a
    # registration cannot be moved to another invite.
    return _BIND_DOMAIN + _audit.canonical(
        {"nonce": str(invite.payload["nonce"]), "registration": registration.digest()}
    )


def enrol(invite: Invite, identity: Identity, at: str) -> bytes:
    """The enrolment request of ``identity`` (new keys, anchor already set) for ``invite``.

    Carries the invite, the new user's ``user.register`` statement signed by
    their own new key (proof of possession; the admin countersigns it) and the
    new key's signature binding the statement to the invite's nonce.
    """
    registration = _statements.sign(
        register_statement(
            invite.anchor.vault_id, at, invite.user, invite.roles, identity.public, invite.entrusted
        ),
        [identity],
    )
    doc = {
        "format": REQUEST_FORMAT,
        "invite": {"invite": invite.payload, "sig": b64(invite.sig)},
        "registration": registration.to_json(),
        "binding": b64(identity.sign(_binding_message(invite, registration))),
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode("utf-8") + b"\n"


@dataclass(frozen=True)
class EnrolmentRequest:
    """A parsed, self-consistent enrolment request (the admin still checks the invite)."""

    invite: Invite
    registration: Envelope
    public: PublicIdentity


def read_request(data: bytes) -> EnrolmentRequest:
    """Parse an enrolment request and check what it can prove by itself.

    The registration must be exactly the invited user's ``user.register`` for
    the invite's vault and roles, signed by the key it registers, and that key
    must have bound it to the invite's nonce: any edit of the file is refused.
    """
    doc = _parse_json(data, _t("enrolment request"))
    if set(doc) != {"format", "invite", "registration", "binding"}:
        raise _refused(_t("the request does not have the request members"))
    if doc["format"] != REQUEST_FORMAT:
        raise _refused(_t("not a childvault enrolment request"))
    invite = read_invite(doc["invite"])
    registration = Envelope.from_json(doc["registration"])
    statement = registration.statement()
    members = {"v", "kind", "vault", "at", "user", "roles", "enc_key", "sign_key"}
    if invite.entrusted is not None:
        members.add("entrusted")
    if statement.get("kind") != "user.register" or set(statement) != members:
        raise _refused(_t("the request does not carry a registration"))
    if (statement["vault"], statement["user"], statement["roles"]) != (
        invite.anchor.vault_id,
        invite.user,
        list(invite.roles),
    ):
        raise _refused(_t("the registration differs from the invite (user, roles or vault)"))
    if statement.get("entrusted") != invite.entrusted:
        raise _refused(_t("the registration's entrusted terms differ from the invite's"))
    try:
        public = PublicIdentity(
            invite.user,
            bytes.fromhex(str(statement["enc_key"])),
            bytes.fromhex(str(statement["sign_key"])),
        )
        binding = unb64(doc["binding"])
    except ValueError as exc:
        raise _refused(_t("the request's keys or binding are malformed")) from exc
    if len(public.encryption_key) != 32 or len(public.signing_key) != 32:
        raise _refused(_t("the request's keys are malformed"))
    if not registration.signed_by(public.signing_key):
        raise _refused(_t("the registration is not signed by the key it registers"))
    if not public.verify(_binding_message(invite, registration), binding):
        raise _refused(_t("the request is not bound to its invite by the new key"))
    return EnrolmentRequest(invite, registration, public)


def invite_summary(invite: Invite) -> dict[str, Any]:
    """What ``user enroll`` shows before anything is generated: who, which roles,
    which vault, until when, and the anchor's fingerprint to confirm with the admin."""
    return {
        "user": invite.user,
        "roles": list(invite.roles),
        "vault_id": invite.anchor.vault_id,
        "invited_by": str(invite.payload["by"]),
        "expires": str(invite.payload["expires"]),
        "fingerprint": invite.anchor.fingerprint(),
        **({"entrusted": invite.entrusted} if invite.entrusted is not None else {}),
    }


def enrol_with_invite(data: bytes, passphrase: str, identity_path: Path, at: str) -> bytes:
    """The new person's side of enrolment, in their own process.

    Generates their key pairs, writes their identity file at ``identity_path``
    under ``passphrase`` (the invite's anchor inside its encrypted part; an
    existing file is never replaced) and returns the enrolment request bytes.
    An invite signed by the founding admin is checked against the anchor here;
    any other admin's signature is checked by ``user add --request``.
    """
    invite = read_invite(data)
    anchor = invite.anchor
    if invite.payload["by"] == anchor.admin and not invite.signed_by(anchor.sign_key):
        raise _refused(_t("the invite is not signed by the admin it names"))
    if identity_path.exists():
        raise UsageError(_t("{path} exists already: it is not replaced", path=identity_path))
    identity = Identity.generate(invite.user)
    identity.anchor = anchor.to_json()
    request = enrol(invite, identity, at)
    identity.save(identity_path, passphrase)
    return request
