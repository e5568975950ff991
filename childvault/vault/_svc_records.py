"""Records: validation, field sealing, storing, CSV/JSONL import, listing and
blind-index lookup. Staff and officers write; every listing and lookup is logged.

Listing and lookup are here; :class:`RecordService` builds on the write path
(:mod:`._svc_records_write`) and the import (:mod:`._svc_records_import`, its
batch writers in :mod:`._svc_records_batches`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from childvault._i18n import _t, join
from childvault.keys import NotFound, UsageError
from childvault.keys._encoding import check_hex_id
from childvault.vault import _record_trust as record_trust
from childvault.vault._audit import DetailValue, Event
from childvault.vault._backend import RecordRow
from childvault.vault._svc_records_import import RecordImports
from childvault.vault._svc_records_write import NewRecordInput as NewRecordInput
from childvault.vault._time import legal_today, parse_iso
from childvault.vault._types import ROLES, RecordInfo


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


class RecordService(RecordImports):
    """Write, import, list and look up records."""

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
        clean = self.s.schema.validate_field(
            rtype.name, field, value, today=legal_today(self.s.settings, moment)
        )
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
