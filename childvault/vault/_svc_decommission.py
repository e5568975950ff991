"""Decommissioning (P-23): an officer's co-signature over exactly the live records,
which first writes the guardian contact list sealed to that officer; the admin's
run that stops collection, shreds every record and signs a final checkpoint; and
the co-signing officer's opening of the contact list, also after the shredding.

Split from :mod:`childvault.vault._svc_lifecycle` (whose deletion it uses) to keep
modules small; :class:`~childvault.vault._svc_lifecycle.LifecycleService` delegates.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from childvault._i18n import _t
from childvault.keys import (
    DecryptionFailed,
    KeySlots,
    PublicIdentity,
    UsageError,
)
from childvault.keys._files import atomic_write
from childvault.vault import _audit
from childvault.vault._action_roles import logged_by_role
from childvault.vault._audit import Event
from childvault.vault._backend import RecordRow
from childvault.vault._session import Session
from childvault.vault._svc_audit import AuditService
from childvault.vault._time import iso

__all__ = ["DecommissionService"]

_PAGE = 500

#: The fields the guardian contact list of a decommissioning holds (P-23).
_CONTACT_FIELDS = ("name", "guardian_name", "guardian_phone")


class _Lifecycle(Protocol):
    """What decommissioning uses of the lifecycle service (which it is split from)."""

    s: Session

    @property
    def audit(self) -> AuditService: ...

    def delete_rows(
        self, record_ids: Sequence[str], reason: str, category: str, moment: datetime
    ) -> None: ...

    def destroy_keys(self, record_ids: Sequence[str]) -> None: ...

    def internal_values(
        self, rows: Sequence[RecordRow], fields: Sequence[str], grant_id: str
    ) -> dict[str, dict[str, str]]: ...


class DecommissionService:
    """Decommissioning a vault (admin, with an officer's co-signature)."""

    def __init__(self, lifecycle: _Lifecycle) -> None:
        """Operate with ``lifecycle``'s session, audit service and deletion."""
        self._lc = lifecycle
        self.s = lifecycle.s
        self._audit = lifecycle.audit

    def decommission(self, *, confirm: bool, now: datetime | None = None) -> dict[str, Any]:
        """Admin: stop collection, shred every record, sign a final checkpoint (P-23).

        Needs an officer's co-signature first (:meth:`cosign_decommission`,
        which also writes the guardian contact list for the P-23 notice).
        Writes ``decommission-report.json`` into the home (no child data).
        """
        moment = self.s.now(now)
        self.s.require(("admin",), "vault.decommission", moment, _t("decommissioning"))
        if not confirm:
            raise UsageError(_t("decommissioning destroys every record: pass --confirm"))
        if self.s.keys.custodial and getattr(self.s.db, "witnessed_by_server", False):
            # It ends by removing the custodian key from every key slot and the
            # database, which the server allows no remote caller: refuse before
            # anything is shredded rather than fail half done.
            self.s.deny(
                Event(
                    self.s.user,
                    "vault.decommission",
                    "denied",
                    detail={"reason": "remote_local_provider"},
                ),
                _t(
                    "a vault with the local key provider is decommissioned on the server "
                    "machine, with `childvault decommission` run there against the vault's "
                    "home (docs/operators.md), not through the server"
                ),
                moment,
            )
        cosign = self._decommission_cosigner()
        if cosign is None:
            self.s.deny(
                Event(self.s.user, "vault.decommission", "denied", detail={"reason": "cosign"}),
                _t(
                    "decommissioning needs an officer's co-signature first: an officer runs "
                    "`childvault decommission --cosign --contacts FILE`, which also writes the "
                    "guardian contact list for the notice (P-23)"
                ),
                moment,
            )
        cosigner, covered = cosign
        if cosigner == self.s.user:
            # Two people, not two roles: a user holding officer and admin would
            # otherwise destroy every record alone (issue 15 finding 6).
            self.s.deny(
                Event(
                    self.s.user, "vault.decommission", "denied", detail={"reason": "self_cosign"}
                ),
                _t(
                    "the officer who co-signs decommissioning cannot be the admin who runs it: "
                    "another officer co-signs"
                ),
                moment,
            )
        stale = False
        try:
            with self.s.db.transaction():
                # Collection stops first, then the digest is checked, in one
                # transaction: every insert reads this row in its own transaction
                # (``records.insert``) and writers are serialised, so an insert
                # either committed before (and is in the digest) or sees "0" and
                # is refused. Every record shredded is one the guardian contact
                # list holds (compliance gap 8, closed).
                self.s.db.meta.set("accepting_records", "0")
                if self._live_records_digest() != covered:
                    raise _StaleCosign
                _audit.append(
                    self.s.db.audit,
                    [Event(self.s.user, "vault.decommission", detail={"phase": "start"})],
                    moment,
                )
        except _StaleCosign:
            stale = True  # rolled back: the vault still accepts records
        if stale:
            self.s.deny(
                Event(
                    self.s.user, "vault.decommission", "denied", detail={"reason": "stale_cosign"}
                ),
                _t(
                    "records were added, changed or deleted after the officer's co-signature, so "
                    "its guardian contact list is out of date: an officer co-signs again"
                ),
                moment,
            )
        shredded = 0
        while True:
            page = [r.id for r in self.s.db.records.page(limit=_PAGE)]
            if not page:
                break
            self._lc.delete_rows(page, "institution decommissioned", "decommission", moment)
            self._lc.destroy_keys(page)
            shredded += len(page)
        pending = self.s.db.records.pending_shreds()
        self._lc.destroy_keys(pending)
        if self.s.keys.custodial:
            self._destroy_custodian()
        with self._audit.signed(moment) as signed:
            _audit.append(
                self.s.db.audit,
                [
                    Event(
                        self.s.user,
                        "vault.decommission",
                        detail={"phase": "done", "shredded": shredded},
                    )
                ],
                moment,
            )
        note = signed.note
        self._audit.witness(note)
        report = {
            "ok": True,
            "vault_id": self.s.vault_id,
            "decommissioned_at": iso(moment),
            "by": self.s.user,
            "records_shredded": shredded,
            "records_remaining": self.s.db.records.count(),
            "final_checkpoint": note,
            "witness": str(self.s.config.witness_path(self.s.home)),
        }

        atomic_write(
            self.s.home.path / "decommission-report.json",
            json.dumps(report, indent=2, ensure_ascii=False).encode() + b"\n",
        )
        return report

    # -- decommissioning: the officer's co-signature (issue 15 finding 6) ------

    def cosign_decommission(self, contacts: Path, *, now: datetime | None = None) -> dict[str, Any]:
        """Officer: co-sign decommissioning and first write the guardian contact list.

        The list (record id, name, guardian's name and phone of every live
        record) is what the P-23 notice to the guardians needs, and
        decommissioning destroys it; it is written to ``contacts`` (mode 0600)
        sealed to this officer's own key, so only they can open it. Every
        batch is logged before it is decrypted; the final entry (``phase``
        ``cosign``) is the co-signature the admin's ``decommission`` requires
        and carries the SHA-256 of the sealed file.
        """
        moment = self.s.now(now)
        self.s.require(("officer",), "vault.decommission", moment, _t("co-signing decommissioning"))
        if not contacts.parent.is_dir():
            raise UsageError(
                _t(
                    "the directory of --contacts ({parent}) does not exist",
                    parent=str(contacts.parent),
                )
            )
        fields = [
            f for f in _CONTACT_FIELDS if any(f in t.fields for t in self.s.schema.types.values())
        ]
        rows: list[dict[str, str]] = []
        covered = self._live_records_digest()
        after = ""
        while page := self.s.db.records.page(after=after, limit=50):
            after = page[-1].id
            live = [r for r in page if self.s.db.records.keyblob(r.id) is not None]
            if not live:
                continue
            grant_id = hashlib.sha256(f"contacts|{after}|{iso(moment)}".encode()).hexdigest()[:32]
            self.s.log(
                [
                    Event(
                        self.s.user,
                        "vault.decommission",
                        records=[r.id for r in live],
                        fields=fields,
                        detail={"phase": "contacts"},
                    )
                ],
                moment,
            )
            values = self._lc.internal_values(live, fields, grant_id)
            rows.extend({"record_id": rid, **vals} for rid, vals in values.items())
        sealed = self.s.me.public.seal(
            json.dumps({"vault_id": self.s.vault_id, "contacts": rows}, ensure_ascii=False).encode()
        )
        atomic_write(contacts, sealed, mode=0o600)
        digest = hashlib.sha256(sealed).hexdigest()
        self.s.log(
            [
                Event(
                    self.s.user,
                    "vault.decommission",
                    detail={
                        "phase": "cosign",
                        "contacts_sha256": digest,
                        "records": len(rows),
                        "records_sha256": covered,
                    },
                )
            ],
            moment,
        )
        return {"ok": True, "contacts": str(contacts), "records": len(rows), "sha256": digest}

    def open_decommission_contacts(
        self, path: Path, *, out: Path | None = None, now: datetime | None = None
    ) -> dict[str, Any]:
        """Officer: open the guardian contact list :meth:`cosign_decommission` sealed
        to them (P-23, compliance gap 9), for the notice to the families.

        The file must be the one the counted co-signature logged (its SHA-256,
        by the acting officer, in the verified log: :meth:`_covering_cosign`),
        open with the officer's own key and name this vault; whatever fails
        (another vault's list, an edited or older file, another officer's) is
        one refusal, logged. Needs only the officer's identity, not the
        custodian key, so it works after decommissioning destroyed that.
        The opening is logged before the rows are returned or written;
        ``out`` gets them as CSV (mode 0600, created, never overwritten).
        """
        moment = self.s.now(now)
        self.s.require(
            ("officer",), "decommission.read_contacts", moment, _t("opening the contact list")
        )
        if out is not None and not out.parent.is_dir():
            raise UsageError(_t("the directory of --out ({dir}) does not exist", dir=out.parent))
        if out is not None and (out.exists() or out.is_symlink()):
            raise UsageError(_t("{path} exists: choose a new file for the contact list", path=out))
        try:
            sealed = path.read_bytes()
        except OSError:
            sealed = b""
        digest = hashlib.sha256(sealed).hexdigest()
        covering = self._covering_cosign()
        rows: list[dict[str, str]] | None = None
        if covering == (self.s.user, digest):
            rows = self._contact_rows(sealed)
        if rows is None:
            # One refusal for every cause, so the error says nothing about the file.
            self.s.deny(
                Event(
                    self.s.user,
                    "decommission.read_contacts",
                    "denied",
                    detail={"reason": "not_covered", "sha256": digest},
                ),
                _t(
                    "{path} is not the guardian contact list of this vault's co-signed "
                    "decommissioning sealed to you",
                    path=str(path),
                ),
                moment,
            )
        fd = None
        try:
            if out is not None:
                # Created here, exclusively: a file made meanwhile is refused, not replaced.
                fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            self.s.log(
                [
                    Event(
                        self.s.user,
                        "decommission.read_contacts",
                        # No record ids: the whole vault's would make one huge
                        # entry; the co-signature's batches name them, this hash
                        # names that list.
                        detail={"sha256": digest, "count": len(rows), "csv": out is not None},
                    )
                ],
                moment,
            )
            if fd is not None:
                with os.fdopen(fd, "wb") as f:
                    fd = None
                    f.write(_contacts_csv(rows))
        except FileExistsError:
            raise UsageError(
                _t("{path} exists: choose a new file for the contact list", path=out)
            ) from None
        except BaseException:
            if fd is not None:
                os.close(fd)
            if out is not None and out.exists():
                with contextlib.suppress(OSError):
                    out.unlink()  # a partial list of personal data is not left behind
            raise
        return {
            "contacts": rows,
            "sha256": digest,
            "out": None if out is None else str(out),
        }

    def _contact_rows(self, sealed: bytes) -> list[dict[str, str]] | None:
        """The rows of a sealed contact list of this vault, or None (any failure)."""
        try:
            doc = json.loads(self.s.me.unseal(sealed))
        except (ValueError, DecryptionFailed):
            return None
        if not isinstance(doc, dict) or doc.get("vault_id") != self.s.vault_id:
            return None
        contacts = doc.get("contacts")
        if not isinstance(contacts, list) or not all(
            isinstance(c, dict)
            and isinstance(c.get("record_id"), str)
            and all(isinstance(v, str) for v in c.values())
            for c in contacts
        ):
            return None
        return [dict(c) for c in contacts]

    def _covering_cosign(self) -> tuple[str, str] | None:
        """(officer, SHA-256 of the sealed list) of the co-signature this vault's
        decommissioning counts: the last one before it started, else the latest.

        Read from the verified log, each entry by its role (as
        :meth:`_decommission_cosigner`), so a co-signature made after the
        decommissioning (of no records) never hides the list it was made with.
        """
        state = self.s.trust()

        def counts(doc: dict[str, Any], role: str) -> bool:
            if state is None:
                return doc.get("actor") in {
                    u.name for u in self.s.db.users.all() if role in u.roles
                }
            return logged_by_role(state, doc)

        found: tuple[str, str] | None = None
        for raw in self.s.db.audit.entries_by_action(("vault.decommission",)):
            doc = json.loads(raw)
            detail = doc.get("detail") or {}
            if doc.get("outcome") != "ok":
                continue
            if detail.get("phase") == "start" and counts(doc, "admin"):
                break
            if detail.get("phase") == "cosign" and counts(doc, "officer"):
                found = (str(doc["actor"]), str(detail.get("contacts_sha256", "")))
        return found

    def _decommission_cosigner(self) -> tuple[str, str] | None:
        """The latest logged co-signature of decommissioning: its officer and the
        digest of the live records its contact list covers, if any.

        The entry is in the signed, hash-chained log; its actor must have been
        an officer then and still be one, in the verified trust state (the
        ``users`` table is anyone's to edit: review RV2-2). A vault without a
        trust anchor has no state: its ``users`` table, as before. A
        co-signature without ``records_sha256`` (written before it was
        recorded) covers nothing and is not accepted.
        """
        state = self.s.trust()

        def officer(doc: dict[str, Any]) -> bool:
            if state is None:
                return doc.get("actor") in {
                    u.name for u in self.s.db.users.all() if "officer" in u.roles
                }
            return logged_by_role(state, doc) and state.is_active(str(doc.get("actor")), "officer")

        found: tuple[str, str] | None = None
        for raw in self.s.db.audit.entries_by_action(("vault.decommission",)):
            doc = json.loads(raw)
            detail = doc.get("detail") or {}
            if doc.get("outcome") == "ok" and detail.get("phase") == "cosign" and officer(doc):
                found = (str(doc["actor"]), str(detail.get("records_sha256", "")))
        return found

    def _live_records_digest(self) -> str:
        """SHA-256 over the id and version of every live record, in id order.

        A co-signature binds this: a record added, corrected or deleted after
        it changes the digest, so its contact list no longer matches what
        decommissioning would shred (docs/decisions.md, co-signature scope).
        """
        h = hashlib.sha256()
        after = ""
        while page := self.s.db.records.page(after=after, limit=_PAGE):
            after = page[-1].id
            for r in page:
                if self.s.db.records.keyblob(r.id) is not None:
                    h.update(f"{r.id}:{r.version}\n".encode())
        return h.hexdigest()

    def _destroy_custodian(self) -> None:
        """Decommissioning (local): remove the custodian key from every key slot and
        the database, so no copy of the database can be opened any more."""

        base = {k: self.s.secrets[k] for k in ("db", "index")}
        slots = KeySlots(self.s.home.keyslots)
        for user in self.s.db.users.all():
            if "officer" in user.roles:
                slots.add(
                    PublicIdentity(user.name, user.enc_key, user.sign_key), self.s.vault_id, base
                )
        with self.s.db.transaction():
            for generation, _, _ in self.s.db.custodians.all():
                self.s.db.custodians.delete(generation)


def _contacts_csv(rows: Sequence[dict[str, str]]) -> bytes:
    """The contact list as CSV: UTF-8 with a byte-order mark, RFC 4180 line ends,
    every cell neutralised against spreadsheet formulas (as exports are)."""
    from childvault.vault._reports import neutralise_cell

    columns = ["record_id", *_CONTACT_FIELDS]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([neutralise_cell(row.get(c, "")) for c in columns])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


class _StaleCosign(Exception):
    """Rolls back the transaction that would stop collection: the records are not
    those the co-signature covers (never leaves :meth:`DecommissionService.decommission`)."""
