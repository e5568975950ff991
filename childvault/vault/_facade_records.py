"""Records: adding, importing, listing and finding them (the :class:`RecordService`).

One facet of :class:`~._facade.Vault`, kept apart so each area of the API reads on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from childvault.vault import _check as check
from childvault.vault._consent import Consent
from childvault.vault._facade_base import VaultBase
from childvault.vault._svc_records import NewRecordInput, RecordPage
from childvault.vault._types import ImportReport, RecordInfo


class RecordsFacet(VaultBase):
    """The record methods of :class:`Vault`: add, import, list, find (:class:`RecordService`)."""

    def index_tags(self, field: str, values: Sequence[str]) -> list[bytes]:
        """Truncated keyed blind-index tags of ``values`` for ``field``."""
        w = self._live("Vault.index_tags")
        check.str_arg(w, "field", field)
        values = check.str_seq(w, "values", values)
        return self._session.keys.index_tags(field, values)

    def add_record(
        self,
        type_name: str,
        values: Mapping[str, str],
        consent: Consent,
        *,
        now: datetime | None = None,
    ) -> str:
        """Staff: validate, encrypt and store one record; return its id."""
        w = self._live("Vault.add_record")
        check.str_arg(w, "type_name", type_name)
        check.mapping_of_str(w, "values", values)
        check.consent_arg(w, "consent", consent)
        check.datetime_arg(w, "now", now)
        return self._records.add_record(type_name, values, consent, now=now)

    def add_records(
        self, items: Sequence[NewRecordInput], *, now: datetime | None = None
    ) -> list[str]:
        """Staff: add several records in one transaction (all or nothing)."""
        w = self._live("Vault.add_records")
        check.new_records(w, "items", items)
        check.datetime_arg(w, "now", now)
        return self._records.add_records(items, now=now)

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

        ``encoding``: ``utf-8`` (default, a byte-order mark is dropped), ``gbk``
        or ``gb18030``. Column names may be the schema's Chinese labels. A row
        with the same identity number (compared by blind index) as an earlier
        row or a record of the vault is invalid unless ``allow_duplicates``.
        A row whose ``consented_at`` is beyond the back-dating window is invalid
        unless it carries ``consent_form_sha256`` and an officer imports with
        ``confirm_backdated`` (docs/compliance.md, M-12).
        """
        w = self._live("Vault.import_file")
        path = check.path_arg(w, "path", path)
        check.str_arg(w, "type_name", type_name, optional=True)
        check.bool_arg(w, "skip_invalid", skip_invalid)
        check.choice(w, "fmt", fmt, ("csv", "jsonl"), optional=True)
        check.callable_arg(w, "progress", progress)
        check.datetime_arg(w, "now", now)
        check.bool_arg(w, "confirm_backdated", confirm_backdated)
        return self._records.import_file(
            path,
            type_name=type_name,
            skip_invalid=skip_invalid,
            fmt=fmt,
            progress=progress,
            now=now,
            encoding=encoding,
            allow_duplicates=allow_duplicates,
            confirm_backdated=confirm_backdated,
        )

    def list_records(self, *, now: datetime | None = None) -> Iterator[RecordInfo]:
        """Bookkeeping of every record (never a value); the listing is logged."""
        w = self._live("Vault.list_records")
        check.datetime_arg(w, "now", now)
        return self._records.list_records(now=now)

    def list_page(
        self, *, after: str | None = None, limit: int | None = 100, now: datetime | None = None
    ) -> RecordPage:
        """A page of at most ``limit`` records' bookkeeping (``None``: every record)
        after the record id ``after``, each verified against its signed record
        statement; records that fail are named in ``unverified``. Logged."""
        w = self._live("Vault.list_page")
        check.str_arg(w, "after", after, optional=True)
        if limit is not None:
            check.int_arg(w, "limit", limit, minimum=1)
        check.datetime_arg(w, "now", now)
        return self._records.list_page(after=after, limit=limit, now=now)

    def record_info(self, record_id: str) -> RecordInfo:
        """Bookkeeping of one record."""
        w = self._live("Vault.record_info")
        check.str_arg(w, "record_id", record_id)
        return self._records.record_info(record_id)

    def find(
        self, field: str, value: str, *, type_name: str | None = None, now: datetime | None = None
    ) -> list[str]:
        """Staff: candidate records whose ``field`` may equal ``value`` (blind index).

        Tags are truncated, so the list can hold false positives; they are only
        told apart after an approved read. Refuses fields the schema does not
        mark ``searchable`` (never low-entropy ones). The lookup is logged.
        """
        w = self._live("Vault.find")
        check.str_arg(w, "field", field)
        check.str_arg(w, "value", value, data=True)
        check.str_arg(w, "type_name", type_name, optional=True)
        check.datetime_arg(w, "now", now)
        return self._records.find(field, value, type_name=type_name, now=now)
