"""Reports and exports: subject access (M-17, P-19), breach impact (P-21),
anonymised statistics (M-3, M-14) and audit inclusion proofs.

The formats and the standalone verifiers are imported from here (they live
in :mod:`._report_format` and :mod:`._report_verify`; this module holds the
export helpers and the proof building); the services that make
reports are :mod:`._svc_reports` and :mod:`._svc_export`. The verifiers
(:func:`verify_subject_report`, :func:`verify_entry_proof`) need no
database: a child, a guardian or an auditor checks a report with nothing but
the report and the institution's published checkpoint verifier keys (``vkey``
strings).

Proofs follow RFC 6962 / RFC 9162: a log entry's leaf hash is
``SHA-256(0x00 || entry bytes)``, where the entry bytes are the exact RFC 8785
canonical JSON that the log stored; the report carries them as a JSON string,
so its UTF-8 encoding is those bytes. Each proof leads from the leaf to the
root of a C2SP ``tlog-checkpoint`` signed by an officer or admin.

Decisions (see ``docs/reports.md``):

- A subject report made by an officer or admin signs a fresh checkpoint first,
  so every entry is proven. A report made by staff (who cannot sign) proves the
  entries the latest checkpoint covers and lists the newer ones, including the
  report's own read, as ``"checkpointed": false``; an officer later turns it
  into a fully proven report with :meth:`Vault.complete_subject_report`
  (``childvault audit prove --complete``).
- The report's data, consent and bookkeeping are bound to the log by a salted
  commitment in its ``report.subject`` entry: the log holds only a hash of
  them under a random 32-byte salt that only the report carries, so the log
  stays free of child data and a guess of a low-entropy value cannot be
  confirmed from the log alone. The same entry records how many entries about
  the record precede it and a digest of their leaf hashes, taken under the
  append lock, so a verifier can tell that the report leaves none out.
- Other children's record ids are redacted (issue 15). A log entry about the
  report's record that also names other records (a request or read of
  several records) is carried with each other id replaced by
  :data:`ANOTHER_RECORD` and ``"redacted": true``. Those exact bytes are
  withheld, so the verifier cannot re-hash them: it checks that the carried
  leaf hash is proven against the signed root (as for every entry), that the
  redacted text is a canonical entry about the record with that sequence
  number, and that only other record ids were replaced. The redacted texts are
  bound to the log by a digest in the report's own ``report.subject`` entry
  (``redacted_digest``), so they cannot be changed after the report was made;
  that they match the withheld bytes is the institution's logged word. The
  count of other records stays
  visible. A salted hash per id was rejected: whoever holds a candidate id
  could confirm it against the report's salt.
- The anonymised export writes aggregated counts per equivalence class, never
  one row per child, and suppresses every class smaller than ``k``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import rfc8785

from childvault._i18n import _t
from childvault.keys import IntegrityError
from childvault.vault import _audit
from childvault.vault._consent import age_on
from childvault.vault._merkle import Frontier
from childvault.vault._note import Checkpoint

# A name imported as itself is re-exported: other code and tests import it from
# this module, which held it before the split (issue 11).
from childvault.vault._report_format import ANOTHER_RECORD as ANOTHER_RECORD
from childvault.vault._report_format import ENTRY_PROOF_FORMAT as ENTRY_PROOF_FORMAT
from childvault.vault._report_format import INCIDENT_FORMAT as INCIDENT_FORMAT
from childvault.vault._report_format import SUBJECT_REPORT_FORMAT as SUBJECT_REPORT_FORMAT
from childvault.vault._report_format import _about_digest as _about_digest
from childvault.vault._report_format import _commitment as _commitment
from childvault.vault._report_format import _origin as _origin
from childvault.vault._report_format import redacted_digest as redacted_digest
from childvault.vault._report_verify import ProofVerification as ProofVerification
from childvault.vault._report_verify import verify_entry_proof as verify_entry_proof
from childvault.vault._report_verify import verify_subject_report as verify_subject_report
from childvault.vault._validators import district_of

if TYPE_CHECKING:
    from childvault.vault._backend import RecordRow
    from childvault.vault._schema import FieldSpec

__all__ = [
    "AGE_BANDS",
    "ENTRY_PROOF_FORMAT",
    "EXPORT_PURPOSE",
    "INCIDENT_FORMAT",
    "SUBJECT_REPORT_FORMAT",
    "ProofVerification",
    "age_band",
    "neutralise_cell",
    "verify_entry_proof",
    "verify_subject_report",
]

#: The consented purpose an anonymised export needs (M-3, M-14).
EXPORT_PURPOSE = "statistics"
#: Age bands of anonymised exports: (lowest age, highest age, label), in
#: completed years on the export date. 0-2 infants, 3-5 pre-school, 6-11
#: primary school, 12-13 the last years under the consent age of 14 (P-2,
#: M-12), 14-17 older minors; adults (records kept past 18) are "18+".
AGE_BANDS: tuple[tuple[int, int, str], ...] = (
    (0, 2, "0-2"),
    (3, 5, "3-5"),
    (6, 11, "6-11"),
    (12, 13, "12-13"),
    (14, 17, "14-17"),
)
#: The value an export writes when a quasi identifier is missing or cannot be
#: generalised (never a guess: a guess could keep more than intended).
UNKNOWN = "unknown"
#: The value an export writes in a column that the record's type does not have.
NOT_APPLICABLE = "n/a"

_EXPORT_BATCH = 50  # at most this many records' keys are released at once
_MIN_K, _MAX_K = 2, 1_000_000
_HASH_SIZE = 32
# Cells a spreadsheet would run as a formula (OWASP "CSV injection").
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


# --------------------------------------------------------------------- helpers


def age_band(birth: date, day: date) -> str:
    """The :data:`AGE_BANDS` label of someone born on ``birth``, on ``day``.

    ``"18+"`` from 18 years; :data:`UNKNOWN` if ``birth`` is after ``day``.
    """
    try:
        age = age_on(birth, day)
    except ValueError:
        return UNKNOWN
    for low, high, label in AGE_BANDS:
        if low <= age <= high:
            return label
    return "18+"


def neutralise_cell(text: str) -> str:
    """Make a CSV cell safe to open in a spreadsheet.

    A cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
    would be run as a formula by Excel, LibreOffice or WPS (CSV injection): it
    gets a leading ``'``, which spreadsheets show as text.
    """
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def _generalise(how: str, value: str | None, day: date) -> str:
    """The exported form of one quasi-identifier (or ``none``) value."""
    if value is None or value == "":
        return UNKNOWN
    if how == "age_band":
        try:
            return age_band(date.fromisoformat(value), day)
        except ValueError:
            return UNKNOWN
    if how == "district":
        return district_of(value) or UNKNOWN
    return value  # "keep" (enum values) and identifier = "none": as declared


def _decoded(entry: bytes) -> dict[str, Any]:
    """A stored entry as an object; a malformed one fails closed."""
    try:
        return _audit.decode_entry(entry)
    except (ValueError, IntegrityError):
        raise IntegrityError(
            _t("an audit log entry is not a valid entry: run `childvault audit verify`")
        ) from None


def redact_entry(entry: bytes, record_id: str) -> bytes | None:
    """``entry`` with every record id other than ``record_id`` replaced by
    :data:`ANOTHER_RECORD` (canonical JSON), or ``None`` if it names no other."""
    obj = _decoded(entry)
    records = obj.get("records")
    if not isinstance(records, list) or all(r == record_id for r in records):
        return None
    obj["records"] = [r if r == record_id else ANOTHER_RECORD for r in records]
    return bytes(rfc8785.dumps(obj))


def _entry_text(seq: int, entry: bytes) -> str:
    """A stored entry as the text a report carries (its UTF-8 is the hashed bytes)."""
    try:
        return entry.decode("utf-8")
    except UnicodeDecodeError:
        raise IntegrityError(
            _t("audit log entry {seq} is not valid text: run `childvault audit verify`", seq=seq)
        ) from None


class _Leaves:
    """The log's leaf hashes in one bytearray: 32 MB per million entries, no
    per-object overhead, so proofs for a large log stay affordable."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf) // _HASH_SIZE

    def append(self, leaf: bytes) -> None:
        self._buf += leaf

    def get(self, index: int) -> bytes:
        return bytes(self._buf[index * _HASH_SIZE : (index + 1) * _HASH_SIZE])

    def root(self, lo: int, hi: int) -> bytes:
        frontier = Frontier()
        for i in range(lo, hi):
            frontier.append(self.get(i))
        return frontier.root()


