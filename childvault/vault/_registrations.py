"""Who the log says was registered: users (``user.add``) and custodian keys.

Shared by the audit service (``audit verify`` checks the tables against the
log) and the key ring (nothing is sealed to a custodian key the log does not
know), so neither imports the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import nacl.exceptions
import nacl.signing

from childvault.keys import Identity, IntegrityError, PublicIdentity
from childvault.vault import _audit
from childvault.vault._audit import DetailValue, Event
from childvault.vault._backend import AuditRepo, Backend
from childvault.vault._merkle import leaf_hash
from childvault.vault._statements import Anchor, Envelope, TrustState


def user_detail(
    name: str, roles: Sequence[str], public: PublicIdentity
) -> dict[str, str | list[str]]:
    """The ``user.add`` log detail: who, which roles, which public keys."""
    return {
        "user": name,
        "roles": sorted(roles),
        "enc_key": public.encryption_key.hex(),
        "sign_key": public.signing_key.hex(),
    }


def logged_registrations(
    log: AuditRepo,
) -> tuple[dict[str, dict[str, Any]], dict[int, set[str]]]:
    """From the log: each user's ``user.add`` detail, and every custodian public key
    (hex) a logged creation or rotation introduced, by generation."""
    added: dict[str, dict[str, Any]] = {}
    custodians: dict[int, set[str]] = {}
    for entry in log.entries_by_action(("user.add", "custodian.create", "keys.rotate")):
        obj = _audit.decode_entry(entry)
        detail = obj.get("detail", {})
        if obj.get("outcome") != "ok":
            continue
        if obj["action"] == "user.add":
            # The statement's digest is not part of what `audit verify` compares.
            added[str(detail.get("user"))] = {
                k: v for k, v in detail.items() if k not in ("statement", "pending_statement")
            }
        elif obj["action"] in ("custodian.create", "keys.rotate") and "public_key" in detail:
            generation = int(detail.get("generation", 0))
            custodians.setdefault(generation, set()).add(str(detail["public_key"]))
    return added, custodians


def check_custodian_logged(log: AuditRepo, generation: int, public: bytes) -> None:
    """Refuse a custodian key that no logged operation created (an insider's key)."""
    if public.hex() not in logged_registrations(log)[1].get(generation, set()):
        raise IntegrityError(
            f"the custodian key (generation {generation}) in the database was not created "
            "by a logged operation: nothing will be sealed to it; run `childvault audit "
            "verify` and alert the officers"
        )


# ------------------------------------------------- signed statements in the log

#: Detail member of a log entry carrying a trust statement: the envelope's SHA-256.
STATEMENT = "statement"
#: Detail member of a ``user.add`` entry whose officer registration still waits
#: for an existing officer's countersignature (given at ``keys share``); it is
#: not applied until a ``user.countersign`` entry carries the countersigned one.
PENDING = "pending_statement"
_STATE_DOMAIN = b"childvault/trust-state/1\x00"


def append_with_statements(
    db: Backend, items: Sequence[tuple[Event, Envelope | None]], now: datetime
) -> list[int]:
    """Append ``items``' events and keep each envelope keyed by its entry's seq.

    Must run inside the backend's transaction; each event's detail must already
    name its envelope's digest (:func:`with_statement`).
    """
    seqs = _audit.append(db.audit, [event for event, _ in items], now)
    for seq, (_, envelope) in zip(seqs, items, strict=True):
        if envelope is not None:
            db.statements.add(seq, envelope.to_bytes())
    return seqs


def with_statement(
    detail: Mapping[str, DetailValue], envelope: Envelope, *, pending: bool = False
) -> dict[str, DetailValue]:
    """``detail`` naming ``envelope`` (by digest) as the statement its entry carries."""
    return {**detail, (PENDING if pending else STATEMENT): envelope.digest()}


def anchor_of(identity: Identity) -> Anchor | None:
    """The anchor kept in ``identity``'s file, or None for a file made before anchors."""
    if identity.anchor is None:
        return None
    return Anchor.from_json(identity.anchor)


@dataclass
class Verified:
    """A trust state verified over the log's first ``size`` entries (head: last hash)."""

    state: TrustState
    size: int
    head: bytes | None


def _state_message(vault_id: str, size: int, head: bytes, state: bytes) -> bytes:
    # Signed over the head hash of the chain (it commits to every earlier entry,
    # as a Merkle root would) and the digest of the state.
    return _STATE_DOMAIN + _audit.canonical(
        {
            "vault": vault_id,
            "size": size,
            "head": head.hex(),
            "state": hashlib.sha256(state).hexdigest(),
        }
    )


def load_saved(db: Backend, verifier: Identity, anchor: Anchor) -> Verified | None:
    """The verifier's own saved state, if it is there and its signature verifies."""
    saved = db.statements.saved_state(verifier.name)
    if saved is None:
        return None
    size, head, raw, sig = saved
    message = _state_message(anchor.vault_id, size, head, raw)
    if not verifier.public.verify(message, sig):
        return None  # not ours (an insider's): replay everything instead
    at = db.audit.entry_at(size - 1) if size else None
    if at is None or at[1] != head:
        return None  # the log was rewritten below the saved point: replay everything
    try:
        return Verified(TrustState.from_bytes(raw, anchor), size, head)
    except IntegrityError:
        return None


def save_state(db: Backend, verifier: Identity, anchor: Anchor, verified: Verified) -> None:
    """Keep ``verified``, signed by the verifier's own key, for the next verification."""
    if verified.head is None:
        return
    raw = verified.state.to_bytes()
    sig = verifier.sign(_state_message(anchor.vault_id, verified.size, verified.head, raw))
    with db.transaction():
        db.statements.save_state(verifier.name, verified.size, verified.head, raw, sig)


def replay(db: Backend, start: Verified) -> Verified:
    """Continue ``start`` over the log entries after it, in order.

    Checks the hash chain of the entries it reads, that every entry naming a
    statement has exactly that envelope stored beside it, and applies each
    trust statement to the state (:meth:`TrustState.apply`). Raises
    :class:`IntegrityError` naming the first disagreement.
    """
    state = start.state
    expected, prev = start.size, start.head
    # A broken chain is reported before an entry in another's name: it is the
    # more basic fault and names where the log was cut or edited.
    forged: IntegrityError | None = None
    for rows in db.audit.pages(start.size):
        sigs = db.audit.signatures(int(rows[0][0]), int(rows[-1][0])) if rows else {}
        for raw in rows:
            seq, entry, digest = db.audit.row(raw)
            if seq != expected:
                raise IntegrityError(f"log entry {expected} is missing (found {seq})")
            if leaf_hash(entry) != digest:
                raise IntegrityError(f"log entry {seq} was modified (its hash does not match)")
            try:
                obj = _audit.decode_entry(entry)
            except ValueError as exc:
                raise IntegrityError(f"log entry {seq} is not JSON") from exc
            if obj.get("seq") != seq or obj.get("prev") != (None if prev is None else prev.hex()):
                raise IntegrityError(f"log entry {seq} does not link to entry {seq - 1}")
            try:
                _check_actor(state, seq, obj.get("actor"), digest, sigs.get(seq))
            except IntegrityError as exc:
                forged = forged or exc  # raised after the chain is checked to the end
            detail = obj.get("detail")
            named = detail.get(STATEMENT) if isinstance(detail, dict) else None
            if named is not None:
                _apply_logged(db, state, seq, str(named), obj)
            expected, prev = seq + 1, digest
    if forged is not None:
        raise forged
    return Verified(state, expected, prev)


def _check_actor(
    state: TrustState, seq: int, actor: object, digest: bytes, sig: bytes | None
) -> None:
    """An entry in the name of a user with a verified registration must carry that
    user's signature over its hash: an insider cannot write in another's name.

    Entries of names with no verified registration yet (the founding entry
    before the admin's registration, a pending officer) are not checked here.
    """
    user = state.users.get(actor) if isinstance(actor, str) else None
    if user is None or seq < user.key_from:
        return
    if sig is None or not _verify_sig(user.sign_key, _audit.entry_message(digest), sig):
        raise IntegrityError(
            f"log entry {seq} is in the name of {actor!r} but not signed by them: "
            "it was written by someone else"
        )


def _verify_sig(key: bytes, message: bytes, sig: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(key).verify(message, sig)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


def _apply_logged(db: Backend, state: TrustState, seq: int, named: str, obj: Any) -> None:
    stored = db.statements.get(seq)
    if stored is None:
        raise IntegrityError(f"the signed statement of log entry {seq} is missing")
    envelope = Envelope.from_bytes(stored)
    if envelope.digest() != named:
        raise IntegrityError(f"the signed statement of log entry {seq} was replaced")
    if obj.get("outcome") != "ok":
        raise IntegrityError(f"log entry {seq} carries a statement but did not succeed")
    kind = envelope.statement().get("kind")
    if kind == "record.version":
        return  # checked against the record it signs, not trust state
    try:
        state.apply(envelope, seq=seq)
    except IntegrityError as exc:
        raise IntegrityError(f"log entry {seq}: {exc}") from exc


def verify_log(
    db: Backend,
    verifier: Identity,
    anchor: Anchor,
    known: Verified | None,
    *,
    save: bool = True,
) -> Verified:
    """The trust state over the whole log, resumed from ``known`` or the verifier's saved state.

    Falls back to a full replay from the anchor when nothing saved verifies.
    ``save=False``: write nothing (``audit verify`` only reads).
    """
    start = known or load_saved(db, verifier, anchor)
    if start is not None:
        try:
            done = replay(db, _copy(start, anchor))
        except IntegrityError:
            done = replay(db, Verified(TrustState.start(anchor), 0, None))
    else:
        done = replay(db, Verified(TrustState.start(anchor), 0, None))
    if save and (start is None or done.size != start.size):
        save_state(db, verifier, anchor, done)
    return done


def _copy(start: Verified, anchor: Anchor) -> Verified:
    # A failed replay must not leave a half-applied state behind.
    return Verified(TrustState.from_bytes(start.state.to_bytes(), anchor), start.size, start.head)


def register_statement(
    vault_id: str, at: str, name: str, roles: Sequence[str], public: PublicIdentity
) -> dict[str, Any]:
    """The ``user.register`` statement of ``name``."""
    return {
        "v": 1,
        "kind": "user.register",
        "vault": vault_id,
        "at": at,
        "user": name,
        "roles": sorted(set(roles)),
        "enc_key": public.encryption_key.hex(),
        "sign_key": public.signing_key.hex(),
    }


def custodian_statement(vault_id: str, at: str, kind: str, **members: Any) -> dict[str, Any]:
    """A ``custodian.*`` statement."""
    return {"v": 1, "kind": kind, "vault": vault_id, "at": at, **members}
