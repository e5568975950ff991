"""The audit service: checkpoints, witnessing, verification and reading the log.

The witness file itself (appending, read heads, the remembered reach) is
:mod:`._svc_witness`; its names are imported back here for existing callers.
"""

from __future__ import annotations

import contextlib
import json
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
from childvault.vault._registrations import load_tree, logged_registrations, save_tree, user_detail
from childvault.vault._session import Session, log_origin, signer_name
from childvault.vault._svc_witness import RESTORE_EXTENSION as RESTORE_EXTENSION
from childvault.vault._svc_witness import WITNESSED_HEAD_KEY as WITNESSED_HEAD_KEY
from childvault.vault._svc_witness import WITNESSED_SIZE_KEY as WITNESSED_SIZE_KEY
from childvault.vault._svc_witness import WitnessFile, _head_size, _note_size, _witnessed_row
from childvault.vault._svc_witness import _head_message as _head_message
from childvault.vault._svc_witness import effective_witness as effective_witness
from childvault.vault._time import iso, parse_iso


@dataclass
class Signed:
    """The checkpoint note signed at the end of a :meth:`AuditService.signed` transaction."""

    note: str = ""


class AuditService:
    """Sign, witness and verify the log; read it (officers and admins)."""

    def __init__(self, session: Session) -> None:
        self.s = session
        #: The note of the last :meth:`signed` transaction that committed its own
        #: witness reach (server mode): :meth:`witness` does not raise it again.
        self._reach_committed: str | None = None
        self._file = WitnessFile(session)

    def sign_checkpoint(self, moment: datetime, *, full: bool = True) -> str:
        """Sign the current log root as the acting user; store it (inside a write).

        The log is verified first (hashes, chain, every stored and witnessed
        checkpoint), so a signature never blesses a log an insider rewrote or
        truncated. With ``full=False`` (approvals) the check resumes from the
        acting user's own latest checkpoint: the entries it covers are fixed
        by that signature, so only the newer ones are read and the cost of an
        approval does not grow with the log (docs/decisions.md).
        """
        resume = None if full else self._own_resume_point()
        # Resumed, the checkpoints of smaller trees would only get their
        # signatures checked: neither the stored nor the witnessed ones are
        # read (docs/decisions.md "An approval reads only the checkpoints that
        # bind it"); `audit verify` and `doctor` still check every one.
        report = _audit.verify(
            BackendLog(self.s.db),
            origin=log_origin(self.s.vault_id),
            signers=self.s.signers(),
            witness_notes=self._file.witness_notes(since=resume.size if resume is not None else 0),
            resume=resume,
        )
        self._file.check_read_heads(report.checked_from)
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
        """Append a signed checkpoint note to the witness file (fails closed).

        Over a server whose HTTP witness did not cosign the checkpoint the
        commit just stored, this raises :class:`StorageError` instead: the
        caller's fail-closed path runs as for a witness file it cannot write.
        """
        take = getattr(self.s.db, "take_witness_failure", None)
        failure = take() if take is not None else None
        if failure is not None:
            raise StorageError(
                _t(
                    "the checkpoint was stored but the witness did not cosign it: {reason}",
                    reason=failure,
                )
            )
        self._file.append_witness(json.dumps({"note": note}, ensure_ascii=False) + "\n")
        # Remember how far the witness is known to reach, so a witness later
        # replaced by an older copy or cut short is noticed (verify_audit). Only
        # after a successful append: a failed one (fail closed) raises above.
        size = _note_size(note)
        committed, self._reach_committed = self._reach_committed, None
        if size is not None and note != committed:
            self._file.remember_witnessed(WITNESSED_SIZE_KEY, size)

    def witness_read(self, moment: datetime) -> None:
        """Append a read head to the witness before a read decrypts
        (:meth:`WitnessFile.witness_read`; fails closed)."""
        self._file.witness_read(moment)

    @contextlib.contextmanager
    def signed(self, moment: datetime, *, full: bool = True) -> Iterator[Signed]:
        """A transaction whose writes a checkpoint signed at its end covers.

        The caller's writes and log entries, the checkpoint row and its
        signature commit together or not at all; the caller appends the note
        to the witness file (:meth:`witness`) after the commit, and fails
        closed if that fails. ``full=False``: see :meth:`sign_checkpoint`.
        """
        signed = Signed()
        self._reach_committed = None
        by_server = bool(getattr(self.s.db, "witnessed_by_server", False))
        with self.s.db.transaction():
            yield signed
            signed.note = self.sign_checkpoint(moment, full=full)
            size = _note_size(signed.note)
            if by_server and size is not None:
                # A server appends the note to its witness before it answers this
                # commit (and the client fails closed if it could not): the reach
                # is raised in the same commit, not in a transaction of its own
                # after it (docs/server.md "Approvals and checkpoints").
                self._file.remember_witnessed(WITNESSED_SIZE_KEY, size, key_of=self._file.known_key)
        if by_server:
            self._reach_committed = signed.note

    def checkpoint(self, *, now: datetime | None = None) -> str:
        """Officer or admin: sign a checkpoint of the whole log and witness it."""
        moment = self.s.now(now)
        self.s.require(("officer", "admin"), "audit.checkpoint", moment, _t("signing checkpoints"))
        with self.signed(moment) as signed:
            _audit.append(self.s.db.audit, [Event(self.s.user, "audit.checkpoint")], moment)
        self.witness(signed.note)
        # The append re-signed the checkpoint reach; a read-head reach row that
        # does not verify (written before these rows were signed, or edited)
        # is re-signed from the witness's own read heads, each verified first.
        raw = self.s.db.meta.get(WITNESSED_HEAD_KEY)
        if not isinstance(
            _witnessed_row(raw, WITNESSED_HEAD_KEY, self.s.vault_id, self._file.head_key), int
        ):
            self._file.remember_witnessed(WITNESSED_HEAD_KEY, self._file.check_read_heads())
        return signed.note

    def verify_audit(
        self, *, progress: Callable[[int], None] | None = None, full: bool = False
    ) -> VerifyReport:
        """Verify the whole log against its stored and witnessed checkpoints, then
        check that every registered user and custodian key was put there by a
        logged operation (an insider editing those tables directly is caught).

        The hash chain, every link and every checkpoint are always checked from
        the first entry. The signed statements and each entry's actor signature
        are checked from the acting user's own signed "verified up to entry N,
        hash H" state on (the state every command keeps, ``trust_states``):
        the chain just checked ends in H at N only if entries 0..N-1 are the
        very bytes that user verified before (docs/decisions.md). ``full``:
        ignore that state and check every signature from the anchor.

        The Merkle tree of the prefix this user verified last time is not
        rebuilt: its frontier is kept in the user's own signed known tree
        (``_registrations.save_tree``), used when it ends in the same entry and
        that prefix's checkpoints are the ones compared with it then (``full``
        rebuilds it too).
        """
        known = None if full else self.s.verified_point()
        # The known tree is a local speed-up: a server keeps only the trust
        # states its allow-list names (NAME, NAME#records), so a client of one
        # builds the whole tree as before.
        keeps_tree = self.s.anchor is not None and not getattr(
            self.s.db, "witnessed_by_server", False
        )
        tree = None
        if not full and keeps_tree and self.s.anchor is not None:
            tree = load_tree(self.s.db, self.s.me, self.s.anchor)
        try:
            report = self._verify_chain(progress, known, tree)
        except _audit.KnownPrefixMismatch:
            # The log no longer ends that prefix in the hash this user verified
            # (a restore, or tampering): every entry gets every check.
            full = True
            report = self._verify_chain(progress, None)
        self._file.check_witness_kept()
        self._file.check_read_heads()
        self._verify_registrations()
        if full:
            self.s.verify_trust_from_anchor()  # statements and actor signatures (issue 12)
        else:
            # Resumed from this user's own signed state (checked against the
            # chain verified above), and saved again for the next run.
            self.s.trust(save=False)
        try:
            if not full:
                self.s.save_trust()
            if (
                keeps_tree
                and self.s.anchor is not None
                and (
                    tree is None
                    or report.entries - tree.size >= _TREE_SAVE_AFTER
                    or report.checked != tree.checked
                )
            ):
                # Saved only once the log or its checkpoints moved on: a signature
                # and a commit cost more than folding a few entries again.
                save_tree(self.s.db, self.s.me, self.s.anchor, report)
        except StorageError:
            # Both saves only spare the next run work; verifying writes nothing
            # else, so it still answers on a full disk (a full-disk regression
            # in tests/reliability/test_storage_faults.py).
            pass
        return report

    def _verify_chain(
        self,
        progress: Callable[[int], None] | None,
        known: tuple[int, bytes] | None,
        tree: _audit.KnownTree | None = None,
    ) -> VerifyReport:
        """:func:`_audit.verify` of this vault's log, its checkpoints and witness."""
        return _audit.verify(
            BackendLog(self.s.db),
            origin=log_origin(self.s.vault_id),
            signers=self.s.signers(),
            witness_notes=self._file.witness_notes(),
            progress=progress,
            known=known,
            tree=tree,
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
        self.s.require(("officer",), "audit.rebaseline", moment, _t("rebaselining the log"))
        origin = log_origin(self.s.vault_id)
        notes = self._file.witness_notes()
        if not notes:
            raise UsageError(
                _t(
                    "the witness file {witness_path} is missing or empty: nothing to rebaseline"
                    " against (put it back first)",
                    witness_path=self.s.witness_path,
                )
            )
        sizes = [_note_size(n) for n in notes]
        witnessed = max(
            max(size or 0 for size in sizes),
            max((_head_size(h) for h in self._file.read_heads()), default=0),
        )
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
            ("officer", "admin"), "audit.read", self.s.now(None), _t("reading the audit log")
        )
        for _, entry, digest in self.s.db.audit.entries():
            obj = _audit.decode_entry(entry)
            if record is not None and record not in obj.get("records", ()):
                continue
            yield {"entry": obj, "hash": digest.hex()}

    def verify_cosignatures(self, witness_keys: Iterable[str]) -> dict[str, int]:
        """Check the witnesses' cosignatures on the witness file's notes.

        ``witness_keys`` are the witnesses' verifier keys, given by the auditor
        (out of band, like the anchor): keys read from the vault could be
        swapped by an insider. Every note must verify (a forged cosignature by
        a given witness key fails it), and at least one note must be cosigned
        by every given witness. Returns how many notes are cosigned by all of
        them and the largest tree size so cosigned. Raises
        :class:`IntegrityError` otherwise, :class:`UsageError` for a bad key.
        """
        witnesses: dict[str, bytes] = {}
        for text in witness_keys:
            try:
                name, public = _note.parse_vkey(text)
            except IntegrityError as exc:
                raise UsageError(_t("invalid witness key: {error}", error=exc.args[0])) from exc
            witnesses[name] = public
        signers = self.s.signers()
        if not witnesses or set(witnesses) & set(signers):
            raise UsageError(_t("give witness keys whose names are not checkpoint signers' names"))
        known = {**signers, **witnesses}
        cosigned, largest = 0, 0
        for number, note in enumerate(self._file.witness_notes(), start=1):
            try:
                body, names = _note.open_note(note, known)
            except IntegrityError as exc:
                raise IntegrityError(
                    _t(
                        "witness checkpoint {number} does not verify: {error}",
                        number=number,
                        # The inner Message, so it is translated too.
                        error=exc.args[0],
                    )
                ) from exc
            if all(w in names for w in witnesses):
                cosigned += 1
                largest = max(largest, _note.Checkpoint.parse_body(body).size)
        if not cosigned:
            raise IntegrityError(
                _t("no checkpoint in the witness file is cosigned by the given witness keys")
            )
        return {"cosigned": cosigned, "cosigned_size": largest}

    def signer_vkeys(self) -> list[str]:
        """Verifier keys (signed-note vkey form) of every checkpoint signer."""
        return [_note.vkey(name, key) for name, key in sorted(self.s.signers().items())]


#: Save the verifier's known tree again once the log grew by this many entries
#: since the one used (as the trust state: ``_trust_replay._SAVE_AFTER``).
_TREE_SAVE_AFTER = 64


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
