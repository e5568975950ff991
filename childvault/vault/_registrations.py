"""Who the log says was registered: users (``user.add``) and custodian keys.

Shared by the audit service (``audit verify`` checks the tables against the
log) and the key ring (nothing is sealed to a custodian key the log does not
know), so neither imports the other.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing

from childvault._i18n import _t
from childvault.keys import Identity, IntegrityError, PublicIdentity, UsageError, check_user_name
from childvault.keys._encoding import b64, unb64
from childvault.vault import _audit, _statements
from childvault.vault._audit import DetailValue, Event
from childvault.vault._backend import AuditRepo, Backend
from childvault.vault._merkle import HASH_SIZE, leaf_hash
from childvault.vault._statements import Anchor, Envelope, TrustState
from childvault.vault._time import parse_iso

#: The entrusted members a ``user.add`` detail repeats, as ``entrusted_<member>``.
ENTRUSTED_DETAIL = ("organisation", "agreement", "expires")


def user_detail(
    name: str,
    roles: Sequence[str],
    public: PublicIdentity,
    entrusted: Mapping[str, str] | None = None,
) -> dict[str, DetailValue]:
    """The ``user.add`` log detail: who, which roles, which public keys (and, for an
    entrusted organisation's account, its organisation, agreement and expiry)."""
    detail: dict[str, DetailValue] = {
        "user": name,
        "roles": sorted(roles),
        "enc_key": public.encryption_key.hex(),
        "sign_key": public.signing_key.hex(),
    }
    if entrusted is not None:
        # Flat members (a log detail holds no objects); the signed statement is the authority.
        for key in ENTRUSTED_DETAIL:
            detail[f"entrusted_{key}"] = entrusted[key]
    return detail


def logged_registrations(
    log: AuditRepo,
) -> tuple[dict[str, dict[str, Any]], dict[int, set[str]]]:
    """From the log: each user's ``user.add`` detail, and every custodian public key
    (hex) a logged creation or rotation introduced, by generation."""
    added: dict[str, dict[str, Any]] = {}
    custodians: dict[int, set[str]] = {}
    for entry in log.entries_by_action(
        ("user.add", "user.renew", "custodian.create", "keys.rotate")
    ):
        obj = _audit.decode_entry(entry)
        detail = obj.get("detail", {})
        if obj.get("outcome") != "ok":
            continue
        if obj["action"] == "user.renew":
            # An approved renewal gives the user new keys (`keys renew`).
            known = added.get(str(detail.get("user")))
            if detail.get("phase") == "approve" and known is not None:
                known["enc_key"], known["sign_key"] = detail.get("enc_key"), detail.get("sign_key")
            continue
        if obj["action"] == "user.add":
            # The statement's digest and the invite used are not part of what
            # `audit verify` compares with the users table.
            added[str(detail.get("user"))] = {
                k: v
                for k, v in detail.items()
                if k not in ("statement", "pending_statement", "invite")
                and not k.startswith("entrusted_")
            }
        elif obj["action"] in ("custodian.create", "keys.rotate") and "public_key" in detail:
            generation = int(detail.get("generation", 0))
            custodians.setdefault(generation, set()).add(str(detail["public_key"]))
    return added, custodians


def check_custodian_logged(log: AuditRepo, generation: int, public: bytes) -> None:
    """Refuse a custodian key that no logged operation created (an insider's key)."""
    if public.hex() not in logged_registrations(log)[1].get(generation, set()):
        raise IntegrityError(
            _t(
                "the custodian key (generation {generation}) in the database was not created by a "
                "logged operation: nothing will be sealed to it; run `childvault audit verify` "
                "and alert the officers",
                generation=generation,
            )
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
    #: The size of the verifier's saved state in the database, when known (None:
    #: not known to be saved). Decides when to save again (:func:`verify_log`).
    saved_at: int | None = None


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
        return Verified(TrustState.from_bytes(raw, anchor), size, head, size)
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


#: Suffix of the ``trust_states`` key under which a verifier keeps its known
#: tree (``audit verify``'s Merkle frontier of the prefix it verified), beside
#: its trust state (``NAME``) and its record heads (``NAME#records``).
TREE_SUFFIX = "#tree"
_TREE_DOMAIN = b"childvault/verified-tree/1\x00"


def _tree_message(vault_id: str, user: str, size: int, state: bytes, checked: bytes) -> bytes:
    # Bound to the vault and the user (a row copied from another vault or user
    # does not verify) and to the prefix's last leaf hash, the end of ``state``:
    # the chain ending in it commits to every earlier entry.
    return _TREE_DOMAIN + _audit.canonical(
        {
            "vault": vault_id,
            "user": user,
            "size": size,
            "state": state.hex(),
            "checked": checked.hex(),
        }
    )


def load_tree(db: Backend, verifier: Identity, anchor: Anchor) -> _audit.KnownTree | None:
    """The verifier's own known tree (see :func:`save_tree`), if its signature verifies.

    Anything else (no row, a row that does not parse, another's signature)
    gives None: ``audit verify`` then builds the whole tree, as before.
    """
    saved = db.statements.saved_state(verifier.name + TREE_SUFFIX)
    if saved is None:
        return None
    size, head, raw, sig = saved
    # raw: the checked-checkpoints digest, then the frontier before the last
    # entry, then that entry's leaf hash (the head).
    if size < 1 or len(raw) < 2 * HASH_SIZE or raw[-HASH_SIZE:] != head:
        return None
    checked, state = raw[:HASH_SIZE], raw[HASH_SIZE:]
    message = _tree_message(anchor.vault_id, verifier.name, size, state, checked)
    if not verifier.public.verify(message, sig):
        return None  # not ours (an insider's row): build the whole tree
    return _audit.KnownTree(size, state, checked)


def save_tree(db: Backend, verifier: Identity, anchor: Anchor, report: _audit.VerifyReport) -> None:
    """Keep the Merkle frontier of the log ``report`` verified, signed by the verifier.

    The next ``audit verify`` by the same user then folds only the entries
    after it into the tree (it still checks the chain of every entry and that
    the prefix ends in the same leaf: docs/decisions.md).
    """
    if report.entries < 1 or len(report.resume_state) < HASH_SIZE or not report.checked:
        return
    state = report.resume_state
    message = _tree_message(anchor.vault_id, verifier.name, report.entries, state, report.checked)
    sig = verifier.sign(message)
    with db.transaction():
        db.statements.save_state(
            verifier.name + TREE_SUFFIX,
            report.entries,
            state[-HASH_SIZE:],
            report.checked + state,
            sig,
        )


def replay(
    db: Backend,
    start: Verified,
    *,
    checked: Collection[tuple[bytes, bytes, bytes]] = (),
    canonical: Collection[bytes] = (),
) -> Verified:
    """Continue ``start`` over the log entries after it, in order.

    Checks the hash chain of the entries it reads, that every entry naming a
    statement has exactly that envelope stored beside it, and applies each
    trust statement to the state (:meth:`TrustState.apply`). Raises
    :class:`IntegrityError` naming the first disagreement.

    ``checked``: (signing key, signed message, signature) triples the caller has
    verified itself in this process (the server, for the entries of the batch
    it is committing). An entry whose actor's key *at that point of the
    replay*, signed message (:func:`_audit.entry_message` or, closing a run,
    :func:`_audit.run_message`) and stored signature form one of them is not
    verified a second time; any other entry, and every entry read back by a
    later replay, is.

    ``canonical``: entries (their bytes) the caller has found canonical itself
    (:func:`_audit.is_canonical`, the server as the batch arrives). A stored entry
    equal to one of them, byte for byte, is not encoded a second time; an entry
    changed since, by a single byte, is.
    """
    state = start.state
    expected, prev = start.size, start.head
    # A broken chain is reported before an entry in another's name: it is the
    # more basic fault and names where the log was cut or edited.
    forged: IntegrityError | None = None
    # The run rule (docs/trust.md): an unsigned entry counts once its actor's
    # run is closed by their signature; the log's saved and verified points
    # always end a run (an append call is one transaction and ends signed).
    runs = _audit.RunCheck()
    for rows in db.audit.pages(start.size):
        sigs = db.audit.signatures(int(rows[0][0]), int(rows[-1][0])) if rows else {}
        page = [db.audit.row(raw) for raw in rows]
        # The page's trust statements in one query, not one per entry (one
        # round trip each through the server). The entries holding the member
        # name are a superset of those naming one (canonical JSON writes it
        # as is; an entry spelling it otherwise finds no envelope: refused).
        naming = [seq for seq, entry, _ in page if b'"statement"' in entry]
        envelopes = db.statements.get_many(naming) if naming else {}
        for seq, entry, digest in page:
            if seq != expected:
                raise IntegrityError(
                    _t("log entry {expected} is missing (found {seq})", expected=expected, seq=seq)
                )
            if leaf_hash(entry) != digest:
                raise IntegrityError(
                    _t("log entry {seq} was modified (its hash does not match)", seq=seq)
                )
            try:
                obj = _audit.decode_entry(entry)
            except ValueError as exc:
                raise IntegrityError(_t("log entry {seq} is not JSON", seq=seq)) from exc
            if entry not in canonical and not _audit.is_canonical(obj, entry):
                # The library writes canonical bytes only. A member written twice
                # is its first value in SQLite's index columns (action, ids,
                # recipient) and its last here: a signed read naming a recipient
                # would be left out of the transfers register (review RV11-1).
                raise IntegrityError(_t("log entry {seq} is not in canonical form", seq=seq))
            if _audit.holds_nul(entry, obj):
                # Invisible to PostgreSQL's index columns (review RV11-2).
                raise IntegrityError(_t("log entry {seq} holds the character U+0000", seq=seq))
            if obj.get("seq") != seq or obj.get("prev") != (None if prev is None else prev.hex()):
                raise IntegrityError(
                    _t("log entry {seq} does not link to entry {prev}", seq=seq, prev=seq - 1)
                )
            actor = obj.get("actor")
            founded = bool(state.users)
            if forged is None and not _may_write(state, actor):
                # Raised after the chain is checked to the end, like a forgery.
                forged = IntegrityError(
                    _t(
                        "log entry {seq} is in the name of {actor!r}, who has no registration "
                        "in this vault's log at that point: it was written by someone else",
                        seq=seq,
                        actor=actor,
                    )
                )
            bad = _check_actor(
                state,
                runs,
                seq,
                actor,
                obj.get("action"),
                digest,
                sigs.get(seq),
                checked,
            )
            if bad is not None and forged is None:
                # Raised after the chain is checked to the end.
                forged = _forged(bad, db, page)
            detail = obj.get("detail")
            named = detail.get(STATEMENT) if isinstance(detail, dict) else None
            if named is not None:
                _apply_logged(envelopes.get(seq), state, seq, str(named), obj)
            if obj.get("action") == "user.add" and isinstance(detail, dict):
                _note_unverified(state, obj, detail, founded)
            expected, prev = seq + 1, digest
    bad = runs.end()
    if bad is not None and forged is None:
        forged = _forged(bad, db, [])  # an unsigned tail: no closing signature
    if forged is not None:
        raise forged
    return Verified(state, expected, prev)


def _forged(bad: int, db: Backend, page: Sequence[tuple[int, bytes, bytes]]) -> IntegrityError:
    """The refusal of entry ``bad`` (its actor's signature is missing or wrong), its
    actor read from ``page`` or, for a run that began on an earlier page, the log."""
    actor: object = None
    found = next((e for s, e, _ in page if s == bad), None)
    if found is None:
        at = db.audit.entry_at(bad)
        found = None if at is None else at[0]
    if found is not None:
        try:
            actor = _audit.decode_entry(found).get("actor")
        except ValueError:
            actor = None
    return IntegrityError(
        _t(
            "log entry {seq} is in the name of {actor!r} but not signed by them: it was "
            "written by someone else",
            seq=bad,
            actor=actor,
        )
    )


def _may_write(state: TrustState, actor: object) -> bool:
    """Whether the log may hold an entry in the name of ``actor`` at this point.

    A valid user name (a look-alike such as a Cyrillic "е" is none) that is
    registered: verified, or known unverified (:attr:`TrustState.unverified`).
    Before the founding registration (no user yet: a vault's first entry, or the
    log of a vault made before anchors) every valid name may.
    """
    if not isinstance(actor, str):
        return False
    try:
        check_user_name(actor)
    except UsageError:
        return False
    return not state.users or actor in state.users or actor in state.unverified


def _note_unverified(
    state: TrustState, obj: Mapping[str, Any], detail: Mapping[str, Any], founded: bool
) -> None:
    """Note the name a successful ``user.add`` registers without a verified statement.

    Before the founding registration (``founded`` false): any (a vault made
    before anchors). After it: a pending registration only (``pending_statement``),
    logged by an admin active there (an officer awaiting an officer's
    countersignature) or by that unverified user themselves (their own request
    at ``childvault upgrade``). Anyone else's ``user.add`` registers no one.
    """
    name, actor = detail.get("user"), obj.get("actor")
    if obj.get("outcome") != "ok" or not isinstance(name, str) or name in state.users:
        return
    try:
        check_user_name(name)
    except UsageError:
        return
    pending = PENDING in detail and (
        (isinstance(actor, str) and state.is_active(actor, "admin"))
        or (actor == name and name in state.unverified)
    )
    if not founded or pending:
        state.unverified.add(name)


def _check_actor(
    state: TrustState,
    runs: _audit.RunCheck,
    seq: int,
    actor: object,
    action: object,
    digest: bytes,
    sig: bytes | None,
    checked: Collection[tuple[bytes, bytes, bytes]] = (),
) -> int | None:
    """An entry in the name of a user with a verified registration must carry that
    user's signature over its hash, or be in a run of theirs that their signature
    closes (:class:`~childvault.vault._audit.RunCheck`): an insider cannot write in
    another's name. Returns the first entry refused, or None.

    Entries of names with no verified registration yet (the founding entry
    before the admin's registration, a pending officer) are not checked here
    (they end any open run).
    """
    user = state.users.get(actor) if isinstance(actor, str) else None
    if user is None or seq < user.key_from or not isinstance(actor, str):
        return runs.other()
    if sig is None:
        return runs.unsigned(seq, actor, user.sign_key, action)
    message = runs.message(seq, actor, user.sign_key, action, digest)
    # A triple in ``checked`` was verified already (replay's docstring).
    if (user.sign_key, message, sig) not in checked and not _verify_sig(
        user.sign_key, message, sig
    ):
        first = runs.end()  # a bad signature refuses the whole run it closes
        return seq if first is None else first
    return runs.signed(seq, actor, user.sign_key, action)


def _verify_sig(key: bytes, message: bytes, sig: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(key).verify(message, sig)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


def _apply_logged(stored: bytes | None, state: TrustState, seq: int, named: str, obj: Any) -> None:
    if stored is None:
        raise IntegrityError(_t("the signed statement of log entry {seq} is missing", seq=seq))
    envelope = Envelope.from_bytes(stored)
    if envelope.digest() != named:
        raise IntegrityError(_t("the signed statement of log entry {seq} was replaced", seq=seq))
    if obj.get("outcome") != "ok":
        raise IntegrityError(_t("log entry {seq} carries a statement but did not succeed", seq=seq))
    kind = envelope.statement().get("kind")
    if kind == "record.version":
        return  # checked against the record it signs, not trust state
    try:
        state.apply(envelope, seq=seq)
    except IntegrityError as exc:
        raise IntegrityError(
            _t("log entry {seq}: {problem}", seq=seq, problem=exc.args[0])
        ) from exc


#: Save a verifier's state once the replay past its saved point reaches this
#: many entries (a replay of them costs a few ms: hash, parse, one signature each).
_SAVE_AFTER = 64


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
    saved_at = None
    if start is not None:
        try:
            # A state just loaded is this call's own: replayed in place (a failed
            # replay leaves it to no one). The caller's ``known`` is replayed on a
            # copy, so a failure leaves it as it was.
            done = replay(db, start if known is None else _copy(start, anchor))
            saved_at = start.saved_at
        except IntegrityError:
            done = replay(db, Verified(TrustState.start(anchor), 0, None))
    else:
        done = replay(db, Verified(TrustState.start(anchor), 0, None))
    # Saving costs a signature and a committed transaction (an fsync); replaying a
    # few entries costs far less. Every command appends at least one entry, so
    # saving on every change would add a commit to every command (issue 18).
    if save and (saved_at is None or done.size - saved_at >= _SAVE_AFTER):
        save_state(db, verifier, anchor, done)
        saved_at = done.size
    done.saved_at = saved_at
    return done


def _copy(start: Verified, anchor: Anchor) -> Verified:
    # A failed replay must not leave a half-applied state behind. Member by
    # member (TrustState.copy, equal to the JSON round trip: pinned by
    # tests/test_trust_state_copy.py) when the anchor is the state's own: a
    # client syncs its trust on every operation, ~50 us a copy through JSON.
    if start.state.anchor == anchor:
        return Verified(start.state.copy(), start.size, start.head)
    return Verified(TrustState.from_bytes(start.state.to_bytes(), anchor), start.size, start.head)


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


def custodian_statement(vault_id: str, at: str, kind: str, **members: Any) -> dict[str, Any]:
    """A ``custodian.*`` statement."""
    return {"v": 1, "kind": kind, "vault": vault_id, "at": at, **members}


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


# -------------------------------------------------------------------- upgrade

#: ``meta`` key set by ``childvault upgrade`` on a vault made before signed statements.
UPGRADED = "trust_upgraded"


def is_upgraded(db: Backend) -> bool:
    """Whether the vault's log holds its founding registration (made by ``init`` since
    issue 12, at entry 1, or by ``childvault upgrade``)."""
    return db.meta.get(UPGRADED) == "1" or db.statements.get(1) is not None


def logged_anchor(db: Backend) -> Anchor | None:
    """The anchor the log's founding registration names (the first statement logged).

    Only a candidate: whoever adopts it confirms its fingerprint with the admin
    out of band, since an insider can write the database.
    """
    for raw in db.audit.entries_by_action(("user.add", "vault.upgrade")):
        obj = _audit.decode_entry(raw)
        detail = obj.get("detail", {})
        if obj.get("outcome") != "ok" or STATEMENT not in detail:
            continue
        stored = db.statements.get(int(obj["seq"]))
        if stored is None:
            return None
        statement = Envelope.from_bytes(stored).statement()
        if statement.get("kind") != "user.register":
            return None
        return Anchor(
            str(statement["vault"]),
            str(statement["user"]),
            bytes.fromhex(str(statement["sign_key"])),
        )
    return None


def check_legacy_log(db: Backend) -> None:
    """Before ``childvault upgrade`` signs anything for what exists: the log's hash
    chain holds from its first entry, and every ``users`` row is what a logged
    ``user add`` gave (an edited row is refused, not signed)."""
    probe = Anchor(str(db.meta.get("vault_id")), "probe", bytes(32))
    replay(db, Verified(TrustState.start(probe), 0, None))
    added, _ = logged_registrations(db.audit)
    for row in db.users.all():
        public = PublicIdentity(row.name, row.enc_key, row.sign_key)
        if added.get(row.name) != user_detail(row.name, row.roles, public):
            raise IntegrityError(
                _t(
                    "user {name!r} is registered with keys or roles that no logged `user add` "
                    "gave them: the users table was edited; nothing was upgraded",
                    name=row.name,
                )
            )
