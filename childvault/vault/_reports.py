"""Reports and exports: subject access (M-17, P-19), breach impact (P-21),
anonymised statistics (M-3, M-14) and audit inclusion proofs.

The formats and the standalone verifiers live here; the services that make
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
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import rfc8785

from childvault._i18n import _t
from childvault.keys import (
    ChildVaultError,
    IntegrityError,
    UsageError,
)
from childvault.keys._encoding import is_hex_id
from childvault.vault import _audit
from childvault.vault._consent import age_on
from childvault.vault._merkle import Frontier, leaf_hash, verify_inclusion
from childvault.vault._note import Checkpoint, parse_vkey, verify_note
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

#: ``format`` of a subject-access report.
SUBJECT_REPORT_FORMAT = "childvault-subject-report/1"
#: ``format`` of a single-entry inclusion proof (``childvault audit prove``).
ENTRY_PROOF_FORMAT = "childvault-entry-proof/1"
#: ``format`` of a breach-impact report.
INCIDENT_FORMAT = "childvault-incident-report/1"
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
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_ENTRY_BYTES = 1 << 20
_MAX_ENTRIES = 1_000_000
# Cells a spreadsheet would run as a formula (OWASP "CSV injection").
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

# Keys of the report bound by the commitment in its report.subject log entry.
_COMMITTED = (
    "format",
    "vault_id",
    "institution",
    "record_id",
    "generated_at",
    "generated_by",
    "record",
    "data",
    "metadata",
    "consent",
    "retention",
    "grant",
    "salt",
)
_REPORT_KEYS = frozenset({*_COMMITTED, "commitment", "checkpoint", "entries", "pending"})
_REPORT_ENTRY_KEYS = frozenset({"seq", "entry", "leaf_hash", "checkpointed", "proof"})
#: A report entry whose other record ids were redacted (``"redacted": true``).
_REDACTED_ENTRY_KEYS = _REPORT_ENTRY_KEYS | {"redacted"}
#: What a subject report shows instead of another child's record id.
ANOTHER_RECORD = "another record"
_CHECKPOINT_KEYS = frozenset({"note", "size", "root"})
_PROOF_KEYS = frozenset({"format", "vault_id", "seq", "entry", "leaf_hash", "proof", "checkpoint"})


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


def _commitment(report: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the RFC 8785 canonical JSON of the committed report keys."""
    core = {key: report[key] for key in _COMMITTED}
    return hashlib.sha256(bytes(rfc8785.dumps(core))).hexdigest()


def _about_digest(leaves: Iterable[bytes]) -> str:
    """SHA-256 (hex) of the concatenated leaf hashes of the entries about a record."""
    digest = hashlib.sha256()
    for leaf in leaves:
        digest.update(leaf)
    return digest.hexdigest()


def redacted_digest(items: Iterable[tuple[int, bytes]]) -> str:
    """SHA-256 (hex) binding the redacted texts of a report's entries to the log.

    The ``report.subject`` entry carries it (``redacted_digest``), so a
    redacted entry's shown content is what the vault logged at report time,
    not something added to the report afterwards.
    """
    digest = hashlib.sha256()
    for seq, text in items:
        digest.update(f"{seq}:{len(text)}:".encode("ascii") + text)
    return digest.hexdigest()


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


