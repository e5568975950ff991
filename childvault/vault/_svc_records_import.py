"""Records' CSV/JSONL import: the validation pass, the write pass in batches and
their bounds. Apart from the write path it builds on (:mod:`._svc_records_write`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from childvault._i18n import Message, _t, join
from childvault.keys import ImportFailed, UsageError, ValidationError
from childvault.vault._consent import (
    ALL_CONSENT_COLUMNS,
    Consent,
    ImportConsents,
    parse_consent_columns,
)
from childvault.vault._session import WRITERS
from childvault.vault._svc_records_batches import _BatchWriter, _ImportCounter, _PipelinedWriter
from childvault.vault._svc_records_write import NewRecordInput, RecordWrites, _Day, _Prepared
from childvault.vault._time import iso, today
from childvault.vault._types import ImportReport

if TYPE_CHECKING:
    # At run time the importer is imported by the import itself: a command that
    # only lists or reads records does not load it (csv, its dataclasses).
    from childvault.vault._importer import BadRow

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


class RecordImports(RecordWrites):
    """Import a CSV or JSON Lines file of records (on the write path of :class:`RecordWrites`)."""

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
