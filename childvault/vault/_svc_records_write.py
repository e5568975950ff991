"""Records' write path: validation, field sealing, signing and storing in one
transaction. The base of :class:`~._svc_records.RecordService`, apart so that the
import (:mod:`._svc_records_import`) and the listing build on it.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

from childvault._i18n import _t
from childvault.keys import AccessDenied, FieldKey, RecordKeys
from childvault.vault import _record_trust as record_trust
from childvault.vault._audit import DetailValue, Event
from childvault.vault._backend import NewRecord, RecordRow
from childvault.vault._consent import Consent, backdate_window, check_backdating, check_consent
from childvault.vault._fieldcrypto import seal_fields
from childvault.vault._session import WRITERS, Session
from childvault.vault._statements import BatchMember, Envelope
from childvault.vault._svc_notices import NoticeService
from childvault.vault._time import iso, legal_today, today

if TYPE_CHECKING:
    from childvault.vault._sqlcipher._conn import BackgroundCommit


def _new_record_id() -> str:
    """A record id: 48-bit creation time in milliseconds, then 80 random bits (32 hex).

    UUIDv7's layout. Why: fully random ids put every insert of a large import on a
    random page of each record-keyed B-tree (records, fields, key blobs, index),
    so throughput fell as the vault grew; ids that grow with time append at the
    right edge. The creation time is already in clear in the record's bookkeeping
    and its log entry, so the prefix discloses nothing new (docs/decisions.md).
    """
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


@dataclass(frozen=True, slots=True)
class _Day:
    """The dates every row of one write shares, computed once (not once a row):
    ``today`` in the institution's zone, the legal creation date and the
    back-dating window (:meth:`RecordService._backdating`)."""

    today: date
    created: date
    window: int


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A validated, encrypted record not yet stored: its keys (to wrap), its
    bookkeeping row and sealed fields (``(name, version, sealed)``) and its
    blind-index values. Its ``record.create`` entry is made when it is signed
    (:meth:`RecordService._signed_versions`), once, with the statement's digest."""

    keys: RecordKeys
    row: RecordRow
    fields: list[tuple[str, int, bytes]]
    index: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class _Staged:
    """A batch ready to store (:meth:`RecordService._staged`): its records with
    their key blobs, its blind-index tags ``(field, tag, record id)`` and its
    signed statements with the log events naming them."""

    records: list[NewRecord]
    tags: list[tuple[str, bytes, str]]
    signed: list[tuple[Event, Envelope | BatchMember | None]]


@dataclass(frozen=True)
class NewRecordInput:
    """One record to add: its type, field values (text) and consent."""

    type: str
    values: Mapping[str, str]
    consent: Consent


