"""Record lifecycle: correction (P-19), deletion and consent withdrawal by
crypto-shredding (P-20), consent changes (P-9, P-14, M-12), retention sweeps
(P-12) and decommissioning (P-23).

Every operation appends its audit entries in the transaction that changes the
database; what a provider destroys outside the database (OpenBao salts) is
destroyed after that commit and tracked, so an interrupted run is completed by
running it again.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from childvault._i18n import _t, join
from childvault.keys import (
    DecryptionFailed,
    KeySlots,
    NotFound,
    PublicIdentity,
    Selection,
    StorageError,
    UsageError,
)
from childvault.keys._encoding import check_hex_id
from childvault.keys._files import atomic_write
from childvault.vault import _audit
from childvault.vault import _record_trust as record_trust
from childvault.vault._action_roles import logged_by_role
from childvault.vault._audit import Event
from childvault.vault._backend import RecordRow
from childvault.vault._consent import Consent, backdate_window, check_backdating, check_consent
from childvault.vault._fieldcrypto import open_field, seal_field
from childvault.vault._session import Session
from childvault.vault._statements import Envelope
from childvault.vault._svc_audit import AuditService
from childvault.vault._svc_notices import NoticeService
from childvault.vault._time import ZONE_SETTING, iso, legal_today, parse_iso, today

_PAGE = 500
_DELETE_REASONS = ("request", "withdrawal", "retention", "decommission")


#: The fields the guardian contact list of a decommissioning holds (P-23).
_CONTACT_FIELDS = ("name", "guardian_name", "guardian_phone")


class LifecycleService:
    """Correct, delete, re-consent, sweep and decommission."""

    def __init__(self, session: Session, notices: NoticeService, audit: AuditService) -> None:
        self.s = session
        self._notices = notices
        self._audit = audit

    def _internal_values(
        self, rows: Sequence[RecordRow], fields: Sequence[str], grant_id: str
    ) -> dict[str, dict[str, str]]:
        """Officer-internal decryption (consent checks): release to oneself, then open.

        Callers log their entry and commit it first. Goes through the provider,
        so Vault policy still applies (the officer's wrapped decrypt).
        """
        selections = [Selection(self.s.wrapped(r.id), fields) for r in rows]
        material = self.s.keys.officer_to_self().release(
            selections, self.s.me.public, grant_id, wrap_ttl=300
        )
        keys = self.s.keys.writer().redeem(material, self.s.me, grant_id)
        out: dict[str, dict[str, str]] = {}
        for row in rows:
            stored = self.s.db.records.fields(row.id, list(fields))
            values: dict[str, str] = {}
            for name, (version, sealed) in stored.items():
                key = keys.get(row.id, {}).get(name)
                if key is None:
                    continue
                values[name] = open_field(
                    sealed,
                    key,
                    vault_id=self.s.vault_id,
                    record_id=row.id,
                    field=name,
                    version=version,
                ).decode("utf-8")
            out[row.id] = values
        return out

    def correct(
        self, record_id: str, field: str, value: str, *, now: datetime | None = None
    ) -> int:
        """Officer: store a corrected value as a new field version (P-19).

        The new value gets a new key; the record's wrapped keys are replaced so
        the old version's key is gone (local: resealed without it; Vault: its
        salt destroyed). The log records that a correction happened, never the
        values. Returns the new field version.
        """
        moment = self.s.now(now)
        self.s.require(("officer",), "record.correct", moment, _t("correcting records"))
        row = self.s.live_record(record_id)
        rtype = self.s.schema.record_type(row.type)
        spec = rtype.fields.get(field)
        if spec is None:
            raise UsageError(
                _t(
                    "field {field!r} is not in the {type} schema: choose from {fields}",
                    field=field,
                    type=row.type,
                    fields=join(", ", rtype.fields),
                )
            )
        if spec.metadata:
            raise UsageError(
                _t("field {field!r} is clear metadata; it is not corrected this way", field=field)
            )
        clean = self.s.schema.validate_field(
            row.type, field, value, today=legal_today(self.s.settings, moment)
        )
        # The officer signs the corrected version: what they sign must start from
        # the record's genuine latest version, not a forgery (issue 12).
        record_trust.verify_records(self.s, [record_id], "record.correct", moment)
        old = self.s.db.records.fields(record_id, [field])
        new_fv = old[field][0] + 1 if field in old else 1
        sealed, key = seal_field(
            clean.encode("utf-8"),
            vault_id=self.s.vault_id,
            record_id=record_id,
            field=field,
            version=new_fv,
        )
        wrapped = self.s.wrapped(record_id)
        new_blob = self.s.keys.officer().replace(wrapped, row.version + 1, {field: key})
        tags = self.s.keys.index_tags(field, [clean]) if spec.searchable else []
        signed = self._signed_correction(row, field, new_fv, sealed, new_blob, moment)
        try:
            with self.s.db.transaction():
                if not self.s.db.records.replace_keyblob(
                    record_id, wrapped.version, row.version + 1, new_blob
                ):
                    raise UsageError(
                        _t(
                            "record {record_id} changed meanwhile; run the correction again",
                            record_id=record_id,
                        )
                    )
                self.s.db.records.put_field(record_id, field, new_fv, sealed)
                self.s.db.records.update(
                    record_id, version=row.version + 1, updated_at=iso(moment), consent=None
                )
                if spec.searchable:
                    self.s.db.records.drop_index_tags(record_id, field)
                    self.s.db.records.add_index_tags([(field, t, record_id) for t in tags])
                event = Event(
                    self.s.user,
                    "record.correct",
                    records=[record_id],
                    fields=[field],
                    detail={"field_version": new_fv, "record_version": row.version + 1},
                )
                record_trust.append_signed(
                    self.s.db, [(record_trust.with_record_statement(event, signed), signed)], moment
                )
        except StorageError as exc:
            if not self.s.keys.external_material:
                raise
            # Vault already replaced the salt: the old value is unreadable either way.
            raise StorageError(
                _t(
                    "the corrected {field} could not be stored ({exc}); its old value's key is "
                    "already destroyed in Vault: run the same `childvault correct` again once "
                    "the problem is fixed",
                    field=field,
                    # The inner message itself (a ChildVaultError's only argument).
                    exc=exc.args[0],
                )
            ) from exc
        self.s.db.compact()
        return new_fv

    def _signed_correction(
        self,
        row: RecordRow,
        field: str,
        field_version: int,
        sealed: bytes,
        blob: bytes,
        moment: datetime,
    ) -> Envelope:
        """The officer's signed statement of a corrected record version (issue 12)."""
        fields = [
            (n, v, ct) for n, v, ct in record_trust.stored_fields(self.s.db, row.id) if n != field
        ]
        fields.append((field, field_version, sealed))
        return record_trust.sign_version(self.s, row, fields, blob, moment, version=row.version + 1)

    def delete(
        self, record_id: str, reason: str, *, category: str = "request", now: datetime | None = None
    ) -> None:
        """Officer or admin: crypto-shred a record, leaving a tombstone (P-20).

        The rows (sealed values, wrapped keys, index tags) are removed and the
        tombstone and log entry written in one transaction; then the provider
        destroys what it holds outside the database (Vault: the record's salts).
        ``reason`` stays in the tombstone only; the log gets the ``category``.
        """
        moment = self.s.now(now)
        self.s.require(("officer", "admin"), "record.delete", moment, _t("deleting records"))
        if category not in _DELETE_REASONS:
            raise UsageError(
                _t(
                    "deletion category must be one of {choices}",
                    choices=join(", ", _DELETE_REASONS),
                )
            )
        reason = reason.strip()
        if not reason or len(reason) > 1000:
            raise UsageError(_t("--reason must say why, in at most 1000 characters"))
        check_hex_id(record_id, "record")
        if self.s.db.records.get(record_id) is None:
            stone = self.s.db.records.tombstone(record_id)
            if stone is None:
                raise NotFound(_t("no record {record_id}", record_id=record_id))
            if not stone[3]:
                self._destroy_keys([record_id])  # finish an interrupted deletion
                return
            raise NotFound(
                _t(
                    "record {record_id} was already deleted on {day}",
                    record_id=record_id,
                    day=stone[0],
                )
            )
        self._delete_rows([record_id], reason, category, moment)
        self._destroy_keys([record_id])

    def _delete_rows(
        self, record_ids: Sequence[str], reason: str, category: str, moment: datetime
    ) -> None:
        # A custodial provider's key material is the box in the row: gone with it.
        in_row = self.s.keys.custodial
        with self.s.db.transaction():
            for rid in record_ids:
                self.s.db.records.delete(rid, at=iso(moment), by=self.s.user, reason=reason)
            if in_row:
                self.s.db.records.mark_key_destroyed(record_ids)
            _audit.append(
                self.s.db.audit,
                [
                    Event(
                        self.s.user, "record.delete", records=[rid], detail={"category": category}
                    )
                    for rid in record_ids
                ],
                moment,
            )
        self.s.db.compact()

    def _destroy_keys(self, record_ids: Sequence[str]) -> None:
        shredder = self.s.keys.shredder() if record_ids else None
        if shredder is None:
            return
        shredder.shred(record_ids)
        with self.s.db.transaction():
            self.s.db.records.mark_key_destroyed(record_ids)

    def withdraw_consent(
        self, record_id: str, *, reason: str = "consent withdrawn", now: datetime | None = None
    ) -> None:
        """Officer or admin: consent withdrawn, so the record is crypto-shredded (P-20)."""
        moment = self.s.now(now)
        self.s.require(("officer", "admin"), "consent.withdraw", moment, _t("withdrawing consent"))
        self.s.live_record(record_id)
        # Checked before the withdrawal is logged, as delete checks it: a refused
        # reason must not leave an "ok" withdrawal in the log with nothing deleted.
        if not reason.strip() or len(reason.strip()) > 1000:
            raise UsageError(_t("--reason must say why, in at most 1000 characters"))
        self.s.log([Event(self.s.user, "consent.withdraw", records=[record_id])], moment)
        self.delete(record_id, reason, category="withdrawal", now=moment)

    def update_consent(
        self, record_id: str, consent: Consent, *, now: datetime | None = None
    ) -> None:
        """Officer: record a new consent (more purposes, or a new notice version).

        The age rule (M-12) is checked against the record's date of birth, which
        the officer's process decrypts for that purpose only; the check and the
        consent change are logged.
        """
        moment = self.s.now(now)
        self.s.require(("officer",), "consent.renew", moment, _t("recording consent"))
        row = self.s.live_record(record_id)
        record_trust.verify_records(self.s, [record_id], "consent.renew", moment)
        # Every rule that does not need the date of birth is checked before it is
        # decrypted: a consent refused for its own content must not leave an "ok"
        # age-check entry behind (the basis by age is checked after, as it must be).
        check_consent(
            _without_age_basis(consent),
            date_of_birth=None,
            schema=self.s.schema,
            today=legal_today(self.s.settings, moment),
        )
        grant_id = hashlib.sha256(f"consent|{record_id}|{iso(moment)}".encode()).hexdigest()[:32]
        self.s.log(
            [
                Event(
                    self.s.user,
                    "consent.renew",
                    records=[record_id],
                    fields=["date_of_birth"],
                    detail={"phase": "age check"},
                )
            ],
            moment,
        )
        dob_text = self._internal_values([row], ["date_of_birth"], grant_id)[record_id].get(
            "date_of_birth"
        )
        dob = datetime.fromisoformat(dob_text).date() if dob_text else None
        checked = check_consent(
            consent,
            date_of_birth=dob,
            schema=self.s.schema,
            today=legal_today(self.s.settings, moment),
        )
        # Back-dating is measured from the day the record was created (issue 15).
        checked = check_backdating(
            checked,
            created=today(parse_iso(row.created_at), self.s.settings.get(ZONE_SETTING)),
            window_days=backdate_window(self.s.settings),
            actor=self.s.user,
            officer=True,
        )
        checked = dataclasses.replace(
            checked, notice_sha256=self._notices.notice_sha256(checked.notice_version)
        )
        previous = set(row.consent.get("purposes", ()))
        added = sorted(set(checked.purposes) - previous)
        blob = self.s.db.records.keyblob(record_id)
        if blob is None:
            raise NotFound(_t("record {record_id} has no keys (deleted)", record_id=record_id))
        # The officer signs the record with its new consent (issue 12).
        signed = record_trust.sign_version(
            self.s,
            row,
            record_trust.stored_fields(self.s.db, record_id),
            blob[1],
            moment,
            consent=checked.to_json(),
        )
        event = Event(
            self.s.user,
            "consent.add_purpose" if added else "consent.renew",
            records=[record_id],
            detail={
                "notice_version": checked.notice_version,
                "purposes": list(checked.purposes),
                "added": added,
            },
        )
        with self.s.db.transaction():
            now_row = self.s.db.records.get(record_id)
            if (
                now_row is None
                or now_row.version != row.version
                or self.s.db.records.keyblob(record_id) != blob
            ):
                # What the officer signed must be what is stored: no correction between.
                raise UsageError(
                    _t(
                        "record {record_id} changed meanwhile; record the consent again",
                        record_id=record_id,
                    )
                )
            self.s.db.records.update(
                record_id, version=row.version, updated_at=iso(moment), consent=checked.to_json()
            )
            record_trust.append_signed(
                self.s.db, [(record_trust.with_record_statement(event, signed), signed)], moment
            )

    def consent_of(self, record_id: str) -> Consent:
        """The record's current consent."""
        return Consent.from_json(self.s.live_record(record_id).consent)

    def retention_sweep(
        self, *, dry_run: bool = False, now: datetime | None = None
    ) -> dict[str, Any]:
        """Admin or officer: crypto-shred every record past its retention date (P-12).

        Also completes deletions whose provider-side destruction was interrupted.
        """
        moment = self.s.now(now)
        self.s.require(("admin", "officer"), "retention.sweep", moment, _t("retention sweeps"))
        day = legal_today(self.s.settings, moment).isoformat()
        due: list[str] = []
        while True:
            page = [r for r in self.s.db.records.due(day, limit=_PAGE) if r not in due]
            if dry_run:
                due.extend(page)
                break
            if not page:
                break
            self._delete_rows(page, f"retention date passed (sweep {day})", "retention", moment)
            self._destroy_keys(page)
            due.extend(page)
        pending = [] if dry_run else self.s.db.records.pending_shreds()
        if pending:
            self._destroy_keys(pending)
        if not dry_run:
            self.s.log(
                [
                    Event(
                        self.s.user,
                        "retention.sweep",
                        detail={"deleted": len(due), "completed": len(pending), "day": day},
                    )
                ],
                moment,
            )
        return {
            "ok": True,
            "dry_run": dry_run,
            "day": day,
            "due": len(due),
            "records": due,
            "completed_pending": len(pending),
        }

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
            self._delete_rows(page, "institution decommissioned", "decommission", moment)
            self._destroy_keys(page)
            shredded += len(page)
        pending = self.s.db.records.pending_shreds()
        self._destroy_keys(pending)
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
            values = self._internal_values(live, fields, grant_id)
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
    those the co-signature covers (never leaves :meth:`LifecycleService.decommission`)."""


def _without_age_basis(consent: Consent) -> Consent:
    """``consent`` with the members whose rules need the date of birth made neutral.

    A child's consent and ``guardian_also`` are judged by age; checked with no
    date of birth they would always fail, so the pre-check takes them as a
    guardian's consent (a ``by`` outside guardian/child is kept, and refused).
    """
    if consent.by == "child":
        return dataclasses.replace(
            consent,
            by="guardian",
            guardian_informed=False,
            guardian_also=False,
            party="guardian" if consent.party == "child" else consent.party,
        )
    return dataclasses.replace(consent, guardian_also=False)