def _redacted_entry(
    text: object, seq: int, stated_leaf: object, record_id: str
) -> tuple[bytes, dict[str, Any]]:
    """Check a redacted entry: canonical, its sequence number, only other ids replaced.

    The leaf hash cannot be recomputed (the exact bytes are withheld); the
    caller proves it against the signed root like any other.
    """
    entry = _str(text, _t("entry {seq}", seq=seq))
    raw = entry.encode("utf-8", "replace")
    if len(raw) > _MAX_ENTRY_BYTES:
        raise _bad(_t("entry {seq} is too large", seq=seq))
    leaf = _hash(stated_leaf, _t("the leaf hash of entry {seq}", seq=seq))
    try:
        obj = json.loads(raw)
        canonical = bytes(rfc8785.dumps(obj))
    except (ValueError, TypeError, RecursionError, OverflowError):
        raise _bad(_t("entry {seq} is not a canonical log entry", seq=seq)) from None
    if canonical != raw or not isinstance(obj, dict):
        raise _bad(_t("entry {seq} is not a canonical log entry", seq=seq))
    if obj.get("seq") != seq or isinstance(obj.get("seq"), bool):
        raise _bad(_t("entry {seq} carries another sequence number", seq=seq))
    records = obj.get("records")
    if (
        not isinstance(records, list)
        or record_id not in records
        or ANOTHER_RECORD not in records
        or any(r not in (record_id, ANOTHER_RECORD) for r in records)
    ):
        raise _bad(
            _t(
                "entry {seq} is marked redacted but is not a redacted entry about the record",
                seq=seq,
            )
        )
    return leaf, obj


def _entry_text(seq: int, entry: bytes) -> str:
    """A stored entry as the text a report carries (its UTF-8 is the hashed bytes)."""
    try:
        return entry.decode("utf-8")
    except UnicodeDecodeError:
        raise IntegrityError(
            _t("audit log entry {seq} is not valid text: run `childvault audit verify`", seq=seq)
        ) from None


def _origin(vault_id: str) -> str:
    # Same text as vault._vault.log_origin; repeated here so the standalone
    # verifier does not import the facade.
    return f"childvault/{vault_id}"


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


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class ProofVerification:
    """What a successful standalone verification established.

    ``proven`` lists the sequence numbers of the entries whose inclusion proofs
    verified against the checkpoint (of ``checkpoint_size`` entries, signed by
    ``signers``). ``pending`` lists entries newer than that checkpoint, which
    the report could not prove yet. ``data_authenticated`` is true when the
    report's data, consent and bookkeeping are bound, through its proven
    ``report.subject`` entry, to the signed log.
    """

    kind: str
    vault_id: str
    record_id: str | None
    checkpoint_size: int
    checkpoint_root: str
    signers: tuple[str, ...]
    proven: tuple[int, ...]
    pending: tuple[int, ...]
    data_authenticated: bool

    @property
    def complete(self) -> bool:
        """Every entry is proven (and, for a subject report, its data authenticated)."""
        if self.kind == "subject-report":
            return not self.pending and self.data_authenticated
        return not self.pending

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return {
            "ok": True,
            "kind": self.kind,
            "vault_id": self.vault_id,
            "record_id": self.record_id,
            "checkpoint_size": self.checkpoint_size,
            "checkpoint_root": self.checkpoint_root,
            "signers": list(self.signers),
            "proven": list(self.proven),
            "pending": list(self.pending),
            "data_authenticated": self.data_authenticated,
            "complete": self.complete,
        }


def _bad(message: str) -> IntegrityError:
    return IntegrityError(_t("proof verification failed: {message}", message=message))


def _known_signers(vkeys: Sequence[str] | str) -> dict[str, bytes]:
    if isinstance(vkeys, str):
        vkeys = [vkeys]
    known: dict[str, bytes] = {}
    for text in vkeys:
        try:
            name, key = parse_vkey(text)
        except IntegrityError:
            raise UsageError(
                _t(
                    "a verifier key is malformed: give the vkey strings exactly as printed by "
                    "`childvault audit checkpoint --json` or `childvault user list --json`"
                )
            ) from None
        known.setdefault(name, key)
    if not known:
        raise UsageError(
            _t("no verifier key given: pass the institution's published checkpoint vkeys")
        )
    return known