class RecordWrites:
    """Validate, seal, sign and store new records (the state every part of
    :class:`~._svc_records.RecordService` shares: the session and the notices)."""

    def __init__(self, session: Session, notices: NoticeService) -> None:
        self.s = session
        self._notices = notices

    def add_record(
        self,
        type_name: str,
        values: Mapping[str, str],
        consent: Consent,
        *,
        now: datetime | None = None,
    ) -> str:
        """Staff: validate, encrypt and store one record; return its id."""
        return self.add_records([NewRecordInput(type_name, values, consent)], now=now)[0]

    def add_records(
        self, items: Sequence[NewRecordInput], *, now: datetime | None = None
    ) -> list[str]:
        """Staff: add several records in one transaction (all or nothing)."""
        moment = self.s.now(now)
        self.s.require(WRITERS, "record.create", moment, _t("writing records"))
        self._check_accepting()
        prepared = [self._prepare(item, moment, backdating=True) for item in items]
        return self._store_new(prepared, moment)

    def _day(self, moment: datetime) -> _Day:
        """The dates shared by every record written at ``moment`` (:class:`_Day`)."""
        settings = self.s.settings
        return _Day(today(moment), legal_today(settings, moment), backdate_window(settings))

    def _backdating(
        self,
        consent: Consent,
        moment: datetime,
        imported: bool | None = None,
        day: _Day | None = None,
    ) -> Consent:
        """The back-dating rule (issue 15): a record created today by ``moment``.

        ``imported``: None for a record added one by one (an officer adding it
        confirms); for an import row, whether an officer runs the import with
        ``confirm_backdated`` (checked by :meth:`import_file`). ``day``:
        :meth:`_day` of ``moment``, computed once by an import.
        """
        day = day or self._day(moment)
        return check_backdating(
            consent,
            created=day.created,
            window_days=day.window,
            actor=self.s.user,
            officer="officer" in self.s.roles if imported is None else imported,
            in_import=imported is not None,
        )

    def _check_accepting(self) -> None:
        if not self.s.accepting_records():
            raise AccessDenied(_t("this vault is decommissioned: it no longer accepts records"))

    def _prepare(
        self,
        item: NewRecordInput,
        moment: datetime,
        notice_sha256: Callable[[str], str] | None = None,
        *,
        backdating: bool = False,
    ) -> _Prepared:
        """Validate and encrypt one record. ``notice_sha256``: a memoised
        :meth:`notice_sha256` for a whole import (one register read, not one a row).
        ``backdating``: apply the back-dating window of a record added one by one
        (an import applies it row by row, :meth:`_checked_row`)."""
        values, consent = self._validated(item, moment, notice_sha256, backdating=backdating)
        return self._sealed(item.type, values, consent, moment)

    def _validated(
        self,
        item: NewRecordInput,
        moment: datetime,
        notice_sha256: Callable[[str], str] | None = None,
        *,
        backdating: bool = False,
        imported: bool | None = None,
        day: _Day | None = None,
    ) -> tuple[dict[str, str], Consent]:
        """The record's normalised values and its checked consent (with the notice's
        digest); :class:`ValidationError` or :class:`UsageError` naming the problem.
        ``imported``: an import row (see :meth:`_backdating`), always window-checked.
        ``day``: :meth:`_day` of ``moment``, computed once by an import."""
        legal = day.created if day is not None else legal_today(self.s.settings, moment)
        values = self.s.schema.validate_record(item.type, item.values, today=legal)
        dob_text = values.get("date_of_birth")
        # Validated as YYYY-MM-DD: date.fromisoformat reads it as datetime's did.
        dob = date.fromisoformat(dob_text) if dob_text else None
        consent = check_consent(
            item.consent,
            date_of_birth=dob,
            schema=self.s.schema,
            today=today(moment) if day is None else day.today,
        )
        if backdating or imported is not None:
            consent = self._backdating(consent, moment, imported, day)
        sha_of = notice_sha256 or self._notices.notice_sha256
        consent = dataclasses.replace(consent, notice_sha256=sha_of(consent.notice_version))
        return values, consent

    def _sealed(
        self,
        type_name: str,
        values: Mapping[str, str],
        consent: Consent,
        moment: datetime,
        stamp: str | None = None,
    ) -> _Prepared:
        """Encrypt validated values (:meth:`_validated`) under fresh field keys.
        ``stamp``: ``iso(moment)``, computed once by an import."""
        rtype = self.s.schema.record_type(type_name)
        record_id = _new_record_id()
        specs = rtype.fields
        # One pass over the fields: clear metadata, plaintexts to seal, and the
        # searchable values (one row of an import runs this for every field).
        metadata: dict[str, str] = {}
        plain: list[tuple[str, bytes]] = []
        index: list[tuple[str, str]] = []
        for name, value in values.items():
            spec = specs[name]
            if spec.metadata:
                metadata[name] = value
            else:
                plain.append((name, value.encode("utf-8")))
            if spec.searchable:
                index.append((name, value))
        sealed: list[tuple[str, int, bytes]] = []
        keys: dict[str, FieldKey] = {}
        for name, ct, key in seal_fields(
            plain, vault_id=self.s.vault_id, record_id=record_id, version=1
        ):
            sealed.append((name, 1, ct))
            keys[name] = key
        stamp = stamp or iso(moment)
        row = RecordRow(
            record_id,
            type_name,
            1,
            stamp,
            self.s.user,
            stamp,
            consent.to_json(),
            consent.retain_until.isoformat(),
            metadata,
        )
        return _Prepared(RecordKeys(record_id, 1, keys, new=True), row, sealed, index)

    def _store_new(
        self,
        prepared: Sequence[_Prepared],
        moment: datetime,
        *,
        source: str | None = None,
        rows: Sequence[int] = (),
        progress_to: int | None = None,
        known: dict[tuple[str, str], bytes] | None = None,
        finished: bool = False,
    ) -> list[str]:
        """Wrap, sign and store ``prepared`` in one transaction; return the ids.
        ``known``: blind-index tags an import's duplicate check already computed,
        ``(field, value) -> tag``, taken (and removed) instead of computed again.
        ``finished``: the import's progress (``progress_to``) is its end."""
        staged = self._staged(prepared, moment, source=source, rows=rows, known=known)
        return self._write(
            staged, moment, source=source, progress_to=progress_to, finished=finished
        )

    def _staged(
        self,
        prepared: Sequence[_Prepared],
        moment: datetime,
        *,
        source: str | None = None,
        rows: Sequence[int] = (),
        known: dict[tuple[str, str], bytes] | None = None,
    ) -> _Staged:
        """What :meth:`_store_new` writes, made without the database: the key
        blobs, the blind-index tags and the signed statements (an import makes a
        batch's while the previous one's COMMIT runs: :class:`_BatchWriter`)."""
        blobs = self.s.keys.writer().wrap([p.keys for p in prepared])
        records = [
            NewRecord(p.row, p.fields, blob, source, rows[i] if rows else None)
            for i, (p, blob) in enumerate(zip(prepared, blobs, strict=True))
        ]
        # Blind-index tags, computed per field in one batch (one Transit call in Vault mode).
        by_field: dict[str, list[tuple[str, str]]] = {}
        for p in prepared:
            for name, value in p.index:
                by_field.setdefault(name, []).append((p.row.id, value))
        tags: list[tuple[str, bytes, str]] = []
        for name, pairs in by_field.items():
            macs = self._index_tags(name, [v for _, v in pairs], known)
            tags.extend((name, mac, rid) for (rid, _), mac in zip(pairs, macs, strict=True))
        # Signed before the transaction: the statements depend on nothing it reads,
        # so the write lock is held for the writes only.
        signed = self._signed_versions(prepared, records, source, rows, moment)
        return _Staged(records, tags, signed)

    def _write(
        self,
        staged: _Staged,
        moment: datetime,
        *,
        source: str | None = None,
        progress_to: int | None = None,
        commits: BackgroundCommit | None = None,
        finished: bool = False,
    ) -> list[str]:
        """Store ``staged`` (:meth:`_staged`) in one transaction, with the import's
        progress when ``progress_to`` is given; return the records' ids. The log
        entries are encoded, chained on the head and signed here, under the write
        lock, so batches written one after another extend one chain.
        ``commits``: the transaction's COMMIT runs in the background, finished by
        ``commits.wait()`` (an import's batches, :class:`_BatchWriter`).
        ``finished``: the progress row also marks the import finished."""
        records, tags, signed = staged.records, staged.tags, staged.signed

        def write() -> None:
            if records:
                self.s.db.records.insert(records)
            if tags:
                self.s.db.records.add_index_tags(tags)
            if signed:
                record_trust.append_signed(self.s.db, signed, moment)
            if source is not None and progress_to is not None:
                self.s.db.records.set_import_progress(
                    source, progress_to, at=iso(moment), finished=finished
                )

        # Through a server, the writes and the commit go in one request, the log
        # entries linked to the head the client expects (refused and written
        # again if another append came first: RemoteBackend.appending_transaction).
        appending = getattr(self.s.db, "appending_transaction", None)
        if appending is not None and signed and commits is None:
            appending(write)
        else:
            with self.s.db.transaction() if commits is None else commits.transaction():
                write()
        return [r.row.id for r in records]

    def _index_tags(
        self, field: str, values: list[str], known: dict[tuple[str, str], bytes] | None
    ) -> list[bytes]:
        """``index_tags(field, values)``, taking the tags in ``known`` (and removing
        them: each is stored once) and computing only the others in one call."""
        if not known:
            return self.s.keys.index_tags(field, values)
        found = [known.pop((field, v), None) for v in values]
        missing = [v for v, tag in zip(values, found, strict=True) if tag is None]
        computed = iter(self.s.keys.index_tags(field, missing) if missing else ())
        return [tag if tag is not None else next(computed) for tag in found]

    def _signed_versions(
        self,
        prepared: Sequence[_Prepared],
        records: Sequence[NewRecord],
        source: str | None,
        rows: Sequence[int],
        moment: datetime,
    ) -> list[tuple[Event, Envelope | BatchMember | None]]:
        """Each new record's ``record.version`` statement, signed by the writer, and
        its ``record.create`` entry naming it (issue 12, attack 4: docs/trust.md);
        an import's entries also name the file (``source``) and the row.

        One record (``record add``) gets its own signed envelope; several (an
        import's batch, ``add_records``) one signed ``record.batch`` statement over
        the Merkle root of their statements, each record keeping its inclusion
        proof (docs/decisions.md, "One record statement per batch")."""
        out: list[tuple[Event, Envelope | BatchMember | None]] = []
        at = iso(moment)
        user = self.s.user
        statements: Sequence[Envelope | BatchMember]
        if len(prepared) > 1:
            # One signature for the batch: the acting identity signs it directly.
            statements = record_trust.sign_batch_versions(
                self.s, [(r.row, r.fields, r.blob) for r in records], moment, at=at
            )
        else:
            statements = [
                record_trust.sign_version(self.s, r.row, r.fields, r.blob, moment, at=at)
                for r in records
            ]
        for i, (p, record, envelope) in enumerate(zip(prepared, records, statements, strict=True)):
            detail: dict[str, DetailValue] = {"type": record.row.type}
            if source is not None:
                detail["source"], detail["row"] = source[:16], rows[i]
            detail[record_trust.RECORD_STATEMENT] = envelope.digest()
            event = Event(
                user,
                "record.create",
                records=[record.row.id],
                fields=[name for name, _, _ in p.fields],
                detail=detail,
            )
            out.append((event, envelope))
        return out
