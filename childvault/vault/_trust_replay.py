"""Signed statements in the log, and the replay that verifies the trust state.

Every log entry naming a statement is checked against the envelope kept
beside it and applied to the trust state, in log order, with the hash chain
and each actor's signatures (docs/trust.md).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import nacl.exceptions
import nacl.signing

from childvault._i18n import _t
from childvault.keys import Identity, IntegrityError, UsageError, check_user_name
from childvault.vault import _audit
from childvault.vault._audit import DetailValue, Event
from childvault.vault._backend import Backend
from childvault.vault._merkle import leaf_hash
from childvault.vault._statements import Anchor, Envelope, TrustState
from childvault.vault._trust_saved import Verified, load_saved, save_state

# ------------------------------------------------- signed statements in the log

#: Detail member of a log entry carrying a trust statement: the envelope's SHA-256.
STATEMENT = "statement"
#: Detail member of a ``user.add`` entry whose officer registration still waits
#: for an existing officer's countersignature (given at ``keys share``); it is
#: not applied until a ``user.countersign`` entry carries the countersigned one.
PENDING = "pending_statement"


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
