"""Anonymised statistical export (M-3, M-14)."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

from childvault._i18n import _t
from childvault.keys import ChildVaultError, Selection, UsageError, WrappedRecord
from childvault.keys._files import atomic_write
from childvault.vault._action_roles import logged_by_role
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
from childvault.vault._svc_notices import NoticeService
from childvault.vault._time import legal_today

#: The smallest k an export accepts (issue 15 finding 5: k = 2 published a
#: class of two children); 5 is the default and advised.
MIN_EXPORT_K = 3
#: Distinct values of a sensitive column a group of otherwise equal classes
#: must show, or the column is suppressed for the group (l-diversity).
L_DIVERSITY = 2
#: The cell that replaces a sensitive value suppressed for l-diversity.
SUPPRESSED = "suppressed"
#: Meta key of the classes every earlier export released (their digests are logged).
_RELEASES = "export_releases"


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
        self.s.require(("officer",), "export.anonymized", moment, _t("anonymised exports"))
        # The signed setting `export_min_k` may raise the floor, never lower it below 3.
        low = max(_MIN_K, MIN_EXPORT_K, int(self.s.settings.get("export_min_k")))
        if not isinstance(k, int) or isinstance(k, bool) or not low <= k <= _MAX_K:
            raise UsageError(
                _t("--k must be a whole number from {low} (5 or more advised)", low=low)
            )
        if EXPORT_PURPOSE not in self.s.schema.purposes:
            raise UsageError(
                _t(
                    "this vault's schema declares no {purpose!r} purpose, so no record "
                    "can have consented to statistics: nothing may be exported",
                    purpose=EXPORT_PURPOSE,
                )
            )
        target = Path(out)
        if not target.parent.is_dir():
            raise UsageError(
                _t("the directory of --out ({parent}) does not exist", parent=str(target.parent))
            )
        plans = {
            name: {column: (f, how) for column, f, how in _export_plan(rt.fields)}
            for name, rt in self.s.schema.types.items()
        }
        header: list[str] = []
        for plan in plans.values():
            header.extend(c for c in plan if c not in header)
        export_id = secrets.token_hex(16)
        day = legal_today(self.s.settings, moment)
        notice = NoticeService(self.s).accepted_versions()
        counts: dict[tuple[str, ...], int] = {}
        excluded = {"no_statistics_consent": 0, "past_retention": 0, "outdated_notice": 0}
        used = 0
        batches = 0
        try:
            # Checked before anything is decrypted: a tampered history fails closed.
            releases = self._releases()
            for batch in self._eligible_batches(day.isoformat(), notice, excluded):
                batches += 1
                used += self._export_batch(batch, plans, header, counts, export_id, day, moment)
            sensitive = self._sensitive_columns(header)
            diverse, l_suppressed = l_diverse(counts, sensitive, k)
            kept, subtraction = against_releases(
                sorted((key, n) for key, n in diverse.items() if n >= k), releases, k, sensitive
            )
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
            "suppressed_classes": len(diverse) - len(kept),
            "l": L_DIVERSITY,
            "l_suppressed_groups": l_suppressed,
            "subtraction_suppressed_classes": subtraction,
            "released_sha256": _release_digest(kept),
            "suppressed_records": used - exported,
            "batches": batches,
            "excluded_no_statistics_consent": excluded["no_statistics_consent"],
            "excluded_past_retention": excluded["past_retention"],
            "excluded_outdated_notice": excluded["outdated_notice"],
            "sha256": digest,
        }
        releases[export_id] = [[*key, n] for key, n in kept]
        with self.s.db.transaction():
            # The release and the entry carrying its digest commit together.
            self.s.db.meta.set(_RELEASES, json.dumps(releases, ensure_ascii=False))
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

    def _sensitive_columns(self, header: Sequence[str]) -> list[int]:
        """Indexes (in a class key: record type first) of the sensitive kept columns.

        A kept enum of sensitivity ``high`` (the category of difficulty, a
        "specific identity") is what l-diversity protects.
        """
        out: list[int] = []
        for i, column in enumerate(header, start=1):
            for rtype in self.s.schema.types.values():
                spec = rtype.fields.get(column)
                if spec is not None and spec.sensitivity == "high" and spec.generalise == "keep":
                    out.append(i)
                    break
        return out

    def _releases(self) -> dict[str, list[list[Any]]]:
        """The classes earlier exports released, each checked against its logged digest.

        The table decides what a new export may publish, so it is verified
        before use against the verified log (docs/trust.md): a release whose
        digest differs from the one its ``export.anonymized`` entry carries,
        or a logged release missing from the table (a cleared history would let
        a subtraction through), is refused and logged (``trust.refuse``).
        """
        state = self.s.trust()
        logged: dict[str, str] = {}
        for entry in self.s.db.audit.entries_by_action(("export.anonymized",)):
            doc = json.loads(entry)
            detail = doc.get("detail") or {}
            if (
                doc.get("action") == "export.anonymized"
                and "released_sha256" in detail
                # An officer's only: a staff member's entry is no release (RV2-2).
                and logged_by_role(state, doc)
            ):
                logged[str(detail.get("export"))] = str(detail["released_sha256"])
        raw = self.s.db.meta.get(_RELEASES)
        releases: dict[str, list[list[Any]]] = {}
        try:
            if raw is not None:
                releases = json.loads(raw)
            rows = {
                export_id: [(tuple(str(c) for c in row[:-1]), int(row[-1])) for row in classes]
                for export_id, classes in releases.items()
            }
        except (ValueError, TypeError, AttributeError, IndexError):
            self._distrust(_t("the record of earlier exports is damaged"))
        for export_id in sorted(set(logged) | set(rows)):
            if export_id not in rows:
                self._distrust(_t("the record of export {id} is missing", id=export_id))
            if logged.get(export_id) != _release_digest(rows[export_id]):
                self._distrust(
                    _t("the record of export {id} differs from its log entry", id=export_id)
                )
        return releases

    def _distrust(self, message: str) -> NoReturn:
        self.s.distrust("export.anonymized", message, self.s.now())

    def _eligible_batches(
        self, day: str, notice: frozenset[str], excluded: dict[str, int]
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
                elif row.consent.get("notice_version") not in notice:
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
            material = self.s.keys.officer_to_self().release(selections, self.s.me.public, grant_id)
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


def _release_digest(rows: Sequence[tuple[tuple[str, ...], int]]) -> str:
    """SHA-256 of a release's classes (canonical JSON), as logged with the export."""
    doc = [[*key, n] for key, n in rows]
    return hashlib.sha256(
        json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    ).hexdigest()


