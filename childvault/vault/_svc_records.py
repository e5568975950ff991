"""Records: validation, field sealing, storing, CSV/JSONL import, listing and
blind-index lookup. Staff and officers write; every listing and lookup is logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from childvault._i18n import Message, _t, join
from childvault.keys import (
    AccessDenied,
    FieldKey,
    ImportFailed,
    NotFound,
    RecordKeys,
    UsageError,
    ValidationError,
)
from childvault.keys._encoding import check_hex_id
from childvault.vault import _record_trust as record_trust
from childvault.vault._audit import DetailValue, Event
from childvault.vault._backend import NewRecord, RecordRow
from childvault.vault._consent import (
    ALL_CONSENT_COLUMNS,
    Consent,
    ImportConsents,
    backdate_window,
    check_backdating,
    check_consent,
    parse_consent_columns,
)
from childvault.vault._fieldcrypto import seal_fields
from childvault.vault._session import WRITERS, Session
from childvault.vault._statements import BatchMember, Envelope
from childvault.vault._svc_notices import NoticeService
from childvault.vault._time import iso, legal_today, parse_iso, today
from childvault.vault._types import ROLES, ImportReport, RecordInfo

if TYPE_CHECKING:
    # At run time the importer is imported by the import itself: a command that
    # only lists or reads records does not load it (csv, its dataclasses).
    from childvault.vault._importer import BadRow
    from childvault.vault._sqlcipher._conn import BackgroundCommit

_IMPORT_BATCH = 500
#: Rows in the first batch (and transaction) of an import through one server,
#: whose batches overlap; each later batch is twice the one before, up to
#: _IMPORT_BATCH (:func:`_overlapped_size`). Small at first so that the server
#: stores a batch while the client prepares the next even in a file of one
#: local batch; large later because each batch is a COMMIT (fsync) more
#: (docs/decisions.md, "A small import through the server overlaps too";
#: measured in docs/benchmarks.md, "Server, round 2 session 10: small imports
#: overlap").
_OVERLAPPED_FIRST = 50
#: Most memory (estimated) an import keeps between its validation pass and its
#: write pass; a larger file is read and validated twice instead, so an import's
#: peak memory does not grow with the file (the ``memory`` benchmark: a budget
#: of 8 MiB of *characters* kept ~2 KB of objects a row, 70 MiB more at 200,000
#: rows).
_KEEP_BYTES = 16 << 20
#: A kept row's memory beyond its values' ``getsizeof``: its tuple, its
#: ``Consent`` and the consent's members (measured at about 1 KB).
_KEPT_ROW_OVERHEAD = 1024
#: Most blind-index tags the duplicate check keeps for the write pass.
_KEEP_TAGS = 1 << 18
#: An import row's consent columns, which its record validation skips.
_CONSENT_KEYS = frozenset(ALL_CONSENT_COLUMNS)


def _overlapped_size(index: int) -> int:
    """Rows in batch ``index`` (0-based) of an import's run through one server:
    :data:`_OVERLAPPED_FIRST`, doubling, at most :data:`_IMPORT_BATCH`."""
    return min(_OVERLAPPED_FIRST << min(index, 16), _IMPORT_BATCH)


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


@dataclass(frozen=True)
class RecordPage:
    """One page of ``childvault list``: bookkeeping, checked against the signed log.

    ``unverified`` maps each shown record whose rows are not its latest signed
    record statement (docs/trust.md) to the reason; those records are shown
    marked, never silently. ``verifiable`` is False when the acting identity
    holds no trust anchor (made before anchors): nothing could be checked.
    ``next_after`` is the ``after`` of the next page, None on the last one.
    """

    records: tuple[RecordInfo, ...]
    total: int
    unverified: Mapping[str, str]
    verifiable: bool
    next_after: str | None


def _import_failed(n_errors: int, file: str, errors: Sequence[tuple[int, str]]) -> Message:
    """The message of :class:`ImportFailed`: the first 20 bad rows, each in the
    reader's language when its reason is a :class:`Message` (the English text
    stays as it was)."""
    # The row list has no fixed template: it is a Message of its own whose
    # parts are translated one by one (:meth:`Message.in_locale`).
    parts = {
        f"r{i}": _t("row {row}: {reason}", row=r, reason=m) for i, (r, m) in enumerate(errors[:20])
    }
    shown = join("; ", list(parts.values()))
    more = _t(" (and {n} more)", n=n_errors - 20) if n_errors > 20 else ""
    return _t(
        "{n} invalid row(s) in {file}, nothing was imported: {rows}{more}. "
        "Fix them, or pass --skip-invalid to import the valid rows",
        n=n_errors,
        file=file,
        rows=shown,
        more=more,
    )


class RecordService:
    """Write, import, list and look up records."""

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
        values = self.s.schema.validate_record(item.type, item.values)
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

    def import_file(
        self,
        path: Path | str,
        *,
        type_name: str | None = None,
        skip_invalid: bool = False,
        fmt: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        now: datetime | None = None,
        encoding: str | None = None,
        allow_duplicates: bool = False,
        confirm_backdated: bool = False,
    ) -> ImportReport:
        """Staff: import a CSV or JSON Lines file, streaming, in batches; resumable.

        First every row is validated; if any is invalid and ``skip_invalid`` is
        false nothing is written and :class:`ImportFailed` lists the bad rows.
        Rows are then written in batches, each batch in one transaction with its
        log entries and the import's progress, so an interrupted import resumes
        where it stopped and never duplicates a row.

        ``encoding``: ``utf-8`` (default), ``gbk`` or ``gb18030``. A row with the
        same identity number (blind index) as an earlier row or a record of the
        vault is invalid unless ``allow_duplicates``.

        A row whose ``consented_at`` is more than the back-dating window before
        today is invalid unless it carries its signed consent form's SHA-256
        (``consent_form_sha256``) and an officer runs the import with
        ``confirm_backdated``; that officer is stored as the row's
        ``confirmed_by`` (docs/compliance.md, M-12).
        """
        moment = self.s.now(now)
        self.s.require(WRITERS, "record.create", moment, _t("importing records"))
        if confirm_backdated:
            # Refused (and logged) before any row is read: only an officer confirms.
            self.s.require(
                ("officer",), "record.create", moment, _t("confirming back-dated consents")
            )
        self._check_accepting()
        path = Path(path)
        type_name = type_name or next(iter(self.s.schema.types))
        rtype = self.s.schema.record_type(type_name)
        from childvault.vault._importer import (
            DuplicateFinder,
            DuplicateKey,
            column_aliases,
            file_digest,
        )
        from childvault.vault._importer import iter_rows as _iter_rows

        aliases = column_aliases(rtype)
        purposes = self.s.schema.purposes

        def iter_rows(
            path: Path, fmt: str | None
        ) -> Iterator[tuple[int, Mapping[str, str] | BadRow]]:
            return _iter_rows(path, fmt, encoding=encoding, aliases=aliases, purposes=purposes)

        source = file_digest(path)
        done, finished = self.s.db.records.import_progress(source)
        errors: list[tuple[int, str]] = []
        n_errors = 0
        total = 0
        # Read once per import, not once a row: the default notice and the register.
        notice = self.s.setting("notice_version")
        sha_of = functools.cache(self._notices.notice_sha256)
        # The dates every row shares (today, the legal creation date, the
        # back-dating window): read from the settings once, not once a row. A
        # setting that cannot be read stays each row's reason, as before.
        day: _Day | None
        try:
            day = self._day(moment)
        except UsageError:
            day = None
        # Each row's consent parsed and checked into its final object once, with
        # what every row shares fixed here (without the dates, each row fails
        # through the general path, as before).
        consents = (
            None
            if day is None
            else ImportConsents(
                schema=self.s.schema,
                default_notice=notice,
                today=day.today,
                created=day.created,
                window_days=day.window,
                actor=self.s.user,
                confirmed=confirm_backdated,
                notice_sha256=sha_of,
            )
        )
        key = DuplicateKey.of(rtype)
        # The duplicate check's blind-index tags, kept for the write pass (the same
        # keyed function of the same normalised values: computing them twice was
        # ~5 % of an import). Bounded like the kept rows; past the bound, the
        # write pass computes the tags it lacks.
        known: dict[tuple[str, str], bytes] = {}

        def tags_kept(field: str, values: list[str]) -> list[bytes]:
            computed = self.s.keys.index_tags(field, values)
            if len(known) < _KEEP_TAGS:
                known.update(zip(((field, v) for v in values), computed, strict=True))
            return computed

        finder = (
            None
            if allow_duplicates or not key.fields
            else DuplicateFinder(key, tags_kept, self.s.db.records.find_by_tags)
        )

        # Rows an interrupted run of this very file wrote are not duplicates of themselves.
        def new_row(number: int) -> bool:
            return not finished and number > done

        duplicates: dict[int, str] = {}
        keyed: list[tuple[int, Mapping[str, str]]] = []
        # Each row is read, parsed and validated once: the valid rows are kept
        # for the write pass while their estimated memory stays within
        # _KEEP_BYTES (a larger file is read and validated again in the write
        # pass, so memory stays bounded). The write pass then stores exactly
        # what was checked.
        kept: list[tuple[int, dict[str, str], Consent]] | None = []
        kept_bytes = 0
        for number, row in iter_rows(path, fmt):
            total = number
            checked = self._checked_row(
                type_name, row, moment, notice, sha_of, confirm_backdated, day, consents
            )
            if isinstance(checked, str):
                n_errors += 1
                if len(errors) < 1000:
                    errors.append((number, checked))
                continue
            values, consent = checked
            if kept is not None and number > done:
                kept_bytes += (
                    _KEPT_ROW_OVERHEAD
                    + sys.getsizeof(values)
                    + sum(map(sys.getsizeof, values.values()))
                )
                if kept_bytes > _KEEP_BYTES:
                    kept = None
                else:
                    kept.append((number, values, consent))
            if finder is not None:
                keyed.append((number, {f: values[f] for f in key.fields if values.get(f)}))
                # Tags in batches (one Transit call each with the Vault provider).
                if len(keyed) >= _IMPORT_BATCH:
                    duplicates.update(finder.check(keyed, against_vault=new_row))
                    keyed = []
        if finder is not None and keyed:
            duplicates.update(finder.check(keyed, against_vault=new_row))
        if duplicates:
            n_errors += len(duplicates)
            errors = sorted([*errors, *duplicates.items()])[:1000]
        if n_errors and not skip_invalid:
            raise ImportFailed(_import_failed(n_errors, path.name, errors))
        if finished:
            return ImportReport(source, total, 0, n_errors, total, tuple(errors))
        # The write pass's rows: those kept by the validation pass, or the file
        # read again (a generator: nothing runs until the writer iterates it).
        rows = (
            kept
            if kept is not None
            else self._revalidated(
                iter_rows(path, fmt),
                type_name,
                done,
                moment,
                notice,
                sha_of,
                confirm_backdated,
                day,
                consents,
            )
        )
        # Through one server, batch N is stored while N+1 is prepared, in batches
        # small enough that even a one-batch file overlaps (_import_overlapped).
        if getattr(self.s.db, "overlaps_appends", False):
            written = self._import_overlapped(
                rows, duplicates, type_name, moment, source, progress, total, done, known
            )
            if progress is not None:
                progress(total, total)
            return ImportReport(
                source, total, written.count, n_errors, done, tuple(errors), tuple(written.imported)
            )
        pipelined = getattr(self.s.db, "pipelined_appends", None)
        writer: _BatchWriter | _PipelinedWriter = (
            _BatchWriter(self, moment, source, progress, total)
            if pipelined is None
            else _PipelinedWriter(self, moment, source, progress, total, pipelined)
        )
        # Staging a batch (key box, blind-index tags) calls a key server unless
        # the keys are the vault's own (local provider): then a batch's progress
        # is reported, and its COMMIT waited for, before the next batch reaches
        # the server, as when batches were written in turn; only the sealing of
        # the next batch's rows overlaps the COMMIT.
        local_keys = self.s.keys.custodial
        batch: list[_Prepared] = []
        batch_rows: list[int] = []
        stamp = iso(moment)
        try:
            for number, values, consent in rows:
                if number in duplicates:
                    continue
                batch.append(self._sealed(type_name, values, consent, moment, stamp))
                batch_rows.append(number)
                if len(batch) >= _IMPORT_BATCH:
                    if not local_keys:
                        writer.wait()
                    staged = self._staged(
                        batch, moment, source=source, rows=batch_rows, known=known
                    )
                    writer.write(staged, number, report=True)
                    batch, batch_rows = [], []
            if not local_keys:
                writer.wait()
            staged = self._staged(batch, moment, source=source, rows=batch_rows, known=known)
            # The last batch marks the import finished in its own transaction:
            # one fsync'd COMMIT fewer than a transaction of its own for the mark.
            writer.write(staged, max(done, total), report=False, finished=True)
        finally:
            # The batch being written is finished (committed or rolled back)
            # before anything else happens: a failure of the writer is the one
            # raised, as when batches were written in turn (docs/decisions.md).
            writer.close()
        if progress is not None:
            progress(total, total)
        return ImportReport(
            source, total, writer.count, n_errors, done, tuple(errors), tuple(writer.imported)
        )

    def _import_overlapped(
        self,
        rows: Iterable[tuple[int, dict[str, str], Consent]],
        duplicates: Mapping[int, str],
        type_name: str,
        moment: datetime,
        source: str,
        progress: Callable[[int, int], None] | None,
        total: int,
        done: int,
        known: dict[tuple[str, str], bytes],
    ) -> _ImportCounter:
        """The write pass of an import through one server: batches of 50, 100,
        200, 400, then 500 rows (:func:`_overlapped_size`), each one transaction
        in one request, batch N stored by the server while this thread prepares
        N+1 (:class:`_PipelinedWriter`; docs/decisions.md, "A small import
        through the server overlaps too"). Returns the writer, its batches
        counted."""
        db: Any = self.s.db
        writer = _PipelinedWriter(self, moment, source, progress, total, db.pipelined_appends)
        # As in the local write pass: staging calls a key server unless the keys
        # are the vault's own; then the batch in flight is waited for first.
        local_keys = self.s.keys.custodial
        stamp = iso(moment)
        batch: list[_Prepared] = []
        batch_rows: list[int] = []
        written = 0
        try:
            for number, values, consent in rows:
                if number in duplicates:
                    continue
                if len(batch) >= _overlapped_size(written):
                    written += 1
                    # A full batch is written once a row follows it, so the
                    # last batch's transaction always marks the import
                    # finished: no request of its own for the mark.
                    if not local_keys:
                        writer.wait()
                    staged = self._staged(
                        batch, moment, source=source, rows=batch_rows, known=known
                    )
                    writer.write(staged, batch_rows[-1], report=True)
                    batch, batch_rows = [], []
                batch.append(self._sealed(type_name, values, consent, moment, stamp))
                batch_rows.append(number)
            if not local_keys:
                writer.wait()
            staged = self._staged(batch, moment, source=source, rows=batch_rows, known=known)
            writer.write(staged, max(done, total), report=False, finished=True)
        finally:
            # The batch in flight is finished (committed or failed) before
            # anything else happens: its failure is the one raised.
            writer.close()
        return writer

    def _revalidated(
        self,
        rows: Iterator[tuple[int, Mapping[str, str] | BadRow]],
        type_name: str,
        done: int,
        moment: datetime,
        notice: str | None,
        sha_of: Callable[[str], str],
        confirm_backdated: bool = False,
        day: _Day | None = None,
        consents: ImportConsents | None = None,
    ) -> Iterator[tuple[int, dict[str, str], Consent]]:
        """The valid rows after ``done``, read and validated again (a file too large
        to keep its rows between the passes). A row that fails now (skipped in the
        first pass with ``skip_invalid``, or changed since) is skipped."""
        for number, row in rows:
            if number <= done:
                continue
            checked = self._checked_row(
                type_name, row, moment, notice, sha_of, confirm_backdated, day, consents
            )
            if not isinstance(checked, str):
                yield number, *checked

    def _row_input(
        self,
        type_name: str,
        row: Mapping[str, str],
        moment: datetime,
        notice: str | None = None,
        day: _Day | None = None,
    ) -> NewRecordInput:
        values: dict[str, str] = {}
        consent_cols: dict[str, str] = {}
        # One pass over the row's cells (one row of an import each).
        for k, v in row.items():
            if k in ALL_CONSENT_COLUMNS:
                consent_cols[k] = v
            else:
                values[k] = v
        consent = parse_consent_columns(
            consent_cols,
            default_notice=notice if notice is not None else self.s.setting("notice_version"),
            today=today(moment) if day is None else day.today,
        )
        return NewRecordInput(type_name, values, consent)

    def _checked_row(
        self,
        type_name: str,
        row: Mapping[str, str] | BadRow,
        moment: datetime,
        notice: str | None = None,
        notice_sha256: Callable[[str], str] | None = None,
        confirm_backdated: bool = False,
        day: _Day | None = None,
        consents: ImportConsents | None = None,
    ) -> tuple[dict[str, str], Consent] | str:
        """A row's validated values and consent (:meth:`_validated`), or why it is invalid.

        The reason keeps its :class:`~childvault._i18n.Message` when it has one,
        so the CLI shows each refused row in the reader's language.
        ``consents``: the import's :class:`ImportConsents`; the row is then checked
        in :meth:`_validated`'s order (consent columns, values, consent rules,
        back-dating, notice) by the schema's compiled validator, without
        splitting the row or copying its consent once per rule.
        """
        if type(row) is not dict:  # a parsed row is a dict: no import a row for it
            from childvault.vault._importer import BadRow

            if isinstance(row, BadRow):
                return row.reason
        try:
            if consents is not None:
                parsed = consents.parse(row)
                # The consent columns are no field's name: skipped, not split off.
                values = self.s.schema.validator(type_name)(row, skip=_CONSENT_KEYS)
                dob_text = values.get("date_of_birth")
                dob = date.fromisoformat(dob_text) if dob_text else None
                return values, consents.checked(parsed, dob)
            return self._validated(
                self._row_input(type_name, row, moment, notice, day),
                moment,
                notice_sha256,
                imported=confirm_backdated,
                day=day,
            )
        except (ValidationError, UsageError) as exc:
            reason = exc.args[0] if exc.args else None
            return reason if isinstance(reason, Message) else str(exc)

    def list_records(self, *, now: datetime | None = None) -> Iterator[RecordInfo]:
        """Bookkeeping of every record (never a value); the listing is logged."""
        moment = self.s.now(now)
        self.s.require(ROLES, "record.list", moment, _t("listing records"))
        self.s.log(
            [Event(self.s.user, "record.list", detail={"count": self.s.db.records.count()})], moment
        )
        after = ""
        while True:
            page = self.s.db.records.page(after=after)
            if not page:
                return
            # One query for the page's field names, not one a record.
            names = self.s.db.records.field_names_between(page[0].id, page[-1].id)
            for row in page:
                yield self._record_info(row, names.get(row.id, []))
            after = page[-1].id

    def list_page(
        self, *, after: str | None = None, limit: int | None = None, now: datetime | None = None
    ) -> RecordPage:
        """A page of at most ``limit`` records (all if None) after the id ``after``,
        each checked against its latest logged record statement; the listing is logged.

        Why only the page is checked: a listing shows bookkeeping (type,
        version, consent purposes, retention, field names), which a user with
        database access could alter, so every record shown is verified
        (:func:`_record_trust.check_record`: the signed statement, the hashes of
        the stored fields and key blob) and one that fails is returned in
        ``unverified`` and logged (``trust.refuse``). Records not shown cost
        nothing: the trust state and record heads resume from the verifier's
        signed saved point, so a page costs the same on any vault size.
        """
        moment = self.s.now(now)
        self.s.require(ROLES, "record.list", moment, _t("listing records"))
        start = "" if after is None else check_hex_id(after, "record")
        total = self.s.db.records.count()
        rows: list[RecordRow] = []
        cursor = start
        # One row past the page says whether there is a next page.
        wanted = None if limit is None else limit + 1
        while wanted is None or len(rows) < wanted:
            batch = self.s.db.records.page(
                after=cursor, limit=1000 if wanted is None else min(1000, wanted - len(rows))
            )
            if not batch:
                break
            rows.extend(batch)
            cursor = batch[-1].id
        more = limit is not None and len(rows) > limit
        rows = rows[:limit] if limit is not None else rows
        detail: dict[str, DetailValue] = {"count": total, "shown": len(rows)}
        if start:
            detail["after"] = start
        self.s.log([Event(self.s.user, "record.list", detail=detail)], moment)
        names: dict[str, list[str]] = {}
        unverified: dict[str, str] = {}
        found = record_trust.record_heads(self.s)
        if found is None:
            # Nothing to verify against (no anchor): the names alone, one query a
            # thousand records.
            for i in range(0, len(rows), 1000):
                chunk = rows[i : i + 1000]
                names.update(self.s.db.records.field_names_between(chunk[0].id, chunk[-1].id))
        else:
            state, heads = found
            statements: dict[int, bytes] = {}
            blobs: dict[str, tuple[int, bytes]] = {}
            stored: dict[str, dict[str, tuple[int, bytes]]] = {}
            for i, row in enumerate(rows):
                if i % 1000 == 0:
                    # The page's signed statements, key blobs and stored fields a
                    # thousand records at a time: three queries (one round trip
                    # through the server), not three a record.
                    page_ids = [r.id for r in rows[i : i + 1000]]
                    statements = record_trust.latest_statements(self.s.db, heads, page_ids)
                    blobs = self.s.db.records.keyblob_many(page_ids)
                    stored = self.s.db.records.fields_many(page_ids)
                blob = blobs.get(row.id)
                fields = stored.get(row.id, {})
                # The names shown are those of the fields just verified.
                names[row.id] = sorted(fields)
                why = record_trust.check_record(
                    self.s.db,
                    state,
                    heads,
                    row,
                    None if blob is None else blob[1],
                    statements,
                    fields,
                )
                if why is None and row.consent.get("retain_until") != row.retain_until:
                    # The retention shown comes from its own column: it must be
                    # the signed consent's.
                    why = f"record {row.id}: its retention differs from its signed consent"
                if why is not None:
                    unverified[row.id] = why
            if unverified:
                first = next(iter(unverified.values()))
                self.s.log(
                    [
                        Event(
                            self.s.user,
                            "trust.refuse",
                            "denied",
                            records=list(unverified),
                            detail={"on": "record.list", "reason": first},
                        )
                    ],
                    moment,
                )
        return RecordPage(
            tuple(self._record_info(row, names.get(row.id, [])) for row in rows),
            total,
            unverified,
            found is not None,
            rows[-1].id if more and rows else None,
        )

    def record_info(self, record_id: str) -> RecordInfo:
        """Bookkeeping of one record."""
        row = self.s.db.records.get(check_hex_id(record_id, "record"))
        if row is None:
            if self.s.db.records.tombstone(record_id):
                raise NotFound(_t("record {record_id} was deleted", record_id=record_id))
            raise NotFound(_t("no record {record_id}", record_id=record_id))
        return self._record_info(row)

    def _record_info(self, row: RecordRow, names: Sequence[str] | None = None) -> RecordInfo:
        consent = row.consent
        return RecordInfo(
            row.id,
            row.type,
            row.version,
            parse_iso(row.created_at),
            row.created_by,
            parse_iso(row.updated_at),
            tuple(consent.get("purposes", ())),
            date.fromisoformat(row.retain_until),
            str(consent.get("by", "")),
            str(consent.get("notice_version", "")),
            tuple(self.s.db.records.field_names(row.id) if names is None else names),
            row.metadata,
        )

    def find(
        self, field: str, value: str, *, type_name: str | None = None, now: datetime | None = None
    ) -> list[str]:
        """Staff: candidate records whose ``field`` may equal ``value`` (blind index).

        Tags are truncated, so the list can hold false positives; they are only
        told apart after an approved read. Refuses fields the schema does not
        mark ``searchable`` (never low-entropy ones). The lookup is logged.
        """
        moment = self.s.now(now)
        self.s.require(("staff", "officer"), "record.find", moment, _t("looking up records"))
        rtype = self.s.schema.record_type(type_name or next(iter(self.s.schema.types)))
        spec = rtype.fields.get(field)
        if spec is None or not spec.searchable:
            searchable = [f for f, s in rtype.fields.items() if s.searchable]
            raise UsageError(
                _t(
                    "field {field!r} is not searchable: lookups work on {fields}",
                    field=field,
                    fields=join(", ", searchable),
                )
            )
        clean = self.s.schema.validate_field(rtype.name, field, value)
        (tag,) = self.s.keys.index_tags(field, [clean])
        candidates = self.s.db.records.find_by_tag(field, tag)
        self.s.log(
            [
                Event(
                    self.s.user,
                    "record.find",
                    records=candidates,
                    fields=[field],
                    detail={"candidates": len(candidates)},
                )
            ],
            moment,
        )
        return candidates


class _ImportCounter:
    """What both import writers keep: the import's context, the records counted
    once their batch is known committed, the report's sample of ids, and the
    progress calls."""

    def __init__(
        self,
        service: RecordService,
        moment: datetime,
        source: str,
        progress: Callable[[int, int], None] | None,
        total: int,
    ) -> None:
        self._service = service
        self._moment = moment
        self._source = source
        self._progress = progress
        self._total = total
        self.count = 0
        #: The first 1,000 ids written (the report's sample).
        self.imported: list[str] = []

    def _committed(self, ids: list[str], progress_to: int, report: bool) -> None:
        """Count a batch known committed and report its progress if asked."""
        self.count += len(ids)
        if len(self.imported) < 1000:
            self.imported.extend(ids[: 1000 - len(self.imported)])
        if report and self._progress is not None:
            self._progress(progress_to, self._total)


class _BatchWriter(_ImportCounter):
    """An import's batches written in turn, each in its own transaction, each
    COMMIT overlapping the staging of the next batch (docs/decisions.md, "An
    import commits a batch while it prepares the next").

    With a local SQLCipher store (``background_commit``) batch N's rows and log
    entries are written on the calling thread, as before; its COMMIT (SQLCipher
    encrypting the pages into the WAL, then fsync, without the GIL) runs on a
    thread of its own while the caller seals, wraps and signs batch N+1, which
    needs no database. :meth:`write` waits for N's COMMIT before writing N+1, so
    batches commit in order, each log append reads the head N left, and a
    failure of N is raised before N+1 is written (N+1 is then discarded).
    Other stores commit in turn, as before.
    """

    def __init__(
        self,
        service: RecordService,
        moment: datetime,
        source: str,
        progress: Callable[[int, int], None] | None,
        total: int,
    ) -> None:
        super().__init__(service, moment, source, progress, total)
        make = getattr(service.s.db, "background_commit", None)
        self._commits: BackgroundCommit | None = None if make is None else make()
        #: The batch whose COMMIT is in flight: its ids, progress row, whether reported.
        self._pending: tuple[list[str], int, bool] | None = None

    def write(
        self, staged: _Staged, progress_to: int, *, report: bool, finished: bool = False
    ) -> None:
        """Write ``staged`` with the import's progress at row ``progress_to``, once
        the previous batch is committed. ``report``: call ``progress(progress_to,
        total)`` once it is committed. ``finished``: the last batch, which marks
        the import finished."""
        self.wait()
        ids = self._service._write(
            staged,
            self._moment,
            source=self._source,
            progress_to=progress_to,
            commits=self._commits,
            finished=finished,
        )
        self._pending = (ids, progress_to, report)
        if self._commits is None:
            self.wait()

    def close(self) -> None:
        """Wait for the COMMIT in flight (its failure is raised) and stop the
        commit thread."""
        try:
            self.wait()
        finally:
            self._pending = None
            if self._commits is not None:
                self._commits.close()

    def wait(self) -> None:
        """Finish the batch in flight, if any: its COMMIT waited for (its failure
        raised), its ids counted and its progress reported."""
        if self._pending is None:
            return
        ids, progress_to, report = self._pending
        self._pending = None
        if self._commits is not None:
            # The commit thread's failure is raised here, in the caller's thread.
            self._commits.wait()
        self._committed(ids, progress_to, report)


class _PipelinedWriter(_ImportCounter):
    """An import's batches through a server: batch N's one request is checked and
    stored by the server while this client seals, signs and encodes batch N+1
    (``RemoteBackend.pipelined_appends``; docs/decisions.md, "An import through
    the server overlaps client and server"). The interface of
    :class:`_BatchWriter`; a batch counts, and its progress is reported, only
    once the server has answered that it committed it.

    What the backend guarantees: requests go in order, one at a time; N+1 is
    sent only after N's answer, and is discarded (nothing of it sent) if N
    failed, whose failure is then raised here; a batch refused for a moved head
    is written again from the real head, then the batch behind it.
    """

    def __init__(
        self,
        service: RecordService,
        moment: datetime,
        source: str,
        progress: Callable[[int, int], None] | None,
        total: int,
        pipelined: Callable[[], contextlib.AbstractContextManager[None]],
    ) -> None:
        super().__init__(service, moment, source, progress, total)
        db = service.s.db
        self._in_flight: Callable[[], int] = lambda: int(getattr(db, "appends_in_flight", 0))
        self._settle: Callable[[], None] = getattr(db, "settle_appends", lambda: None)
        self._context = pipelined()
        self._context.__enter__()
        self._closed = False
        #: Batches written, oldest first, not yet known committed: ids, progress, report.
        self._pending: list[tuple[list[str], int, bool]] = []

    def write(
        self, staged: _Staged, progress_to: int, *, report: bool, finished: bool = False
    ) -> None:
        """Write ``staged`` with the import's progress at row ``progress_to`` (see
        :meth:`_BatchWriter.write`); returns while the server stores it."""
        try:
            ids = self._service._write(
                staged,
                self._moment,
                source=self._source,
                progress_to=progress_to,
                finished=finished,
            )
        except BaseException:
            self._failed()
            raise
        self._pending.append((ids, progress_to, report))
        self._count_committed()

    def wait(self) -> None:
        """Wait for the batch in flight, if any (its failure raised), and count it."""
        try:
            self._settle()
        except BaseException:
            self._failed()
            raise
        self._count_committed()

    def _failed(self) -> None:
        """After a failure: a batch no longer in flight and not counted was not
        committed (its failure is the one raised), so it never counts."""
        if not self._in_flight():
            self._pending.clear()

    def close(self) -> None:
        """Wait for the batch in flight (its failure is raised) and leave the pipeline."""
        if self._closed:
            return
        self._closed = True
        try:
            self.wait()
        finally:
            self._pending = []
            # Leaving waits for the answer (only when the wait above was interrupted).
            self._context.__exit__(None, None, None)

    def _count_committed(self) -> None:
        """Count (and report) the batches the server has answered for: all but
        the one still in flight."""
        while len(self._pending) > self._in_flight():
            self._committed(*self._pending.pop(0))
