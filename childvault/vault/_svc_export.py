"""Anonymised statistical export (M-3, M-14)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

from childvault.keys import ChildVaultError, Selection, UsageError, WrappedRecord
from childvault.keys._files import atomic_write
from childvault.vault._audit import DetailValue, Event
from childvault.vault._backend import RecordRow
from childvault.vault._reports import (
    _EXPORT_BATCH,
    _MAX_K,
    _MIN_K,
    EXPORT_PURPOSE,
    NOT_APPLICABLE,
    _csv_bytes,
    _export_plan,
    _generalise,
)
from childvault.vault._session import Session
from childvault.vault._svc_access import AccessService
from childvault.vault._time import legal_today


class ExportService:
    """Export k-anonymous aggregated counts."""

    def __init__(self, session: Session, access: AccessService) -> None:
        self.s = session
        self._access = access

    def export_anonymized(
        self, out: Path | str, *, k: int = 5, now: datetime | None = None
    ) -> dict[str, Any]:
        """Officer: write anonymised statistics (M-3, M-14) as CSV to ``out``.

        Only records that consented to the ``statistics`` purpose under the
        current notice and are within retention are used. Direct identifiers
        are never decrypted; quasi identifiers are generalised (date of birth
        to an :data:`AGE_BANDS` band on the export date, address to its
        county-level district, enum values kept) and fields declared
        ``identifier = "none"`` are kept as is (binary fields never). The file
        holds one row per equivalence class (all exported columns) with its
        ``count``; classes smaller than ``k`` are suppressed. Cells are
        neutralised against spreadsheet formulas; the file is written
        atomically with mode 0600.

        Keys are released by the provider to the officer's own identity, at
        most 50 records at a time, each batch logged (``export.anonymized``,
        records and fields, no values) and committed before it is decrypted;
        a final entry records the counts. Memory holds only the class counts.
        """
        moment = self.s.now(now)
        self.s.require(("officer",), "export.anonymized", moment, "anonymised exports")
        if not isinstance(k, int) or isinstance(k, bool) or not _MIN_K <= k <= _MAX_K:
            raise UsageError(f"--k must be a whole number from {_MIN_K} (5 or more advised)")
        if EXPORT_PURPOSE not in self.s.schema.purposes:
            raise UsageError(
                f"this vault's schema declares no {EXPORT_PURPOSE!r} purpose, so no record "
                "can have consented to statistics: nothing may be exported"
            )
        target = Path(out)
        if not target.parent.is_dir():
            raise UsageError(f"the directory of --out ({target.parent}) does not exist")
        plans = {
            name: {column: (f, how) for column, f, how in _export_plan(rt.fields)}
            for name, rt in self.s.schema.types.items()
        }
        header: list[str] = []
        for plan in plans.values():
            header.extend(c for c in plan if c not in header)
        export_id = secrets.token_hex(16)
        day = legal_today(self.s.db.meta, moment)
        notice = self.s.setting("notice_version")
        counts: dict[tuple[str, ...], int] = {}
        excluded = {"no_statistics_consent": 0, "past_retention": 0, "outdated_notice": 0}
        used = 0
        batches = 0
        try:
            for batch in self._eligible_batches(day.isoformat(), notice, excluded):
                batches += 1
                used += self._export_batch(batch, plans, header, counts, export_id, day, moment)
            kept = sorted((key, n) for key, n in counts.items() if n >= k)
            body = _csv_bytes(["record_type", *header, "count"], kept)
            digest = hashlib.sha256(body).hexdigest()
            atomic_write(target, body, mode=0o600)
        except ChildVaultError as exc:
            # The batches already logged stay; record that the export did not finish.
            self.s.log(
                [
                    Event(
                        self.s.user,
                        "export.anonymized",
                        "error",
                        purpose=EXPORT_PURPOSE,
                        detail={
                            "export": export_id,
                            "stage": "failed",
                            "reason": type(exc).__name__,
                        },
                    )
                ],
                moment,
            )
            raise
        exported = sum(n for _, n in kept)
        summary: dict[str, DetailValue] = {
            "export": export_id,
            "stage": "done",
            "k": k,
            "records": used,
            "records_exported": exported,
            "classes": len(kept),
            "suppressed_classes": len(counts) - len(kept),
            "suppressed_records": used - exported,
            "batches": batches,
            "excluded_no_statistics_consent": excluded["no_statistics_consent"],
            "excluded_past_retention": excluded["past_retention"],
            "excluded_outdated_notice": excluded["outdated_notice"],
            "sha256": digest,
        }
        self.s.log(
            [Event(self.s.user, "export.anonymized", purpose=EXPORT_PURPOSE, detail=summary)],
            moment,
        )
        return {
            **{k_: v for k_, v in summary.items() if k_ not in ("stage",)},
            "out": str(target),
            "columns": ["record_type", *header, "count"],
            "excluded": excluded,
            "export_date": day.isoformat(),
        }

    def _eligible_batches(
        self, day: str, notice: str, excluded: dict[str, int]
    ) -> Iterator[list[RecordRow]]:
        """Pages of at most 50 records that may be used for statistics."""
        after = ""
        while True:
            page = self.s.db.records.page(after=after, limit=_EXPORT_BATCH)
            if not page:
                return
            after = page[-1].id
            batch: list[RecordRow] = []
            for row in page:
                if EXPORT_PURPOSE not in row.consent.get("purposes", ()):
                    excluded["no_statistics_consent"] += 1
                elif row.retain_until < day:
                    excluded["past_retention"] += 1
                elif row.consent.get("notice_version") != notice:
                    # Consent given under another notice must be renewed (P-10).
                    excluded["outdated_notice"] += 1
                else:
                    batch.append(row)
            if batch:
                yield batch

    def _export_batch(
        self,
        batch: Sequence[RecordRow],
        plans: Mapping[str, Mapping[str, tuple[str, str]]],
        header: Sequence[str],
        counts: dict[tuple[str, ...], int],
        export_id: str,
        day: date,
        moment: datetime,
    ) -> int:
        """Log, release, decrypt and count one batch; return how many records it used."""
        selections: list[Selection] = []
        wanted: dict[str, list[str]] = {}
        fields_seen: list[str] = []
        for row in batch:
            blob = self.s.db.records.keyblob(row.id)
            if blob is None:
                continue  # deleted meanwhile
            rtype = self.s.schema.types.get(row.type)
            if rtype is None:
                continue
            held = set(self.s.db.records.field_names(row.id))
            names = [f for f, _ in plans[row.type].values() if f in held]
            names = [f for f in names if not rtype.fields[f].metadata]
            wanted[row.id] = names
            fields_seen.extend(f for f in names if f not in fields_seen)
            if names:
                selections.append(Selection(WrappedRecord(row.id, blob[0], blob[1]), names))
        if not wanted:
            return 0
        # Logged and committed before any key is released or value decrypted.
        self.s.log(
            [
                Event(
                    self.s.user,
                    "export.anonymized",
                    records=list(wanted),
                    fields=fields_seen,
                    purpose=EXPORT_PURPOSE,
                    detail={"export": export_id, "stage": "decrypt"},
                )
            ],
            moment,
        )
        values: dict[str, dict[str, str]] = {}
        if selections:
            grant_id = secrets.token_hex(16)
            material = self.s.keys.officer().release(selections, self.s.me.public, grant_id)
            keys = self.s.keys.writer().redeem(material, self.s.me, grant_id)
            for sel in selections:
                rid = sel.record.record_id
                values.update(self._access.decrypt(keys, [rid], wanted[rid]))
            del keys
        for row in batch:
            if row.id not in wanted:
                continue
            plan = plans[row.type]
            clear = values.get(row.id, {})
            key = [row.type]
            for column in header:
                if column not in plan:
                    key.append(NOT_APPLICABLE)
                    continue
                f, how = plan[column]
                raw = row.metadata.get(f) if f in row.metadata else clear.get(f)
                key.append(_generalise(how, raw, day))
            tup = tuple(key)
            counts[tup] = counts.get(tup, 0) + 1
        return len(wanted)