def _inclusion_proofs(leaves: _Leaves, size: int, indices: Iterable[int]) -> dict[int, list[bytes]]:
    """RFC 9162 PATH(i, D[0:size]) for each index, sharing subtree roots.

    The same walk as :func:`vault._merkle.inclusion_proof`, but the sibling
    roots are cached: entries about one record share most of their siblings,
    so many proofs cost about one pass over the log instead of one each.
    """
    cache: dict[tuple[int, int], bytes] = {}

    def mth(lo: int, hi: int) -> bytes:
        got = cache.get((lo, hi))
        if got is None:
            got = leaves.root(lo, hi)
            cache[(lo, hi)] = got
        return got

    out: dict[int, list[bytes]] = {}
    for index in indices:
        if not 0 <= index < size:
            raise ValueError(_t("inclusion proof index is outside the tree"))
        proof: list[bytes] = []
        lo, hi, m = 0, size, index
        while hi - lo > 1:
            k = 1 << ((hi - lo - 1).bit_length() - 1)  # largest power of two < n
            if m < k:
                proof.append(mth(lo + k, hi))
                hi = lo + k
            else:
                proof.append(mth(lo, lo + k))
                lo, m = lo + k, m - k
        proof.reverse()
        out[index] = proof
    return out


def _check_prefixes(leaves: _Leaves, checkpoints: Iterable[Checkpoint]) -> None:
    """Check that the log extends every given checkpoint (one pass over the leaves).

    A checkpoint larger than the log means entries were removed; a different
    root at its size means the log was rewritten. Either way no proof from
    this log may be issued, and no new checkpoint may bless it.
    """
    frontier = Frontier()
    for cp in sorted(checkpoints, key=lambda c: c.size):
        if cp.size > len(leaves):
            raise IntegrityError(
                _t(
                    "the audit log has {n} entries but a signed checkpoint covers {size}: it "
                    "was truncated; run `childvault audit verify`",
                    n=len(leaves),
                    size=cp.size,
                )
            )
        while frontier.size < cp.size:
            frontier.append(leaves.get(frontier.size))
        if frontier.root() != cp.root:
            raise IntegrityError(
                _t(
                    "the audit log does not match a signed checkpoint (it was rewritten): run "
                    "`childvault audit verify`"
                )
            )


