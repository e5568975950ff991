"""Release keys held by the serving process only (findings A-9 and A-10, docs/server.md).

Every user's key slot opens the database (DESIGN section 3), so a row of the
database is no place for a secret or for a counter that decides anything. Two
things here keep release after logging true against people with the database:

**The release secret.** 32 random bytes made at the first ``serve`` start and
kept in ``identities/NAME.release`` beside the identity the server unlocks
with (``serve --as NAME``): sealed to that identity's X25519 key (only its
passphrase opens it) and signed by its Ed25519 key (so nobody who can write
the home swaps in a secret of their own). Every per-grant release key is
stored under it with XChaCha20-Poly1305, the associated data naming the vault,
the grant, the officer who asked for it and how many times it was released:
a row copied to another grant, a counter reset or a changed officer no longer
opens. Replicas share the secret by serving as the same identity with the same
file (docs/scale.md).

**The grant's terms from the log.** Who the grant is for, until when, and how
many uses it allows come from the signed ``request.create`` and
``request.approve`` entries, a revocation from any ``grant.revoke`` entry
naming it, and the uses consumed from the requester's signed ``grant.read``
entries: never from the ``grants`` row an insider can edit.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nacl.bindings
import nacl.exceptions

from childvault._i18n import _t
from childvault.keys import ChildVaultError, ConfigError, Identity, IntegrityError
from childvault.keys._encoding import b64, unb64
from childvault.vault import _audit
from childvault.vault._action_roles import role_at
from childvault.vault._backend import Backend
from childvault.vault._config import Home
from childvault.vault._merkle import leaf_hash
from childvault.vault._statements import TrustState
from childvault.vault._time import parse_iso

#: What the sealed secret starts with (domain separation from every other sealed box).
_SECRET_HEADER = b"childvault/release-secret/1\x00"
#: What the identity signs over the sealed secret.
_SECRET_SIG = b"childvault/release-secret-file/1\x00"
_NONCE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES


def secret_path(home: Home, user: str) -> Path:
    """Where the release secret of a server serving as ``user`` lives."""
    return home.identities / f"{user}.release"


def _signed_part(vault_id: str, user: str, sealed: str) -> bytes:
    doc = {"sealed": sealed, "user": user, "vault": vault_id}
    return _SECRET_SIG + json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def release_secret(home: Home, identity: Identity, vault_id: str) -> bytes:
    """The serving identity's release secret: opened, or made (and stored) if there is none.

    Two processes starting at once on one home make one file: it is linked
    into place whole (``link`` fails if it exists) and the loser reads the
    winner's. A file that does not
    open with ``identity`` (another user's, a renewed key, edited) stops the
    server: starting with a new secret would silently make every outstanding
    server-mode token unreadable.
    """
    path = secret_path(home, identity.name)
    if not path.exists():
        secret = secrets.token_bytes(32)
        sealed = b64(identity.public.seal(_SECRET_HEADER + vault_id.encode() + b"\0" + secret))
        sig = b64(identity.sign(_signed_part(vault_id, identity.name, sealed)))
        doc = {"sealed": sealed, "sig": sig, "user": identity.name, "v": 1, "vault": vault_id}
        # Written whole under a private name, then linked into place: a process
        # that loses the race never reads a half-written file.
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps(doc, sort_keys=True) + "\n")
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return _open_secret(path, identity, vault_id)


def _open_secret(path: Path, identity: Identity, vault_id: str) -> bytes:
    def bad(why: str) -> ConfigError:
        return ConfigError(
            _t(
                "the release secret {path} does not open as {user}: {why}; serve as the "
                "identity that made it, or restore it from a backup (docs/operators.md)",
                path=path.name,
                user=identity.name,
                why=why,
            )
        )

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        sealed, sig = str(doc["sealed"]), unb64(str(doc["sig"]))
        user, vault = str(doc["user"]), str(doc["vault"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise bad(_t("the file is not readable")) from exc
    if vault != vault_id:
        raise bad(_t("it belongs to another vault"))
    if user != identity.name or not identity.public.verify(_signed_part(vault, user, sealed), sig):
        raise bad(_t("it is not signed by this identity's key"))
    try:
        plain = identity.unseal(unb64(sealed))
    except Exception as exc:  # DecryptionFailed or a malformed box: the same answer.
        raise bad(_t("it is not sealed to this identity's key")) from exc
    prefix = _SECRET_HEADER + vault_id.encode() + b"\0"
    if not plain.startswith(prefix) or len(plain) != len(prefix) + 32:
        raise bad(_t("it is not a release secret of this vault"))
    return plain[len(prefix) :]


# -- per-grant release keys, stored under the secret ----------------------------


def _ad(vault_id: str, grant_id: str, officer: str, redeemed: int) -> bytes:
    return b"childvault/release-key/1|%s|%s|%s|%d" % (
        vault_id.encode(),
        grant_id.encode(),
        officer.encode(),
        redeemed,
    )


def seal_key(
    secret: bytes, vault_id: str, grant_id: str, officer: str, redeemed: int, key: bytes
) -> str:
    """The ``server/release/<grant>`` row: ``key`` under the secret, bound to place and count."""
    nonce = secrets.token_bytes(_NONCE)
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        key, _ad(vault_id, grant_id, officer, redeemed), nonce, secret
    )
    doc = {"officer": officer, "redeemed": redeemed, "sealed": b64(nonce + ct), "v": 2}
    return json.dumps(doc, sort_keys=True)


@dataclass(frozen=True)
class StoredKey:
    """An opened ``server/release/<grant>`` row."""

    officer: str
    redeemed: int
    key: bytes


class RowRefused(IntegrityError):
    """A release row that gives nothing (the message says why, for the refusal)."""


def open_key(secret: bytes, vault_id: str, grant_id: str, stored: str) -> StoredKey:
    """The release key in a row :func:`seal_key` wrote; :class:`RowRefused` otherwise."""
    try:
        doc = json.loads(stored)
        version = doc.get("v")
    except (ValueError, AttributeError) as exc:
        raise RowRefused(_t("the release key row is malformed")) from exc
    if version != 2:
        # A row of the old form held its key in clear, readable by every user:
        # no release of it can be said to follow a logged use.
        raise RowRefused(
            _t(
                "its release key was stored in clear before this server version: "
                "ask an officer to approve the request again"
            )
        )
    try:
        officer, redeemed, body = str(doc["officer"]), doc["redeemed"], unb64(doc["sealed"])
        if type(redeemed) is not int or redeemed < 0:
            raise ValueError(redeemed)
        key = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            body[_NONCE:], _ad(vault_id, grant_id, officer, redeemed), body[:_NONCE], secret
        )
    except (nacl.exceptions.CryptoError, ValueError, KeyError, TypeError) as exc:
        raise RowRefused(_t("the release key row was altered or belongs elsewhere")) from exc
    return StoredKey(officer, redeemed, bytes(key))


# -- the grant's terms, from the signed log ----------------------------------------


@dataclass(frozen=True)
class Terms:
    """What the signed log says about a grant."""

    officer: str
    requester: str
    expires: datetime
    max_uses: int
    revoked: bool
    reads: int


def _key_at(state: TrustState, name: str, seq: int) -> bytes | None:
    """``name``'s verified signing key at log position ``seq`` (renewals included)."""
    found = state.users.get(name)
    if found is None:
        return None
    if seq >= found.key_from:
        return found.sign_key
    for key_hex, lo, hi in state.retired_keys.get(name, []):
        if lo <= seq < hi:
            return bytes.fromhex(key_hex)
    return None


def logged_terms(db: Backend, state: Callable[[int], TrustState], grant_id: str) -> Terms | str:
    """The grant's terms from its signed log entries, or why there are none usable.

    ``state(seq)`` gives a verified trust state that covers log position ``seq``.
    Each entry used is checked here: its bytes hash to the stored hash whose
    signature is its actor's verified key at that position (an edited entry,
    or one with no signature, counts for nothing).
    """
    audit = db.audit

    def signed(raw: bytes, action: str) -> dict[str, object] | None:
        try:
            doc = _audit.decode_entry(raw)
        except (ValueError, ChildVaultError):
            return None
        if (doc.get("action"), doc.get("outcome")) != (action, "ok"):
            return None
        seq, actor = doc.get("seq"), doc.get("actor")
        if type(seq) is not int or not isinstance(actor, str):
            return None
        sig = audit.signatures(seq, seq).get(seq)
        key = _key_at(state(seq), actor, seq)
        if sig is None or key is None:
            return None
        if not verifies(key, _audit.entry_message(leaf_hash(raw)), sig):
            return None
        return doc

    approve = None
    others = False
    for raw in audit.entries_by_ref(("request.approve",), grant=grant_id):
        doc = signed(raw, "request.approve")
        if doc is None or doc.get("grant") != grant_id:
            continue
        at = int(str(doc["seq"]))
        # An approval hands over release keys: made under the officer's verified
        # registration (role_at's "was_active"). Anyone else's entry naming the
        # grant (any user may log any action in their own name) is skipped, not
        # taken as the first and refused: it would block the real one (FX-2).
        if role_at(state(at), str(doc["actor"]), "officer", at, mode="was_active"):
            approve = doc
            break
        others = True
    if approve is None:
        if others:
            return _t("approved by someone who was not an officer")
        return _t("no signed approval in the log")
    officer = str(approve["actor"])
    detail = approve.get("detail")
    request_id = approve.get("request")
    max_uses = detail.get("uses") if isinstance(detail, dict) else None
    try:
        expires = parse_iso(str(detail["expires"])) if isinstance(detail, dict) else None
    except (KeyError, ValueError):
        expires = None
    if expires is None or type(max_uses) is not int or max_uses < 1:
        return _t("the signed approval names no expiry or number of uses")
    requester = None
    basis: dict[str, object] = {}
    if isinstance(request_id, str):
        for raw in audit.entries_by_ref(("request.create",), request=request_id):
            doc = signed(raw, "request.create")
            if doc is not None and doc.get("request") == request_id:
                requester = str(doc["actor"])
                created = doc.get("detail")
                basis = dict(created) if isinstance(created, dict) else {}
                break
    if requester is None:
        return _t("no signed request in the log")
    # Any successful revocation entry naming the grant counts, signed or not: a
    # genuine one must never be missed (an insider may strip its signature).
    # Except one that verifies as signed by someone who held no officer's role
    # there by their verified registration: any user may log an entry in their
    # own name, and a staff member's would deny every other requester their
    # reads (review RV9-4). role_at's "held": counting a revocation is the safe
    # side, so only the role and a disabling before it decide.
    revoked = False
    for raw in audit.entries_by_ref(("grant.revoke",), grant=grant_id):
        with contextlib.suppress(ValueError, ChildVaultError):
            doc = _audit.decode_entry(raw)
            if (doc.get("grant"), doc.get("outcome")) != (grant_id, "ok"):
                continue
            by = signed(raw, "grant.revoke")
            if by is not None:
                at = int(str(by["seq"]))
                if not role_at(state(at), by["actor"], "officer", at, mode="held"):
                    continue
            revoked = True
    reads = 0
    for raw in audit.entries_by_ref(("grant.read",), grant=grant_id):
        doc = signed(raw, "grant.read")
        if (
            doc is not None
            and doc.get("grant") == grant_id
            and doc["actor"] == requester
            and _reads_as_approved(doc, approve, basis)
        ):
            reads += 1
    return Terms(officer, requester, expires, max_uses, revoked, reads)


def _reads_as_approved(
    read: dict[str, object], approve: dict[str, object], basis: dict[str, object]
) -> bool:
    """Whether a ``grant.read`` entry says what the read released (review RV9-3): the
    approved request and purpose, some of its records and fields, and the
    request's statutory basis (recipient, provision ...: the transfers register,
    P-17). The release key opens every record of the grant, so a read entry
    naming none of them (or leaving out the recipient) would hide the read from
    the reports built on those entries (incident report, transfers); such an
    entry counts for no release."""
    records, fields = read.get("records"), read.get("fields")
    approved_records, approved_fields = approve.get("records"), approve.get("fields")
    detail = read.get("detail")
    return (
        isinstance(records, list)
        and isinstance(fields, list)
        and isinstance(approved_records, list)
        and isinstance(approved_fields, list)
        and bool(records)
        and bool(fields)
        and all(r in approved_records for r in records)
        and all(f in approved_fields for f in fields)
        and (read.get("request"), read.get("purpose"))
        == (approve.get("request"), approve.get("purpose"))
        and isinstance(detail, dict)
        and all(detail.get(k) == v for k, v in basis.items())
    )


def verifies(key: bytes, message: bytes, sig: bytes) -> bool:
    """Whether ``sig`` is the Ed25519 signature of ``message`` by ``key`` (never raises)."""
    import nacl.signing

    try:
        nacl.signing.VerifyKey(key).verify(message, sig)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True