def _require_keys(obj: object, allowed: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _bad(_t("{what} is not a JSON object", what=what))
    if set(obj) != allowed:
        raise _bad(_t("{what} does not have exactly the expected keys", what=what))
    return obj


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
        raise _bad(_t("{what} is not a valid number", what=what))
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _bad(_t("{what} is not text", what=what))
    return value


def _hash(value: object, what: str) -> bytes:
    if not isinstance(value, str) or _HEX64.fullmatch(value) is None:
        raise _bad(_t("{what} is not a SHA-256 hash in lowercase hex", what=what))
    return bytes.fromhex(value)


def _checkpoint(
    obj: object, vault_id: str, known: Mapping[str, bytes]
) -> tuple[Checkpoint, list[str]]:
    doc = _require_keys(obj, _CHECKPOINT_KEYS, _t("the checkpoint"))
    note = _str(doc["note"], _t("the checkpoint note"))
    try:
        cp, names = verify_note(note, known)
    except IntegrityError as exc:
        raise _bad(
            _t(
                "the checkpoint signature does not verify with the given keys ({exc})",
                # The inner message itself (a ChildVaultError's only argument): translated too.
                exc=exc.args[0],
            )
        ) from None
    if cp.origin != _origin(vault_id):
        raise _bad(_t("the checkpoint is for another log than the report's vault"))
    if _int(doc["size"], _t("the checkpoint size")) != cp.size:
        raise _bad(_t("the checkpoint size differs from the signed note"))
    if _hash(doc["root"], _t("the checkpoint root")) != cp.root:
        raise _bad(_t("the checkpoint root differs from the signed note"))
    return cp, names


def _entry(text: object, seq: int, stated_leaf: object) -> tuple[bytes, bytes, dict[str, Any]]:
    """Check one carried entry: its bytes, leaf hash, canonical form and sequence number."""
    entry = _str(text, _t("entry {seq}", seq=seq))
    try:
        raw = entry.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(_t("entry {seq} is not valid text", seq=seq)) from None
    if len(raw) > _MAX_ENTRY_BYTES:
        raise _bad(_t("entry {seq} is too large", seq=seq))
    leaf = leaf_hash(raw)
    if _hash(stated_leaf, _t("the leaf hash of entry {seq}", seq=seq)) != leaf:
        raise _bad(_t("entry {seq} does not match its leaf hash (the entry was altered)", seq=seq))
    try:
        obj = json.loads(raw)
        canonical = bytes(rfc8785.dumps(obj))
    except (ValueError, TypeError, RecursionError, OverflowError):
        raise _bad(_t("entry {seq} is not a canonical log entry", seq=seq)) from None
    if canonical != raw or not isinstance(obj, dict):
        raise _bad(_t("entry {seq} is not a canonical log entry", seq=seq))
    if obj.get("seq") != seq or isinstance(obj.get("seq"), bool):
        raise _bad(_t("entry {seq} carries another sequence number", seq=seq))
    return raw, leaf, obj


def _proof(value: object, seq: int) -> list[bytes]:
    if not isinstance(value, list) or len(value) > 64:
        raise _bad(_t("the proof of entry {seq} is malformed", seq=seq))
    return [_hash(h, _t("a proof hash of entry {seq}", seq=seq)) for h in value]


def _guarded(fn: Callable[[], ProofVerification]) -> ProofVerification:
    """Run a verifier; any unexpected shape of hostile input is an IntegrityError.

    The checks above are explicit, but a verifier fed by third parties must
    fail closed even on a shape nobody thought of, never with a crash.
    """
    try:
        return fn()
    except ChildVaultError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError) as exc:
        raise _bad(_t("the document is malformed ({kind})", kind=type(exc).__name__)) from None


def verify_subject_report(
    report: Mapping[str, Any],
    vkeys: Sequence[str] | str,
    *,
    previous: Mapping[str, Any] | None = None,
) -> ProofVerification:
    """Verify a subject-access report without the database.

    ``vkeys`` are the institution's checkpoint verifier keys (signed-note
    ``vkey`` strings, published by ``childvault user list --json``). Checks:
    the checkpoint note is signed by one of them and is for the report's
    vault; every entry's bytes hash to its leaf hash, are canonical JSON about
    the report's record with the stated sequence number, and (if covered by
    the checkpoint) its RFC 6962 inclusion proof leads to the signed root;
    entries marked not yet checkpointed really are newer than the checkpoint;
    the report's data, consent and bookkeeping match the commitment in its
    ``report.subject`` entry, and the entries before that one are exactly the
    entries about the record that it counted (none left out or added).

    ``previous``: an earlier report about the same record, kept by the
    child or guardian. It is verified too, and every entry it proved must
    reappear byte for byte in this report if this report's checkpoint covers
    it: an entry about the record that was rewritten or removed since fails.

    Returns a :class:`ProofVerification`; check ``complete`` (or ``pending``
    and ``data_authenticated``) before trusting the report fully. Raises
    :class:`IntegrityError` on any failure, :class:`UsageError` for a
    malformed vkey.
    """
    known = _known_signers(vkeys)
    result = _guarded(lambda: _verify_report(report, known))
    if previous is not None:
        earlier = _guarded(lambda: _verify_report(previous, known))
        _guarded(lambda: _compare(previous, earlier, report, result))
    return result


