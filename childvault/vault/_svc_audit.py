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

from childvault.keys import IntegrityError, PublicIdentity, StorageError
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
            witness_notes=_audit.read_witness(self.s.witness_path),
            resume=None if full else self._own_resume_point(),
        )
        cp = _note.Checkpoint(log_origin(self.s.vault_id), report.entries, report.root)
        note = _note.sign_note(
            cp.body(),
            signer_name(self.s.vault_id, self.s.user),
            self.s.me.sign,
            self.s.me.public.signing_key,
        )
        self.s.db.checkpoints.add(
            cp.size, cp.root, note, self.s.user, iso(moment), report.resume_state
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
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise StorageError(
                f"could not append the checkpoint to the witness file {path}: {exc.strerror}"
            ) from exc

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
            witness_notes=_audit.read_witness(self.s.witness_path),
            progress=progress,
        )
        self._verify_registrations()
        return report

    def _verify_registrations(self) -> None:
        added, custodians = logged_registrations(self.s.db.audit)
        for user in self.s.db.users.all():
            logged = added.get(user.name)
            if logged != user_detail(
                user.name, user.roles, PublicIdentity(user.name, user.enc_key, user.sign_key)
            ):
                raise IntegrityError(
                    f"audit log integrity failure: user {user.name!r} is registered with keys "
                    "or roles that no logged `user add` gave them (the users table was edited)"
                )
        if self.s.keys.custodial:
            for generation, public, _ in self.s.db.custodians.all():
                if public.hex() not in custodians.get(generation, set()):
                    raise IntegrityError(
                        "audit log integrity failure: custodian key generation "
                        f"{generation} was not created by a logged operation "
                        "(the custodians table was edited)"
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
