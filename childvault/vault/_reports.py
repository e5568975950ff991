"""Reports and exports: subject access (M-17, P-19), breach impact (P-21),
anonymised statistics (M-3, M-14) and audit inclusion proofs.

A mixin of :class:`vault.Vault`; it uses the facade's store, providers and log.
The standalone verifiers (:func:`verify_subject_report`,
:func:`verify_entry_proof`) need no database: a child, a guardian or an
auditor checks a report with nothing but the report and the institution's
published checkpoint verifier keys (``vkey`` strings).

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
  into a fully proven report with :meth:`ReportsMixin.complete_subject_report`
  (``childvault audit prove --complete``).
- The report's data, consent and bookkeeping are bound to the log by a salted
  commitment in its ``report.subject`` entry: the log holds only a hash of
  them under a random 32-byte salt that only the report carries, so the log
  stays free of child data and a guess of a low-entropy value cannot be
  confirmed from the log alone. The same entry records how many entries about
  the record precede it and a digest of their leaf hashes, taken under the
  append lock, so a verifier can tell that the report leaves none out.
- The anonymised export writes aggregated counts per equivalence class, never
  one row per child, and suppresses every class smaller than ``k``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rfc8785

from childvault.keys import (
    ChildVaultError,
    IntegrityError,
    NotFound,
    Selection,
    UsageError,
    WrappedRecord,
    check_user_name,
)
from childvault.keys._files import atomic_write
from childvault.vault import _audit
from childvault.vault._audit import DetailValue, Event
from childvault.vault._consent import age_on
from childvault.vault._merkle import Frontier, leaf_hash, verify_inclusion
from childvault.vault._note import Checkpoint, parse_vkey, verify_note, vkey
from childvault.vault._time import iso, today
from childvault.vault._validators import district_of

if TYPE_CHECKING:
    from childvault.keys import Identity, KeyProvider, ReleasedKeys
    from childvault.vault._config import Config
    from childvault.vault._schema import FieldSpec, Schema
    from childvault.vault._store import RecordRow, Store
    from childvault.vault._tokens import GrantClaims

__all__ = [
    "AGE_BANDS",
    "ENTRY_PROOF_FORMAT",
    "EXPORT_PURPOSE",
    "INCIDENT_FORMAT",
    "SUBJECT_REPORT_FORMAT",
    "ProofVerification",
    "ReportsMixin",
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
_ID_RE = re.compile(r"[0-9a-f]{32}")
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


def _check_record_id(value: str) -> str:
    if not isinstance(value, str) or _ID_RE.fullmatch(value) is None:
        raise NotFound(f"no record {value!r}: ids are 32 lowercase hex characters")
    return value


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


def _decoded(entry: bytes) -> dict[str, Any]:
    """A stored entry as an object; a malformed one fails closed."""
    try:
        return _audit.decode_entry(entry)
    except (ValueError, IntegrityError):
        raise IntegrityError(
            "an audit log entry is not a valid entry: run `childvault audit verify`"
        ) from None


def _entry_text(seq: int, entry: bytes) -> str:
    """A stored entry as the text a report carries (its UTF-8 is the hashed bytes)."""
    try:
        return entry.decode("utf-8")
    except UnicodeDecodeError:
        raise IntegrityError(
            f"audit log entry {seq} is not valid text: run `childvault audit verify`"
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
            raise ValueError("inclusion proof index is outside the tree")
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
                f"the audit log has {len(leaves)} entries but a signed checkpoint covers "
                f"{cp.size}: it was truncated; run `childvault audit verify`"
            )
        while frontier.size < cp.size:
            frontier.append(leaves.get(frontier.size))
        if frontier.root() != cp.root:
            raise IntegrityError(
                "the audit log does not match a signed checkpoint (it was rewritten): run "
                "`childvault audit verify`"
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
    return IntegrityError(f"proof verification failed: {message}")


def _known_signers(vkeys: Sequence[str] | str) -> dict[str, bytes]:
    if isinstance(vkeys, str):
        vkeys = [vkeys]
    known: dict[str, bytes] = {}
    for text in vkeys:
        try:
            name, key = parse_vkey(text)
        except IntegrityError:
            raise UsageError(
                "a verifier key is malformed: give the vkey strings exactly as printed by "
                "`childvault audit checkpoint --json` or `childvault user list --json`"
            ) from None
        known.setdefault(name, key)
    if not known:
        raise UsageError("no verifier key given: pass the institution's published checkpoint vkeys")
    return known


def _require_keys(obj: object, allowed: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _bad(f"{what} is not a JSON object")
    if set(obj) != allowed:
        raise _bad(f"{what} does not have exactly the expected keys")
    return obj


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
        raise _bad(f"{what} is not a valid number")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _bad(f"{what} is not text")
    return value


def _hash(value: object, what: str) -> bytes:
    if not isinstance(value, str) or _HEX64.fullmatch(value) is None:
        raise _bad(f"{what} is not a SHA-256 hash in lowercase hex")
    return bytes.fromhex(value)


def _checkpoint(
    obj: object, vault_id: str, known: Mapping[str, bytes]
) -> tuple[Checkpoint, list[str]]:
    doc = _require_keys(obj, _CHECKPOINT_KEYS, "the checkpoint")
    note = _str(doc["note"], "the checkpoint note")
    try:
        cp, names = verify_note(note, known)
    except IntegrityError as exc:
        raise _bad(
            f"the checkpoint signature does not verify with the given keys ({exc})"
        ) from None
    if cp.origin != _origin(vault_id):
        raise _bad("the checkpoint is for another log than the report's vault")
    if _int(doc["size"], "the checkpoint size") != cp.size:
        raise _bad("the checkpoint size differs from the signed note")
    if _hash(doc["root"], "the checkpoint root") != cp.root:
        raise _bad("the checkpoint root differs from the signed note")
    return cp, names


def _entry(text: object, seq: int, stated_leaf: object) -> tuple[bytes, bytes, dict[str, Any]]:
    """Check one carried entry: its bytes, leaf hash, canonical form and sequence number."""
    entry = _str(text, f"entry {seq}")
    try:
        raw = entry.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(f"entry {seq} is not valid text") from None
    if len(raw) > _MAX_ENTRY_BYTES:
        raise _bad(f"entry {seq} is too large")
    leaf = leaf_hash(raw)
    if _hash(stated_leaf, f"the leaf hash of entry {seq}") != leaf:
        raise _bad(f"entry {seq} does not match its leaf hash (the entry was altered)")
    try:
        obj = json.loads(raw)
        canonical = bytes(rfc8785.dumps(obj))
    except (ValueError, TypeError, RecursionError, OverflowError):
        raise _bad(f"entry {seq} is not a canonical log entry") from None
    if canonical != raw or not isinstance(obj, dict):
        raise _bad(f"entry {seq} is not a canonical log entry")
    if obj.get("seq") != seq or isinstance(obj.get("seq"), bool):
        raise _bad(f"entry {seq} carries another sequence number")
    return raw, leaf, obj


def _proof(value: object, seq: int) -> list[bytes]:
    if not isinstance(value, list) or len(value) > 64:
        raise _bad(f"the proof of entry {seq} is malformed")
    return [_hash(h, f"a proof hash of entry {seq}") for h in value]


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
        raise _bad(f"the document is malformed ({type(exc).__name__})") from None


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
        dict(report) if isinstance(report, Mapping) else report, _REPORT_KEYS, "the report"
    )
    if doc["format"] != SUBJECT_REPORT_FORMAT:
        raise _bad(f"not a subject report (format must be {SUBJECT_REPORT_FORMAT})")
    vault_id = _str(doc["vault_id"], "the vault id")
    record_id = _str(doc["record_id"], "the record id")
    if _ID_RE.fullmatch(vault_id) is None or _ID_RE.fullmatch(record_id) is None:
        raise _bad("the vault or record id is malformed")
    try:
        commitment = _commitment(doc)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise _bad("the report's data cannot be canonicalised") from None
    if _str(doc["commitment"], "the commitment") != commitment:
        raise _bad("the report's data, consent or bookkeeping were altered (commitment mismatch)")
    cp, signers = _checkpoint(doc["checkpoint"], vault_id, known)
    entries = doc["entries"]
    if not isinstance(entries, list) or not entries or len(entries) > _MAX_ENTRIES:
        raise _bad("the report lists no log entries")
    proven: list[int] = []
    pending: list[int] = []
    authenticated: bool | None = None
    prior: list[bytes] = []
    last = -1
    for item in entries:
        e = _require_keys(item, _REPORT_ENTRY_KEYS, "a report entry")
        seq = _int(e["seq"], "an entry's sequence number")
        if seq <= last:
            raise _bad("the entries are not in strictly increasing sequence order")
        last = seq
        _, leaf, obj = _entry(e["entry"], seq, e["leaf_hash"])
        records = obj.get("records")
        if not isinstance(records, list) or record_id not in records:
            raise _bad(f"entry {seq} is not about the report's record")
        proof = _proof(e["proof"], seq)
        checkpointed = e["checkpointed"]
        if checkpointed is True:
            if not verify_inclusion(leaf, seq, cp.size, proof, cp.root):
                raise _bad(f"the inclusion proof of entry {seq} does not lead to the signed root")
            proven.append(seq)
        elif checkpointed is False:
            if seq < cp.size or proof:
                raise _bad(f"entry {seq} is covered by the checkpoint but carries no valid proof")
            pending.append(seq)
        else:
            raise _bad(f"entry {seq}: 'checkpointed' must be true or false")
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
                    "the report leaves out (or adds) log entries about the record made before it"
                )
            authenticated = checkpointed is True
        prior.append(leaf)
    if authenticated is None:
        raise _bad("the report's own report.subject entry is missing")
    pend = _require_keys(doc["pending"], frozenset({"entries", "message"}), "the pending note")
    if _int(pend["entries"], "the pending count") != len(pending):
        raise _bad("the pending count does not match the entries")
    _str(pend["message"], "the pending message")
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
        raise _bad("the earlier report is about another vault or record")
    new_entries = {e["seq"]: e["entry"] for e in new["entries"]}
    for e in old["entries"]:
        seq = e["seq"]
        if seq not in old_result.proven or seq >= new_result.checkpoint_size:
            continue
        if new_entries.get(seq) != e["entry"]:
            raise _bad(
                f"entry {seq} of the earlier report is missing or different in this report: "
                "a log entry about the record was rewritten or removed"
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
        dict(bundle) if isinstance(bundle, Mapping) else bundle, _PROOF_KEYS, "the proof"
    )
    if doc["format"] != ENTRY_PROOF_FORMAT:
        raise _bad(f"not an entry proof (format must be {ENTRY_PROOF_FORMAT})")
    vault_id = _str(doc["vault_id"], "the vault id")
    if _ID_RE.fullmatch(vault_id) is None:
        raise _bad("the vault id is malformed")
    cp, signers = _checkpoint(doc["checkpoint"], vault_id, known)
    seq = _int(doc["seq"], "the sequence number")
    _, leaf, _ = _entry(doc["entry"], seq, doc["leaf_hash"])
    if not verify_inclusion(leaf, seq, cp.size, _proof(doc["proof"], seq), cp.root):
        raise _bad(f"the inclusion proof of entry {seq} does not lead to the signed root")
    return ProofVerification(
        "entry-proof", vault_id, None, cp.size, cp.root.hex(), tuple(signers), (seq,), (), False
    )


# ---------------------------------------------------------------------- mixin


class ReportsMixin:
    """Report methods of :class:`vault.Vault`."""

    if TYPE_CHECKING:
        _store: Store
        _me: Identity
        _schema: Schema
        _config: Config
        _roles: frozenset[str]

        @property
        def vault_id(self) -> str: ...
        @property
        def user(self) -> str: ...
        @property
        def witness_path(self) -> Path: ...
        def setting(self, key: str) -> str: ...
        def _now(self, now: datetime | None) -> datetime: ...
        def _log(self, events: Sequence[Event], now: datetime) -> None: ...
        def _require(self, roles: Sequence[str], action: str, now: datetime, what: str) -> None: ...
        def _officer_provider(self) -> KeyProvider: ...
        def _writer_provider(self) -> KeyProvider: ...
        def _decrypt(
            self, keys: ReleasedKeys, records: Sequence[str], fields: Sequence[str]
        ) -> dict[str, dict[str, str]]: ...
        def _signers(self) -> dict[str, bytes]: ...
        def _read_with_claims(
            self,
            token: str,
            records: Sequence[str] | None,
            fields: Sequence[str] | None,
            moment: datetime,
        ) -> tuple[GrantClaims, dict[str, dict[str, str]]]: ...
        def checkpoint(self, *, now: datetime | None = None) -> str: ...

    # ------------------------------------------------------------ log proofs

    def _latest_checkpoint(self) -> tuple[str, Checkpoint] | None:
        """The largest stored checkpoint, its signature and origin checked."""
        rows = self._store.list_checkpoints()
        if not rows:
            return None
        row = rows[-1]
        try:
            cp, _ = verify_note(row.note, self._signers())
        except IntegrityError as exc:
            raise IntegrityError(
                f"the latest stored checkpoint does not verify ({exc}): run "
                "`childvault audit verify`"
            ) from None
        if cp.origin != _origin(self.vault_id) or (cp.size, cp.root) != (row.size, row.root):
            raise IntegrityError(
                "the latest stored checkpoint does not match this log: "
                "run `childvault audit verify`"
            )
        return row.note, cp

    def _scan(
        self, leaves: _Leaves, want: Callable[[bytes], bool], out: list[tuple[int, bytes]]
    ) -> None:
        """Append the leaves from ``len(leaves)`` on, re-hashing every entry."""
        start = len(leaves)
        for seq, entry, digest in self._store.iter_audit(start):
            if seq != len(leaves):
                raise IntegrityError(
                    f"audit log entry {len(leaves)} is missing: run `childvault audit verify`"
                )
            leaf = leaf_hash(entry)
            if leaf != digest:
                raise IntegrityError(
                    f"audit log entry {seq} was modified: run `childvault audit verify`"
                )
            leaves.append(leaf)
            if want(entry):
                out.append((seq, entry))

    def _snapshot(
        self,
        want: Callable[[bytes], bool],
        *,
        sign: bool,
        moment: datetime,
        leaves: _Leaves | None = None,
        wanted: list[tuple[int, bytes]] | None = None,
    ) -> _Snapshot:
        """Scan the log for proofs; with ``sign``, first cover it with a new checkpoint.

        Fails closed (:class:`IntegrityError`) if an entry's bytes no longer
        match its hash, or the log does not extend the latest checkpoint: a
        proof from a rewritten log would be worthless, and a new checkpoint
        over it would bless the rewrite. ``leaves`` and ``wanted`` continue an
        earlier scan of the same log.
        """
        leaves = leaves if leaves is not None else _Leaves()
        wanted = wanted if wanted is not None else []
        self._scan(leaves, want, wanted)
        latest = self._latest_checkpoint()
        held = [latest[1]] if latest is not None else []
        _check_prefixes(leaves, held + self._witnessed())
        if sign and (latest is None or latest[1].size < len(leaves)):
            self.checkpoint(now=moment)
            self._scan(leaves, want, wanted)
            latest = self._latest_checkpoint()
            if latest is not None:
                _check_prefixes(leaves, [latest[1]])
        if latest is None:
            return _Snapshot(leaves, wanted, None, None)
        return _Snapshot(leaves, wanted, latest[0], latest[1])

    def _witnessed(self) -> list[Checkpoint]:
        """The checkpoints in the witness file, each signature and origin checked."""
        out: list[Checkpoint] = []
        signers = self._signers()
        for number, note in enumerate(_audit.read_witness(self.witness_path), start=1):
            try:
                cp, _ = verify_note(note, signers)
            except IntegrityError:
                raise IntegrityError(
                    f"witness checkpoint {number} does not verify: run `childvault audit verify`"
                ) from None
            if cp.origin != _origin(self.vault_id):
                raise IntegrityError(
                    f"witness checkpoint {number} is for another log: check the witness file"
                )
            out.append(cp)
        return out

    @staticmethod
    def _checkpoint_json(snap: _Snapshot) -> dict[str, Any]:
        if snap.note is None or snap.checkpoint is None:
            raise IntegrityError(
                "the audit log has no signed checkpoint yet: ask an officer to run "
                "`childvault audit checkpoint`"
            )
        return {
            "note": snap.note,
            "size": snap.checkpoint.size,
            "root": snap.checkpoint.root.hex(),
        }

    def _entries_json(self, snap: _Snapshot) -> list[dict[str, Any]]:
        size = snap.checkpoint.size if snap.checkpoint is not None else 0
        proofs = _inclusion_proofs(snap.leaves, size, [s for s, _ in snap.wanted if s < size])
        return [
            {
                "seq": seq,
                "entry": _entry_text(seq, entry),
                "leaf_hash": snap.leaves.get(seq).hex(),
                "checkpointed": seq < size,
                "proof": [h.hex() for h in proofs.get(seq, [])],
            }
            for seq, entry in snap.wanted
        ]

    def prove_entry(self, seq: int, *, now: datetime | None = None) -> dict[str, Any]:
        """Officer or admin: an inclusion proof of log entry ``seq`` (``audit prove``).

        If the latest checkpoint does not cover the entry yet, a new one is
        signed (and witnessed) first. The result is a self-contained document
        (format :data:`ENTRY_PROOF_FORMAT`) that :func:`verify_entry_proof`
        checks without the database: the entry as its exact canonical JSON
        text, its leaf hash, the RFC 6962 audit path and the signed checkpoint.
        """
        moment = self._now(now)
        self._require(("officer", "admin"), "audit.read", moment, "proving log entries")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise UsageError("--entry must be a log sequence number (0 or more)")
        if self._store.audit_entry(seq) is None:
            raise NotFound(f"no audit log entry {seq}")
        latest = self._latest_checkpoint()
        sign = latest is None or latest[1].size <= seq
        snap = self._snapshot(lambda _e: False, sign=sign, moment=moment)
        if snap.checkpoint is None or snap.checkpoint.size <= seq:
            raise IntegrityError(f"no signed checkpoint covers entry {seq} yet")
        proof = _inclusion_proofs(snap.leaves, snap.checkpoint.size, [seq])[seq]
        entry = self._store.audit_entry(seq)
        if entry is None or leaf_hash(entry[0]) != snap.leaves.get(seq):
            raise IntegrityError(f"audit log entry {seq} changed while it was being proven")
        return {
            "format": ENTRY_PROOF_FORMAT,
            "vault_id": self.vault_id,
            "seq": seq,
            "entry": _entry_text(seq, entry[0]),
            "leaf_hash": snap.leaves.get(seq).hex(),
            "proof": [h.hex() for h in proof],
            "checkpoint": self._checkpoint_json(snap),
        }

    # -------------------------------------------------------- subject access

    def subject_report(
        self, record_id: str, token: str, *, now: datetime | None = None
    ) -> dict[str, Any]:
        """Subject-access report (M-17, P-19) for the child or guardian.

        ``token`` is an approval token issued to the acting user for this
        record: the data is read through :meth:`read_with_grant`, so the token
        is verified and the read is logged like any other; the report discloses
        exactly the granted fields. The report also gives the record's consent
        and retention and every log entry about the record, each with an
        RFC 6962 inclusion proof against the latest signed checkpoint, and is
        logged as ``report.subject`` with a salted commitment to its content.

        An officer or admin signs a new checkpoint first, so every entry is
        proven. Staff cannot sign: entries newer than the latest checkpoint
        (at least the report's own read) are marked ``"checkpointed": false``;
        an officer completes the proofs with :meth:`complete_subject_report`.
        Check the result with :func:`verify_subject_report`.
        """
        moment = self._now(now)
        _check_record_id(record_id)
        claims, values = self._read_with_claims(token, [record_id], None, moment)
        data = values.get(record_id, {})
        row = self._store.get_record(record_id)
        if row is None:
            raise NotFound(f"record {record_id} was deleted while the report was being made")
        rtype = self._schema.types.get(row.type)
        order = list(rtype.fields) if rtype is not None else sorted(data)
        held = self._store.field_names(record_id)
        disclosed = [f for f in order if f in data]
        report: dict[str, Any] = {
            "format": SUBJECT_REPORT_FORMAT,
            "vault_id": self.vault_id,
            "institution": self._config.institution,
            "record_id": record_id,
            "generated_at": iso(moment),
            "generated_by": self.user,
            "record": {
                "type": row.type,
                "version": row.version,
                "created_at": row.created_at,
                "updated_at": row.updated_at,
                "fields_held": [f for f in order if f in held or f in row.metadata],
                "fields_disclosed": disclosed,
                "fields_withheld": [f for f in order if f in held and f not in data],
            },
            "data": {f: data[f] for f in disclosed},
            "metadata": dict(sorted(row.metadata.items())),
            "consent": _consent_json(row),
            "retention": {
                "retain_until": row.retain_until,
                "at_expiry": "destroyed by crypto-shredding in the retention sweep (P-12)",
            },
            "grant": {"id": claims.jti, "request": claims.req, "purpose": claims.pur},
            "salt": secrets.token_hex(32),
        }
        report["commitment"] = _commitment(report)
        needle = record_id.encode("ascii")

        def about(entry: bytes) -> bool:
            return needle in entry and record_id in _decoded(entry).get("records", ())

        leaves = _Leaves()
        wanted: list[tuple[int, bytes]] = []
        self._scan(leaves, about, wanted)  # the bulk of the log, without holding the lock
        with self._store.write():
            # Under the append lock no entry can slip in between the scan and the
            # report's own entry, which records how many entries about the record
            # precede it and a digest of their leaf hashes: a verifier can then
            # tell that the report leaves none out.
            self._scan(leaves, about, wanted)
            _audit.append(
                self._store,
                [
                    Event(
                        self.user,
                        "report.subject",
                        records=[record_id],
                        fields=disclosed,
                        purpose=claims.pur,
                        request=claims.req,
                        grant=claims.jti,
                        detail={
                            "commitment": report["commitment"],
                            "about": len(wanted),
                            "about_digest": _about_digest(leaves.get(s) for s, _ in wanted),
                        },
                    )
                ],
                moment,
            )
        snap = self._snapshot(
            about,
            sign=bool({"officer", "admin"} & self._roles),
            moment=moment,
            leaves=leaves,
            wanted=wanted,
        )
        if snap.checkpoint is None:
            raise IntegrityError(
                "the audit log has no signed checkpoint yet: ask an officer to run "
                "`childvault audit checkpoint`, then make the report again"
            )
        report["checkpoint"] = self._checkpoint_json(snap)
        report["entries"] = self._entries_json(snap)
        report["pending"] = _pending_note(report["entries"])
        self._self_check(report)
        return report

    def complete_subject_report(
        self, report: Mapping[str, Any], *, now: datetime | None = None
    ) -> dict[str, Any]:
        """Officer or admin: prove the entries of a staff-made report that were pending.

        Every entry the report carries must still be in the log byte for byte
        (else :class:`IntegrityError`: the report or the log was altered). A new
        checkpoint is signed if needed, and every entry gets a proof against
        it. No field value is decrypted; the report's data is passed through
        unchanged, so its commitment still verifies.
        """
        moment = self._now(now)
        self._require(("officer", "admin"), "audit.read", moment, "completing report proofs")
        try:
            vault_id = report["vault_id"]
            entries = report["entries"]
            seqs = [int(e["seq"]) for e in entries]
            texts = [str(e["entry"]).encode("utf-8") for e in entries]
        except (KeyError, TypeError, ValueError, UnicodeEncodeError):
            raise UsageError("this file is not a childvault subject report") from None
        if report.get("format") != SUBJECT_REPORT_FORMAT:
            raise UsageError("this file is not a childvault subject report")
        if vault_id != self.vault_id:
            raise UsageError("this report is from another vault")
        for seq, text in zip(seqs, texts, strict=True):
            stored = self._store.audit_entry(seq) if seq >= 0 else None
            if stored is None or stored[0] != text:
                raise IntegrityError(
                    f"entry {seq} of the report differs from the audit log: the report or the "
                    "log was altered; run `childvault audit verify`"
                )
        latest = self._latest_checkpoint()
        sign = latest is None or latest[1].size <= max(seqs, default=-1)
        snap = self._snapshot(lambda _e: False, sign=sign, moment=moment)
        snap.wanted = list(zip(seqs, texts, strict=True))
        out = dict(report)
        out["checkpoint"] = self._checkpoint_json(snap)
        out["entries"] = self._entries_json(snap)
        out["pending"] = _pending_note(out["entries"])
        # Never hand back a report that does not verify: in particular one whose
        # data was altered after it was made (its commitment no longer matches).
        self._self_check(out)
        return out

    def _self_check(self, report: Mapping[str, Any]) -> None:
        vkeys = [vkey(name, key) for name, key in sorted(self._signers().items())]
        try:
            verify_subject_report(report, vkeys)
        except IntegrityError as exc:
            raise IntegrityError(
                f"the report does not verify, so it is not issued: {exc}"
            ) from None

    # --------------------------------------------------------- breach impact

    def incident_report(
        self,
        actor: str,
        since: datetime,
        until: datetime | None = None,
        *,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Officer or admin: breach impact of one user (P-21), from the audit log.

        Lists the records and fields ``actor`` read (``grant.read`` entries
        with outcome ok) or decrypted for an anonymised export
        (``export.anonymized``) between ``since`` and ``until`` (inclusive;
        default now), with counts per record and per field, and counts their
        denied or failed attempts separately. It is the basis for notifying
        the affected children and guardians; it holds record ids and field
        names only, no name or contact detail: those are read, like any data,
        through an approval. Logged as ``report.incident``.
        """
        moment = self._now(now)
        self._require(("officer", "admin"), "report.incident", moment, "breach-impact reports")
        check_user_name(actor)
        end = until if until is not None else moment
        if since.tzinfo is None or end.tzinfo is None:
            raise UsageError("give --since and --until with a time zone (or as UTC)")
        if since > end:
            raise UsageError("--since must not be after --until")
        lo, hi = iso(since), iso(end)
        self._log(
            [
                Event(
                    self.user,
                    "report.incident",
                    detail={"actor": actor, "since": lo, "until": hi},
                )
            ],
            moment,
        )
        per_record: dict[str, dict[str, Any]] = {}
        per_field: dict[str, dict[str, Any]] = {}
        denied_by_action: dict[str, int] = {}
        denied_records: dict[str, int] = {}
        denied = 0
        scanned = 0
        needle = json.dumps(actor).encode("utf-8")
        for seq, entry, digest in self._store.iter_audit():
            scanned += 1
            if leaf_hash(entry) != digest:
                raise IntegrityError(
                    f"audit log entry {seq} was modified: run `childvault audit verify`"
                )
            if needle not in entry:
                continue
            obj = _decoded(entry)
            ts = obj.get("ts")
            if obj.get("actor") != actor or not isinstance(ts, str) or not lo <= ts <= hi:
                continue
            action, outcome = obj.get("action"), obj.get("outcome")
            records = [r for r in obj.get("records", ()) if isinstance(r, str)]
            fields = [f for f in obj.get("fields", ()) if isinstance(f, str)]
            if outcome in ("denied", "error"):
                denied += 1
                denied_by_action[str(action)] = denied_by_action.get(str(action), 0) + 1
                for rid in records:
                    denied_records[rid] = denied_records.get(rid, 0) + 1
                continue
            if outcome != "ok" or action not in ("grant.read", "export.anonymized") or not records:
                continue
            kind = "read" if action == "grant.read" else "exported"
            for rid in records:
                item = per_record.setdefault(
                    rid,
                    {
                        "record_id": rid,
                        "read": {"events": 0, "fields": {}},
                        "exported": {"events": 0, "fields": {}},
                        "first": ts,
                        "last": ts,
                    },
                )
                item[kind]["events"] += 1
                item["last"] = ts
                for f in fields:
                    item[kind]["fields"][f] = item[kind]["fields"].get(f, 0) + 1
                    stats = per_field.setdefault(f, {"read": 0, "exported": 0, "records": set()})
                    stats[kind] += 1
                    stats["records"].add(rid)
        records_out = []
        for rid in sorted(per_record):
            item = per_record[rid]
            item["status"] = self._record_status(rid)
            records_out.append(item)
        return {
            "format": INCIDENT_FORMAT,
            "vault_id": self.vault_id,
            "generated_at": iso(moment),
            "generated_by": self.user,
            "actor": actor,
            "since": lo,
            "until": hi,
            "records": records_out,
            "fields": {
                f: {"read": s["read"], "exported": s["exported"], "records": len(s["records"])}
                for f, s in sorted(per_field.items())
            },
            "denied": {
                "attempts": denied,
                "by_action": dict(sorted(denied_by_action.items())),
                "records": dict(sorted(denied_records.items())),
            },
            "totals": {
                "records": len(records_out),
                "read_events": sum(r["read"]["events"] for r in records_out),
                "export_events": sum(r["exported"]["events"] for r in records_out),
                "denied_attempts": denied,
                "log_entries_scanned": scanned,
            },
            "contact_details": (
                "This report holds record ids and field names only, never names or contact "
                "details. To notify the affected children and guardians (P-21), file an access "
                "request for the contact fields of these records (for example guardian_name "
                "and guardian_phone) and have another officer approve it."
            ),
        }

    def _record_status(self, record_id: str) -> str:
        if self._store.get_record(record_id) is not None:
            return "live"
        return "deleted" if self._store.tombstone(record_id) is not None else "unknown"

    # ------------------------------------------------------ anonymised export

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
        moment = self._now(now)
        self._require(("officer",), "export.anonymized", moment, "anonymised exports")
        if not isinstance(k, int) or isinstance(k, bool) or not _MIN_K <= k <= _MAX_K:
            raise UsageError(f"--k must be a whole number from {_MIN_K} (5 or more advised)")
        if EXPORT_PURPOSE not in self._schema.purposes:
            raise UsageError(
                f"this vault's schema declares no {EXPORT_PURPOSE!r} purpose, so no record "
                "can have consented to statistics: nothing may be exported"
            )
        target = Path(out)
        if not target.parent.is_dir():
            raise UsageError(f"the directory of --out ({target.parent}) does not exist")
        plans = {
            name: {column: (f, how) for column, f, how in _export_plan(rt.fields)}
            for name, rt in self._schema.types.items()
        }
        header: list[str] = []
        for plan in plans.values():
            header.extend(c for c in plan if c not in header)
        export_id = secrets.token_hex(16)
        day = today(moment)
        notice = self.setting("notice_version")
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
            self._log(
                [
                    Event(
                        self.user,
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
        self._log(
            [Event(self.user, "export.anonymized", purpose=EXPORT_PURPOSE, detail=summary)],
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
            page = self._store.iter_records(after=after, limit=_EXPORT_BATCH)
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
            blob = self._store.get_keyblob(row.id)
            if blob is None:
                continue  # deleted meanwhile
            rtype = self._schema.types.get(row.type)
            if rtype is None:
                continue
            held = set(self._store.field_names(row.id))
            names = [f for f, _ in plans[row.type].values() if f in held]
            names = [f for f in names if not rtype.fields[f].metadata]
            wanted[row.id] = names
            fields_seen.extend(f for f in names if f not in fields_seen)
            if names:
                selections.append(Selection(WrappedRecord(row.id, blob[0], blob[1]), names))
        if not wanted:
            return 0
        # Logged and committed before any key is released or value decrypted.
        self._log(
            [
                Event(
                    self.user,
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
            material = self._officer_provider().release(selections, self._me.public, grant_id)
            keys = self._writer_provider().redeem(material, self._me, grant_id)
            for sel in selections:
                rid = sel.record.record_id
                values.update(self._decrypt(keys, [rid], wanted[rid]))
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