def _verify_report(report: Mapping[str, Any], known: Mapping[str, bytes]) -> ProofVerification:
    doc = _require_keys(
        dict(report) if isinstance(report, Mapping) else report, _REPORT_KEYS, _t("the report")
    )
    if doc["format"] != SUBJECT_REPORT_FORMAT:
        raise _bad(
            _t(
                "not a subject report (format must be {format})",
                format=SUBJECT_REPORT_FORMAT,
            )
        )
    vault_id = _str(doc["vault_id"], _t("the vault id"))
    record_id = _str(doc["record_id"], _t("the record id"))
    if not is_hex_id(vault_id) or not is_hex_id(record_id):
        raise _bad(_t("the vault or record id is malformed"))
    try:
        commitment = _commitment(doc)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise _bad(_t("the report's data cannot be canonicalised")) from None
    if _str(doc["commitment"], _t("the commitment")) != commitment:
        raise _bad(
            _t("the report's data, consent or bookkeeping were altered (commitment mismatch)")
        )
    cp, signers = _checkpoint(doc["checkpoint"], vault_id, known)
    entries = doc["entries"]
    if not isinstance(entries, list) or not entries or len(entries) > _MAX_ENTRIES:
        raise _bad(_t("the report lists no log entries"))
    proven: list[int] = []
    pending: list[int] = []
    authenticated: bool | None = None
    prior: list[bytes] = []
    redactions: list[tuple[int, bytes]] = []
    last = -1
    for item in entries:
        redacted = isinstance(item, dict) and item.get("redacted") is True
        e = _require_keys(
            item, _REDACTED_ENTRY_KEYS if redacted else _REPORT_ENTRY_KEYS, _t("a report entry")
        )
        seq = _int(e["seq"], _t("an entry's sequence number"))
        if seq <= last:
            raise _bad(_t("the entries are not in strictly increasing sequence order"))
        last = seq
        if redacted:
            leaf, obj = _redacted_entry(e["entry"], seq, e["leaf_hash"], record_id)
            if authenticated is not None:
                raise _bad(
                    _t("entry {seq} is redacted but comes after the report's own entry", seq=seq)
                )
            redactions.append((seq, e["entry"].encode("utf-8")))
        else:
            _, leaf, obj = _entry(e["entry"], seq, e["leaf_hash"])
        records = obj.get("records")
        if not isinstance(records, list) or record_id not in records:
            raise _bad(_t("entry {seq} is not about the report's record", seq=seq))
        proof = _proof(e["proof"], seq)
        checkpointed = e["checkpointed"]
        if checkpointed is True:
            if not verify_inclusion(leaf, seq, cp.size, proof, cp.root):
                raise _bad(
                    _t(
                        "the inclusion proof of entry {seq} does not lead to the signed root",
                        seq=seq,
                    )
                )
            proven.append(seq)
        elif checkpointed is False:
            if seq < cp.size or proof:
                raise _bad(
                    _t(
                        "entry {seq} is covered by the checkpoint but carries no valid proof",
                        seq=seq,
                    )
                )
            pending.append(seq)
        else:
            raise _bad(_t("entry {seq}: 'checkpointed' must be true or false", seq=seq))
        detail = obj.get("detail")
        if (
            authenticated is None
            and obj.get("action") == "report.subject"
            and isinstance(detail, dict)
            and detail.get("commitment") == commitment
            and records == [record_id]
        ):
            # The report's own entry: everything about the record before it
            # must be in the report, no more, no less.
            if detail.get("about") != len(prior) or detail.get("about_digest") != _about_digest(
                prior
            ):
                raise _bad(
                    _t(
                        "the report leaves out (or adds) log entries about the record made "
                        "before it"
                    )
                )
            # Redacted entries show what the vault logged for them at report time.
            logged = detail.get("redacted_digest")
            if (logged is None and redactions) or (
                logged is not None and logged != redacted_digest(redactions)
            ):
                raise _bad(
                    _t("the redacted entries differ from what the report's own entry logged")
                )
            authenticated = checkpointed is True
        prior.append(leaf)
    if authenticated is None:
        raise _bad(_t("the report's own report.subject entry is missing"))
    pend = _require_keys(doc["pending"], frozenset({"entries", "message"}), _t("the pending note"))
    if _int(pend["entries"], _t("the pending count")) != len(pending):
        raise _bad(_t("the pending count does not match the entries"))
    _str(pend["message"], _t("the pending message"))
    return ProofVerification(
        "subject-report",
        vault_id,
        record_id,
        cp.size,
        cp.root.hex(),
        tuple(signers),
        tuple(proven),
        tuple(pending),
        authenticated,
    )


