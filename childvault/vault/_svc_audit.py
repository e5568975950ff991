"""The audit service: checkpoints, witnessing, verification and reading the log."""

from __future__ import annotations

import contextlib
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from childvault._i18n import _t
from childvault.keys import IntegrityError, PublicIdentity, StorageError, UsageError
from childvault.vault import _audit, _note
from childvault.vault._audit import Event, VerifyReport
from childvault.vault._backend import BackendLog
from childvault.vault._registrations import logged_registrations, user_detail
from childvault.vault._session import Session, log_origin, signer_name
from childvault.vault._time import iso, parse_iso


@dataclass
class Signed:
    """The checkpoint note signed at the end of a :meth:`AuditService.signed` transaction."""

    note: str = ""


class AuditService:
    """Sign, witness and verify the log; read it (officers and admins)."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def sign_checkpoint(self, moment: datetime, *, full: bool = True) -> str:
        """Sign the current log root as the acting user; store it (inside a write).

        The log is verified first (hashes, chain, every stored and witnessed
        checkpoint), so a signature never blesses a log an insider rewrote or
        truncated. With ``full=False`` (approvals) the check resumes from the
        acting user's own latest checkpoint: the entries it covers are fixed
        by that signature, so only the newer ones are read and the cost of an
        approval does not grow with the log (docs/decisions.md).
        """
        report = _audit.verify(
            BackendLog(self.s.db),
            origin=log_origin(self.s.vault_id),
            signers=self.s.signers(),
            witness_notes=self._witness_notes(),
            resume=None if full else self._own_resume_point(),
        )
        cp = _note.Checkpoint(log_origin(self.s.vault_id), report.entries, report.root)
        note = _note.sign_note(
            cp.body(),
            signer_name(self.s.vault_id, self.s.user),
            self.s.me.sign,
            self.s.me.public.signing_key,
        )
        # Compare-and-set: inside one transaction the log cannot move, but a
        # backend that verifies elsewhere (a server) must refuse a stale head.
        stored = self.s.db.checkpoints.add_at_head(
            cp.size, cp.root, note, self.s.user, iso(moment), report.resume_state
        )
        if stored is None:
            raise IntegrityError(
                _t(
                    "the audit log changed while its checkpoint was being signed; nothing was "
                    "stored: try again"
                )
            )
        return note

    def _own_resume_point(self) -> _audit.Resume | None:
        """Where the acting user's latest checkpoint left the log, if it holds up.

        The signature is checked with the unlocked identity's own key (not a
        key from the database, which an insider could edit), and the stored
        Merkle state must give the signed root. Anything else: ``None``, and
        the caller verifies the whole log.
        """
        found = self.s.db.checkpoints.latest_by(self.s.user)
        if found is None:
            return None
        note, state = found
        name = signer_name(self.s.vault_id, self.s.user)
        try:
            cp, _ = _note.verify_note(note, {name: self.s.me.public.signing_key})
        except IntegrityError:
            return None
        if cp.origin != log_origin(self.s.vault_id):
            return None
        return _audit.Resume.from_state(cp.size, state, cp.root)

    def witness(self, note: str) -> None:
        path = self.s.witness_path
        line = json.dumps({"note": note}, ensure_ascii=False) + "\n"
        try:
            # Created private like every other file of the vault (0600).
            # O_NOFOLLOW: a symlink planted at the witness path is refused.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise StorageError(
                _t(
                    "could not append the checkpoint to the witness file {path}: {strerror}",
                    path=path,
                    strerror=exc.strerror,
                )
            ) from exc
        # Remember how far the witness is known to reach, so a witness later
        # replaced by an older copy or cut short is noticed (verify_audit). Only
        # after a successful append: a failed one (fail closed) raises above.
        size = _note_size(note)
        if size is not None:
            with self.s.db.transaction():
                known = int(self.s.db.meta.get(WITNESSED_SIZE_KEY) or 0)
                if size > known:
                    self.s.db.meta.set(WITNESSED_SIZE_KEY, str(size))

    @contextlib.contextmanager
    def signed(self, moment: datetime, *, full: bool = True) -> Iterator[Signed]:
        """A transaction whose writes a checkpoint signed at its end covers.

        The caller's writes and log entries, the checkpoint row and its
        signature commit together or not at all; the caller appends the note
        to the witness file (:meth:`witness`) after the commit, and fails
        closed if that fails. ``full=False``: see :meth:`sign_checkpoint`.
        """
        signed = Signed()
        with self.s.db.transaction():
            yield signed
            signed.note = self.sign_checkpoint(moment, full=full)

    def checkpoint(self, *, now: datetime | None = None) -> str:
        """Officer or admin: sign a checkpoint of the whole log and witness it."""
        moment = self.s.now(now)
        self.s.require(("officer", "admin"), "audit.checkpoint", moment, "signing checkpoints")
        with self.signed(moment) as signed:
            _audit.append(self.s.db.audit, [Event(self.s.user, "audit.checkpoint")], moment)
        self.witness(signed.note)
        return signed.note

    def verify_audit(self, *, progress: Callable[[int], None] | None = None) -> VerifyReport:
        """Verify the whole log against its stored and witnessed checkpoints, then
        check that every registered user and custodian key was put there by a
        logged operation (an insider editing those tables directly is caught)."""
        report = _audit.verify(
            BackendLog(self.s.db),
            origin=log_origin(self.s.vault_id),
            signers=self.s.signers(),
            witness_notes=self._witness_notes(),
            progress=progress,
        )
        self._check_witness_kept()
        self._verify_registrations()
        self.s.verify_trust_from_anchor()  # signed statements and actor signatures (issue 12)
        return report

    def _witness_notes(self) -> list[str]:
        """The witness notes that still bind the log (see :func:`effective_witness`)."""
        return effective_witness(
            _audit.read_witness(self.s.witness_path), self.s.signers(), log_origin(self.s.vault_id)
        )

    def _check_witness_kept(self) -> None:
        """Fail loudly when the database holds checkpoints the witness lacks.

        Stored checkpoints mean the witness was written; a witness that is
        missing or empty, or ends before the largest size it is known to have
        reached (remembered after each successful append), was moved aside,
        replaced or truncated: truncation detection would silently be off. (A
        checkpoint whose append failed is not counted: that failure was loud.)
        """
        stored = self.s.db.checkpoints.all()
        if not stored:
            return
        path = self.s.witness_path
        sizes = [_note_size(n) for n in _audit.read_witness(path)]
        if not sizes:
            raise IntegrityError(
                _t(
                    "the witness file {path} is missing or empty but the database holds {n} "
                    "signed checkpoint(s): put the witness back (from its other media or "
                    "backup); truncation of the log cannot be detected without it",
                    path=path,
                    n=len(stored),
                )
            )
        reached = int(self.s.db.meta.get(WITNESSED_SIZE_KEY) or 0)
        if max(size or 0 for size in sizes) < reached:
            raise IntegrityError(
                _t(
                    "the witness file {path} is shorter than before: it once held a checkpoint "
                    "of {reached} entries and now ends before it (replaced with an older copy "
                    "or truncated): put the current witness back",
                    path=path,
                    reached=reached,
                )
            )

    def rebaseline(self, *, now: datetime | None = None) -> dict[str, Any]:
        """Officer: accept a restored backup whose log is behind the witness.

        The restore point is the largest witnessed checkpoint the log still
        matches (entries appended since the restore may differ from the lost
        ones); the log must verify against every witnessed checkpoint up to it.
        A signed checkpoint of that point, with an extension line saying which
        witnessed entries were lost, is appended to the witness; from then on
        the witnessed checkpoints of the lost, larger trees no longer bind the
        log, so approvals resume, while the note keeps the loss visible in the
        witness forever.
        """
        moment = self.s.now(now)
        self.s.require(("officer",), "audit.rebaseline", moment, "rebaselining the log")
        origin = log_origin(self.s.vault_id)
        notes = self._witness_notes()
        if not notes:
            raise UsageError(
                _t(
                    "the witness file {witness_path} is missing or empty: nothing to rebaseline"
                    " against (put it back first)",
                    witness_path=self.s.witness_path,
                )
            )
        sizes = [_note_size(n) for n in notes]
        witnessed = max(size or 0 for size in sizes)
        n = self.s.db.audit.head()[0]
        signers = self.s.signers()
        roots: dict[int, bytes] = {}
        for note in notes:
            with contextlib.suppress(IntegrityError):
                cp0, _ = _note.verify_note(note, signers)
                roots.setdefault(cp0.size, cp0.root)
        # The restore point: the largest witnessed size the log still matches.
        # Commands run since the restore may have appended entries that differ
        # from the lost ones, so the current size is not it. Matching is
        # monotone (a log that matches at size s matches every smaller size):
        # binary search, one verification per step.
        candidates = sorted(size for size in roots if size <= n)

        def matches(size: int) -> bool:
            try:
                _audit.verify(
                    BackendLog(self.s.db),
                    origin=origin,
                    signers=signers,
                    witness_notes=[
                        note
                        for note, sz in zip(notes, sizes, strict=True)
                        if sz is not None and sz <= size
                    ],
                )
            except IntegrityError:
                return False
            return True

        lo, hi = 0, len(candidates)
        while lo < hi:
            mid = (lo + hi) // 2
            if matches(candidates[mid]):
                lo = mid + 1
            else:
                hi = mid
        if lo == 0:
            # Run once more to report why: the log itself, or even the oldest
            # witnessed checkpoint, does not hold up. Not a restore of this log.
            _audit.verify(BackendLog(self.s.db), origin=origin, signers=signers)
            raise IntegrityError(
                _t(
                    "the log matches no witnessed checkpoint: it is not a backup of this "
                    "vault's log; nothing was changed"
                )
            )
        kept = candidates[lo - 1]
        if witnessed <= kept:
            raise UsageError(
                _t(
                    "the log matches the witness to its end ({witnessed} entries): nothing was "
                    "lost, no rebaseline needed",
                    witnessed=witnessed,
                )
            )
        lost = f"{RESTORE_EXTENSION} witnessed entries {kept} to {witnessed - 1} lost"
        cp = _note.Checkpoint(
            origin, kept, roots[kept], (lost, f"by {self.s.user}", f"at {iso(moment)}")
        )
        note = _note.sign_note(
            cp.body(),
            signer_name(self.s.vault_id, self.s.user),
            self.s.me.sign,
            self.s.me.public.signing_key,
        )
        self.witness(note)
        detail = {
            "restored_at": str(kept),
            "lost_from": str(kept),
            "lost_to": str(witnessed - 1),
        }
        with self.signed(moment) as signed:
            _audit.append(
                self.s.db.audit, [Event(self.s.user, "audit.rebaseline", detail=detail)], moment
            )
        self.witness(signed.note)
        return {"restored_at": kept, "lost_from": kept, "lost_to": witnessed - 1, "note": note}

    def _verify_registrations(self) -> None:
        added, custodians = logged_registrations(self.s.db.audit)
        for user in self.s.db.users.all():
            logged = added.get(user.name)
            if logged != user_detail(
                user.name, user.roles, PublicIdentity(user.name, user.enc_key, user.sign_key)
            ):
                raise IntegrityError(
                    _t(
                        "audit log integrity failure: user {name!r} is registered with keys or "
                        "roles that no logged `user add` gave them (the users table was edited)",
                        name=user.name,
                    )
                )
        if self.s.keys.custodial:
            for generation, public, _ in self.s.db.custodians.all():
                if public.hex() not in custodians.get(generation, set()):
                    raise IntegrityError(
                        _t(
                            "audit log integrity failure: custodian key generation {generation}"
                            " was not created by a logged operation (the custodians table was "
                            "edited)",
                            generation=generation,
                        )
                    )

    def audit_entries(self, *, record: str | None = None) -> Iterator[dict[str, Any]]:
        """Officer or admin: the log entries (optionally about one record), with hashes."""
        self.s.require(
            ("officer", "admin"), "audit.read", self.s.now(None), "reading the audit log"
        )
        for _, entry, digest in self.s.db.audit.entries():
            obj = _audit.decode_entry(entry)
            if record is not None and record not in obj.get("records", ()):
                continue
            yield {"entry": obj, "hash": digest.hex()}

    def signer_vkeys(self) -> list[str]:
        """Verifier keys (signed-note vkey form) of every checkpoint signer."""
        return [_note.vkey(name, key) for name, key in sorted(self.s.signers().items())]


#: Meta key: the largest tree size the witness is known to have reached.
WITNESSED_SIZE_KEY = "witnessed_size"

#: First word of the extension line of a restore note (``audit rebaseline``).
RESTORE_EXTENSION = "childvault-restore:"


def _note_size(note: str) -> int | None:
    """The tree size a note claims (unverified), or None if it is not a checkpoint."""
    try:
        body, _ = _note.parse_note(note)
        return _note.Checkpoint.parse_body(body).size
    except IntegrityError:
        return None


def effective_witness(notes: list[str], signers: dict[str, bytes], origin: str) -> list[str]:
    """The witness notes that still bind the log, in order.

    A restore note (a checkpoint of size N signed by a checkpoint signer of
    this vault, with a :data:`RESTORE_EXTENSION` line) retires the notes before
    it that cover more than N entries: those entries were lost with the
    restore, and the restore note itself records which. Every other note is
    kept; notes that do not verify are kept so verification names them.
    """
    kept: list[tuple[int | None, str]] = []
    for note in notes:
        try:
            cp, _ = _note.verify_note(note, signers)
        except IntegrityError:
            kept.append((None, note))
            continue
        if cp.origin == origin and any(e.startswith(RESTORE_EXTENSION) for e in cp.extensions):
            kept = [(size, n) for size, n in kept if size is None or size <= cp.size]
        kept.append((cp.size, note))
    return [n for _, n in kept]


def select_entries(
    entries: Iterable[dict[str, Any]],
    *,
    user: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    tail: int | None = None,
) -> list[dict[str, Any]]:
    """The ``{"entry", "hash"}`` items of :meth:`AuditService.audit_entries` that match.

    ``user`` is the actor; ``action`` an action name (``grant.read``) or a
    prefix ending in a dot (``request.``); ``since`` inclusive, ``until``
    exclusive; ``tail`` keeps only the last N matches (memory bounded by N).
    """
    kept: deque[dict[str, Any]] | list[dict[str, Any]] = (
        deque(maxlen=tail) if tail is not None else []
    )
    for item in entries:
        e = item["entry"]
        if user is not None and e.get("actor") != user:
            continue
        if action is not None:
            name = str(e.get("action", ""))
            if not (name == action or (action.endswith(".") and name.startswith(action))):
                continue
        if since is not None or until is not None:
            moment = parse_iso(str(e.get("ts")))
            if since is not None and moment < since:
                continue
            if until is not None and moment >= until:
                continue
        kept.append(item)
    return list(kept)