@dataclass
class _Snapshot:
    """The log as scanned for proofs: leaves, the wanted entries, the checkpoint."""

    leaves: _Leaves
    wanted: list[tuple[int, bytes]]
    note: str | None
    checkpoint: Checkpoint | None


def _export_plan(fields: Mapping[str, FieldSpec]) -> list[tuple[str, str, str]]:
    """(column, field, generalisation) of a record type's exported fields, in order."""
    plan: list[tuple[str, str, str]] = []
    for name, spec in fields.items():
        if spec.type == "binary":
            continue  # photographs and files are never exported (M-14)
        if spec.identifier == "quasi" and spec.generalise == "age_band":
            plan.append((f"{name}_age_band", name, "age_band"))
        elif spec.identifier == "quasi" and spec.generalise == "district":
            plan.append((f"{name}_district", name, "district"))
        elif spec.identifier == "quasi" or spec.identifier == "none":
            plan.append((name, name, "keep"))
    return plan


def _csv_bytes(header: Sequence[str], rows: Iterable[tuple[tuple[str, ...], int]]) -> bytes:
    """UTF-8 CSV with a byte-order mark (so Excel on Chinese Windows reads it as
    UTF-8, not GBK), RFC 4180 line ends, every text cell neutralised."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([neutralise_cell(h) for h in header])
    for key, count in rows:
        writer.writerow([*(neutralise_cell(c) for c in key), str(count)])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def _consent_json(row: RecordRow) -> dict[str, Any]:
    consent = row.consent
    return {
        "by": consent.get("by"),
        "consented_at": consent.get("consented_at"),
        "notice_version": consent.get("notice_version"),
        "purposes": list(consent.get("purposes", ())),
        "guardian_informed": bool(consent.get("guardian_informed", False)),
        "guardian_also": bool(consent.get("guardian_also", False)),
        "retain_until": row.retain_until,
        # Who consented (issue 15): older consents name only ``by``.
        "party": consent.get("party") or consent.get("by"),
        **{
            key: consent[key]
            for key in ("relation", "form_sha256", "confirmed_by")
            if consent.get(key)
        },
    }


def _pending_note(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    n = sum(1 for e in entries if not e["checkpointed"])
    if not n:
        return {"entries": 0, "message": "every entry is proven against the signed checkpoint"}
    return {
        "entries": n,
        "message": (
            f"{n} entr{'y is' if n == 1 else 'ies are'} newer than the latest signed checkpoint "
            "and not yet proven (this report's own read is always among them when staff make "
            "it): ask an officer to run `childvault audit prove --complete REPORT --out FILE`"
        ),
    }