def _compare(
    old: Mapping[str, Any],
    old_result: ProofVerification,
    new: Mapping[str, Any],
    new_result: ProofVerification,
) -> ProofVerification:
    if (old_result.vault_id, old_result.record_id) != (new_result.vault_id, new_result.record_id):
        raise _bad(_t("the earlier report is about another vault or record"))
    new_entries = {e["seq"]: (e["entry"], e["leaf_hash"]) for e in new["entries"]}
    for e in old["entries"]:
        seq = e["seq"]
        if seq not in old_result.proven or seq >= new_result.checkpoint_size:
            continue
        if new_entries.get(seq) != (e["entry"], e["leaf_hash"]):
            raise _bad(
                _t(
                    "entry {seq} of the earlier report is missing or different in this report: "
                    "a log entry about the record was rewritten or removed",
                    seq=seq,
                )
            )
    return new_result


def verify_entry_proof(bundle: Mapping[str, Any], vkeys: Sequence[str] | str) -> ProofVerification:
    """Verify one entry's inclusion proof (``childvault audit prove --entry N --json``).

    Checks the checkpoint note against ``vkeys`` and the vault's origin, the
    entry's bytes against its leaf hash and sequence number, and the RFC 6962
    proof against the signed root. Raises :class:`IntegrityError` on any
    failure, :class:`UsageError` for a malformed vkey.
    """
    known = _known_signers(vkeys)
    return _guarded(lambda: _verify_bundle(bundle, known))


def _verify_bundle(bundle: Mapping[str, Any], known: Mapping[str, bytes]) -> ProofVerification:
    doc = _require_keys(
        dict(bundle) if isinstance(bundle, Mapping) else bundle, _PROOF_KEYS, _t("the proof")
    )
    if doc["format"] != ENTRY_PROOF_FORMAT:
        raise _bad(
            _t(
                "not an entry proof (format must be {format})",
                format=ENTRY_PROOF_FORMAT,
            )
        )
    vault_id = _str(doc["vault_id"], _t("the vault id"))
    if not is_hex_id(vault_id):
        raise _bad(_t("the vault id is malformed"))
    cp, signers = _checkpoint(doc["checkpoint"], vault_id, known)
    seq = _int(doc["seq"], _t("the sequence number"))
    _, leaf, _ = _entry(doc["entry"], seq, doc["leaf_hash"])
    if not verify_inclusion(leaf, seq, cp.size, _proof(doc["proof"], seq), cp.root):
        raise _bad(
            _t("the inclusion proof of entry {seq} does not lead to the signed root", seq=seq)
        )
    return ProofVerification(
        "entry-proof", vault_id, None, cp.size, cp.root.hex(), tuple(signers), (seq,), (), False
    )


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
