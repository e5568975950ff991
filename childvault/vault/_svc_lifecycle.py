"""Record lifecycle: correction (P-19), deletion and consent withdrawal by
crypto-shredding (P-20), consent changes (P-9, P-14, M-12), retention sweeps
(P-12) and decommissioning (P-23).

Every operation appends its audit entries in the transaction that changes the
database; what a provider destroys outside the database (OpenBao salts) is
destroyed after that commit and tracked, so an interrupted run is completed by
running it again.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from childvault._i18n import _t, join
from childvault.keys import (
    NotFound,
    Selection,
    StorageError,
    UsageError,
)
from childvault.keys._encoding import check_hex_id
from childvault.vault import _audit
from childvault.vault import _record_trust as record_trust
from childvault.vault._audit import Event
from childvault.vault._backend import RecordRow
from childvault.vault._consent import Consent, backdate_window, check_backdating, check_consent
from childvault.vault._fieldcrypto import open_field, seal_field
from childvault.vault._session import Session
from childvault.vault._statements import Envelope
from childvault.vault._svc_audit import AuditService
from childvault.vault._svc_decommission import DecommissionService
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

    @property
    def audit(self) -> AuditService:
        """The audit service this lifecycle signs checkpoints with."""
        return self._audit

    def internal_values(
        self, rows: Sequence[RecordRow], fields: Sequence[str], grant_id: str
    ) -> dict[str, dict[str, str]]:
        """Officer-internal decryption (consent checks, the decommissioning contact
        list): release to oneself, then open.

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
                self.destroy_keys([record_id])  # finish an interrupted deletion
                return
            raise NotFound(
                _t(
                    "record {record_id} was already deleted on {day}",
                    record_id=record_id,
                    day=stone[0],
                )
            )
        self.delete_rows([record_id], reason, category, moment)
        self.destroy_keys([record_id])

    def delete_rows(
        self, record_ids: Sequence[str], reason: str, category: str, moment: datetime
    ) -> None:
        """Delete ``record_ids``' rows, leave tombstones and log one ``record.delete``
        each, in one transaction (the provider's key material is destroyed after)."""
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

    def destroy_keys(self, record_ids: Sequence[str]) -> None:
        """Destroy what the provider holds for ``record_ids`` outside the database
        (Vault: the salts), then note it; idempotent, so an interrupted run resumes."""
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
        dob_text = self.internal_values([row], ["date_of_birth"], grant_id)[record_id].get(
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
            self.delete_rows(page, f"retention date passed (sweep {day})", "retention", moment)
            self.destroy_keys(page)
            due.extend(page)
        pending = [] if dry_run else self.s.db.records.pending_shreds()
        if pending:
            self.destroy_keys(pending)
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

    # -- decommissioning (P-23), in _svc_decommission ---------------------------

    def decommission(self, *, confirm: bool, now: datetime | None = None) -> dict[str, Any]:
        """Admin: stop collection, shred every record, sign a final checkpoint
        (:meth:`DecommissionService.decommission`)."""
        return DecommissionService(self).decommission(confirm=confirm, now=now)

    def cosign_decommission(self, contacts: Path, *, now: datetime | None = None) -> dict[str, Any]:
        """Officer: co-sign decommissioning, writing the sealed guardian contact list
        first (:meth:`DecommissionService.cosign_decommission`)."""
        return DecommissionService(self).cosign_decommission(contacts, now=now)

    def open_decommission_contacts(
        self, path: Path, *, out: Path | None = None, now: datetime | None = None
    ) -> dict[str, Any]:
        """Officer: open the guardian contact list sealed to them
        (:meth:`DecommissionService.open_decommission_contacts`)."""
        return DecommissionService(self).open_decommission_contacts(path, out=out, now=now)


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