def l_diverse(
    counts: Mapping[tuple[str, ...], int], sensitive: Sequence[int], k: int
) -> tuple[dict[tuple[str, ...], int], int]:
    """Classes after l-diversity on the ``sensitive`` columns; and how many groups it coarsened.

    A group is the classes equal in every column but the sensitive ones. If
    the publishable classes (count >= k) of a group show fewer than
    :data:`L_DIVERSITY` distinct sensitive values, anyone who knows a child is
    in the group would learn the child's category: the group is merged into
    one class whose sensitive cells read :data:`SUPPRESSED`.
    """
    if not sensitive:
        return dict(counts), 0
    groups: dict[tuple[str, ...], list[tuple[tuple[str, ...], int]]] = {}
    for key, n in counts.items():
        rest = tuple(c for i, c in enumerate(key) if i not in sensitive)
        groups.setdefault(rest, []).append((key, n))
    out: dict[tuple[str, ...], int] = {}
    coarsened = 0
    for members in groups.values():
        shown = {tuple(key[i] for i in sensitive) for key, n in members if n >= k}
        if len(shown) >= L_DIVERSITY:
            out.update(members)
            continue
        coarsened += 1
        for key, n in members:
            merged = tuple(SUPPRESSED if i in sensitive else c for i, c in enumerate(key))
            out[merged] = out.get(merged, 0) + n
    return out, coarsened


def against_releases(
    kept: Sequence[tuple[tuple[str, ...], int]],
    releases: Mapping[str, Sequence[Sequence[Any]]],
    k: int,
    sensitive: Sequence[int] = (),
) -> tuple[list[tuple[tuple[str, ...], int]], int]:
    """Drop classes a subtraction from an earlier release would expose.

    Subtracting two exports would otherwise single out the fewer than ``k``
    children who joined or left between them (issue 15 finding 5). Two
    checks: a class whose count differs from an earlier release of the same
    class by 1..k-1 is dropped; and, since l-diversity may show a group with
    its ``sensitive`` columns suppressed in one export and by category in the
    next, a group's total (its published classes summed over the sensitive
    columns) is compared with the same group's total in each earlier release,
    and the whole group is dropped when it changed by 1..k-1. Returns the
    classes kept and how many were dropped for either reason.
    """

    def group(key: Sequence[Any]) -> tuple[str, ...]:
        return tuple(str(c) for i, c in enumerate(key) if i not in sensitive)

    earlier: dict[tuple[str, ...], set[int]] = {}
    earlier_totals: dict[tuple[str, ...], set[int]] = {}
    for classes in releases.values():
        totals: dict[tuple[str, ...], int] = {}
        for row in classes:
            earlier.setdefault(tuple(str(c) for c in row[:-1]), set()).add(int(row[-1]))
            g = group(row[:-1])
            totals[g] = totals.get(g, 0) + int(row[-1])
        for g, total in totals.items():
            earlier_totals.setdefault(g, set()).add(total)
    now_totals: dict[tuple[str, ...], int] = {}
    for key, n in kept:
        now_totals[group(key)] = now_totals.get(group(key), 0) + n
    withheld = {
        g
        for g, total in now_totals.items()
        if any(0 < abs(total - old) < k for old in earlier_totals.get(g, ()))
    }
    out: list[tuple[tuple[str, ...], int]] = []
    dropped = 0
    for key, n in kept:
        if group(key) in withheld or any(0 < abs(n - old) < k for old in earlier.get(key, ())):
            dropped += 1
            continue
        out.append((key, n))
    return out, dropped
