"""Record statements, wired in: signed at every write, verified before every use.

Issue 12, attack 4 (a staff member replaces another record's sealed fields and
key blob with values of their own, sealed to the custodian public key) and
rollback (a record put back to an older, genuinely signed version). See
docs/trust.md, "Record statements".

- **Signing.** Every write of a record version (create/import, correction,
  consent change, re-signing after a key rotation) signs a ``record.version``
  statement (:func:`childvault.vault._statements.record_statement`) over the
  SHA-256 of every field ciphertext and of the key blob. The envelope is kept
  in the ``statements`` table keyed by the seq of the log entry that wrote the
  version, and that entry's detail names the envelope's digest
  (``record_statement``), one record per entry. A batch of new records signs
  one ``record.batch`` statement instead (:func:`sign_batch_versions`); each
  record's entry then names its member document (the batch envelope, index
  and inclusion proof), kept the same way.
- **The latest version is what the log says.** :func:`record_heads` scans the
  log (incrementally, from the verifier's own signed saved point, after the
  trust replay has checked the chain and every actor's signature up to the
  same size) and keeps, per record, the seq and digest of the latest entry
  naming a record statement, the seq of the first one, and whether an
  officer or admin logged its deletion. A record rolled back to an older
  signed version carries an envelope whose digest is not the latest: refused.
- **Verify before use.** :func:`verify_records` checks each live record
  against its latest logged statement: same digest, the rows hash to what was
  signed, and the signer held the right role at the entry's position in the
  trust state (staff or officer for the first statement, an officer or admin
  for later ones). Any disagreement is logged (``trust.refuse``) and raised as
  :class:`IntegrityError` (exit 4) naming the record, before any key is
  released or value decrypted.

Without an anchor (an identity file made before signed statements) nothing is
verified, as elsewhere in the trust wiring.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import json
import weakref
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from childvault._i18n import Message, _t
from childvault.keys import IntegrityError
from childvault.vault import _audit
from childvault.vault._audit import Event
from childvault.vault._backend import Backend, RecordRow
from childvault.vault._merkle import leaf_hash
from childvault.vault._session import Session
from childvault.vault._statements import (
    ALTERED,
    BatchMember,
    Envelope,
    TrustState,
    record_statement,
    sign,
    sign_first_versions,
    stored_statement,
    verify_member,
    verify_record,
)
from childvault.vault._time import iso

#: Detail member of a log entry that wrote a record version: its statement's digest.
RECORD_STATEMENT = "record_statement"
_HEADS_DOMAIN = b"childvault/record-heads/1\x00"
#: Suffix of the saved-state key of a verifier's record heads (user names cannot hold "#").
_SAVED_SUFFIX = "#records"
#: Who may log a record's deletion (the actor's signature on the entry is theirs).
_DELETERS = ("officer", "admin")


class Head(NamedTuple):
    """What the log says of one record (immutable: a scan shares the saved heads
    it resumes from and replaces only the ones that change)."""

    #: The entry carrying the latest record statement, and that statement's digest.
    seq: int
    digest: str
    #: The entry carrying the record's first statement (only it may be signed by staff).
    first: int
    #: Seq of a logged deletion by an officer or admin, or None.
    deleted: int | None = None


#: First line of the saved record heads in buckets (:meth:`RecordHeads.to_bytes`).
_BUCKETED = b"childvault-record-heads/2"
#: Records a bucket of the saved heads: a page of 100 records in id order
#: parses one or two buckets.
_BUCKET = 128


def _parse_heads(raw: bytes | str) -> dict[str, Head]:
    """One JSON object of heads, checked (raises ``ValueError`` on a malformed one)."""
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError(_t("saved record heads are not an object"))
    # The checks and the Heads are made column by column in C (map, zip, set)
    # rather than in a Python loop a record. The types are checked exactly (what
    # int()/str() would accept or refuse is not the question; the map was signed
    # by this verifier): every item is [int, str, int, int or null].
    items = list(doc.values())
    if items:
        if set(map(len, items)) != {4}:
            raise ValueError(_t("malformed saved record head"))
        seqs, digests, firsts, deleted = zip(*items, strict=True)
        if (
            set(map(type, seqs)) != {int}
            or set(map(type, digests)) != {str}
            or set(map(type, firsts)) != {int}
            or not set(map(type, deleted)) <= {int, type(None)}
        ):
            raise ValueError(_t("malformed saved record head"))
    return dict(zip(doc, map(functools.partial(tuple.__new__, Head), items), strict=True))


class _SavedBuckets:
    """A verified saved map in buckets of consecutive record ids, each bucket
    parsed on first use.

    Why: a command resumes from the saved map of every record (about 1.2 MB on a
    10,000-record vault) but looks up only the records it shows or uses. The
    signature covers the SHA-256 of all the bytes, checked before this is made;
    parsing only the buckets looked up changes nothing of what is trusted.
    """

    __slots__ = ("_firsts", "_parsed", "_raw")

    def __init__(self, firsts: list[str], raw: list[bytes]) -> None:
        #: The first (smallest) record id of each bucket, strictly increasing.
        self._firsts = firsts
        self._raw = raw
        self._parsed: dict[int, dict[str, Head]] = {}

    def bucket(self, i: int) -> dict[str, Head]:
        """The heads of bucket ``i``, checked to hold exactly its range of ids."""
        found = self._parsed.get(i)
        if found is None:
            try:
                found = _parse_heads(self._raw[i])
            except (ValueError, TypeError) as exc:
                raise IntegrityError(_t("malformed saved record head")) from exc
            end = self._firsts[i + 1] if i + 1 < len(self._firsts) else None
            if (
                not found
                or min(found) != self._firsts[i]
                or (end is not None and max(found) >= end)
            ):
                # Signed by this verifier, so only a fault (never an insider's
                # edit) could put a head outside its bucket: refused, not missed.
                raise IntegrityError(_t("malformed saved record head"))
            self._parsed[i] = found
        return found

    def get(self, record_id: str) -> Head | None:
        """The saved head of ``record_id`` (None if it has none)."""
        i = bisect.bisect_right(self._firsts, record_id) - 1
        return None if i < 0 else self.bucket(i).get(record_id)

    def __len__(self) -> int:
        return len(self._raw)


class HeadMap(MutableMapping[str, Head]):
    """Record id -> :class:`Head`: a saved map (parsed a bucket at a time, on first
    look-up) with the heads set since it was saved on top. Copies share the
    saved part (never changed) and copy only what was set on top."""

    __slots__ = ("_own", "_saved")

    def __init__(
        self, own: Mapping[str, Head] | None = None, saved: _SavedBuckets | None = None
    ) -> None:
        self._saved = saved
        self._own: dict[str, Head] = dict(own or {})

    def copy(self) -> HeadMap:
        """A copy to change (the saved part shared, it is never changed)."""
        return HeadMap(self._own, self._saved)

    def get(self, key: object, default: Any = None) -> Any:
        """The head of record ``key``, else ``default``."""
        found = self._own.get(key)  # type: ignore[call-overload]
        if found is None and self._saved is not None and isinstance(key, str):
            found = self._saved.get(key)
        return default if found is None else found

    def __getitem__(self, key: str) -> Head:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None

    def __setitem__(self, key: str, value: Head) -> None:
        self._own[key] = value

    def __delitem__(self, key: str) -> None:
        # Heads are replaced, never removed (a deletion is a head too).
        raise NotImplementedError

    def _all(self) -> dict[str, Head]:
        every: dict[str, Head] = {}
        if self._saved is not None:
            for i in range(len(self._saved)):
                every.update(self._saved.bucket(i))
        every.update(self._own)
        return every

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


@dataclass
class RecordHeads:
    """Per record, the latest logged statement, over the log's first ``size`` entries."""

    heads: MutableMapping[str, Head] = field(default_factory=dict)
    size: int = 0
    head: bytes | None = None

    def to_bytes(self) -> bytes:
        """A compact, deterministic encoding (signed by its verifier when saved).

        A first line naming the format, a JSON list of the first record id of
        each bucket, then one JSON object of heads a bucket (:data:`_BUCKET`
        records in id order): a command parses only the buckets it looks up.
        JSON as written here holds no newline, so the lines split exactly.
        """
        # Every head once, as a plain dict (not a look-up a record through the map).
        every = self.heads._all() if isinstance(self.heads, HeadMap) else self.heads
        ids = sorted(every)
        chunks = [ids[i : i + _BUCKET] for i in range(0, len(ids), _BUCKET)]
        lines = [_BUCKETED, json.dumps([c[0] for c in chunks], separators=(",", ":")).encode()]
        for chunk in chunks:
            heads = [every[r] for r in chunk]
            doc = {
                r: [h.seq, h.digest, h.first, h.deleted] for r, h in zip(chunk, heads, strict=True)
            }
            lines.append(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii"))
        return b"\n".join(lines)

    @classmethod
    def from_bytes(cls, raw: bytes, size: int, head: bytes) -> RecordHeads:
        """Parse a saved encoding (raises ``ValueError`` etc. on a malformed one).

        The bucketed form (:meth:`to_bytes`) is split into its buckets here and a
        bucket parsed when first looked up; a map saved before it (one JSON
        object) is parsed whole, as it was.
        """
        if not raw.startswith(_BUCKETED + b"\n"):
            return cls(_parse_heads(raw), size, head)
        lines = raw.split(b"\n")
        firsts = json.loads(lines[1])
        if (
            not isinstance(firsts, list)
            or set(map(type, firsts)) - {str}
            or len(firsts) != len(lines) - 2
            or any(a >= b for a, b in itertools.pairwise(firsts))
        ):
            raise ValueError(_t("malformed saved record head"))
        return cls(HeadMap(saved=_SavedBuckets(firsts, lines[2:])), size, head)


# One cache per open session: approvals and reads resume from the last scan.
_CACHE: weakref.WeakKeyDictionary[Session, RecordHeads] = weakref.WeakKeyDictionary()
#: The log size of the session's last save of its record heads.
_SAVED_AT: weakref.WeakKeyDictionary[Session, int] = weakref.WeakKeyDictionary()
#: Save the record heads at least every this many log entries, changed or not.
#: Every CLI command is a new process that resumes from the saved point and
#: appends at least one entry of its own: a rescan of up to this many entries
#: (~20 us each) is then bounded by about the cost of one save.
_SAVE_EVERY = 1_000


def _message(vault_id: str, size: int, head: bytes, raw: bytes) -> bytes:
    return _HEADS_DOMAIN + _audit.canonical(
        {
            "vault": vault_id,
            "size": size,
            "head": head.hex(),
            "heads": hashlib.sha256(raw).hexdigest(),
        }
    )


def _load_saved(s: Session) -> RecordHeads | None:
    saved = s.db.statements.saved_state(s.user + _SAVED_SUFFIX)
    if saved is None:
        return None
    size, head, raw, sig = saved
    if not s.me.public.verify(_message(s.vault_id, size, head, raw), sig):
        return None  # not signed by this verifier: scan from the start
    try:
        return RecordHeads.from_bytes(raw, size, head)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _save(s: Session, done: RecordHeads) -> None:
    if done.head is None:
        return
    raw = done.to_bytes()
    sig = s.me.sign(_message(s.vault_id, done.size, done.head, raw))
    with s.db.transaction():
        s.db.statements.save_state(s.user + _SAVED_SUFFIX, done.size, done.head, raw, sig)


def _still_prefix(db: Backend, start: RecordHeads) -> bool:
    """Whether the log still has ``start``'s last entry (it was not rewritten below it)."""
    if start.size == 0:
        return True
    at = db.audit.entry_at(start.size - 1)
    return at is not None and at[1] == start.head


def _scan(
    db: Backend, state: TrustState, start: RecordHeads, size: int
) -> tuple[RecordHeads, bool] | None:
    """Continue ``start`` over the entries up to ``size``, checking the chain as it goes;
    also say whether any record's head changed. None if the log no longer has
    ``start``'s last entry (:func:`_still_prefix`, checked on the first row read:
    the pages start one entry early, which saves a round trip through the server)."""
    # A shallow copy: Heads are immutable, so the start's stay as they were (a
    # saved map's buckets are shared, parsed only where a head is looked up).
    heads = start.heads.copy() if isinstance(start.heads, HeadMap) else HeadMap(start.heads)
    changed = False
    expected, prev = start.size, start.head
    first = True
    for rows in db.audit.pages(max(start.size - 1, 0)):
        for raw in rows:
            seq, entry, digest = db.audit.row(raw)
            if first and start.size:
                first = False
                if seq != start.size - 1 or digest != start.head:
                    return None
                continue
            first = False
            if seq >= size:
                break
            if seq != expected or leaf_hash(entry) != digest:
                raise IntegrityError(
                    _t("log entry {expected} is missing or was modified", expected=expected)
                )
            obj = _audit.decode_entry(entry)
            if obj.get("prev") != (None if prev is None else prev.hex()):
                raise IntegrityError(
                    _t("log entry {seq} does not link to entry {prev}", seq=seq, prev=seq - 1)
                )
            changed = _note(heads, state, seq, obj) or changed
            expected, prev = seq + 1, digest
        if expected >= size:
            break
    if first and start.size:
        return None  # not even start's last entry is there
    if expected != size:
        raise IntegrityError(_t("log entry {expected} is missing", expected=expected))
    return RecordHeads(heads, expected, prev), changed


def _note(
    heads: MutableMapping[str, Head], state: TrustState, seq: int, obj: Mapping[str, Any]
) -> bool:
    """Apply one verified entry to ``heads``; return whether it changed a record's head."""
    if obj.get("outcome") != "ok":
        return False
    detail = obj.get("detail")
    records = obj.get("records") or []
    named = detail.get(RECORD_STATEMENT) if isinstance(detail, dict) else None
    if isinstance(named, str) and len(records) == 1:
        rid = str(records[0])
        found = heads.get(rid)
        heads[rid] = (
            Head(seq, named, seq) if found is None else Head(seq, named, found.first, found.deleted)
        )
        return True
    if obj.get("action") == "record.delete":
        actor = obj.get("actor")
        # Only a deletion logged (and signed: the trust replay checked the actor's
        # signature) by an officer or admin counts; a staff member's entry does not.
        if isinstance(actor, str) and any(state.was_active(actor, r, seq) for r in _DELETERS):
            for rid in records:
                found = heads.get(str(rid))
                heads[str(rid)] = (
                    Head(seq, "", seq, seq)
                    if found is None
                    else Head(found.seq, found.digest, found.first, seq)
                )
            return True
    return False


def record_heads(s: Session) -> tuple[TrustState, RecordHeads] | None:
    """The verified trust state and, per record, the latest logged statement.

    Resumed from this session's last scan, else from the acting user's own
    signed saved point, else scanned from the start. None without an anchor.
    """
    state = s.trust()
    verified = s._verified  # the size and head the trust replay just checked
    if state is None or verified is None:
        return None
    start = _CACHE.get(s)
    # A map saved before the bucketed form is parsed whole: saved again below,
    # so the next command parses only the buckets it looks up.
    legacy = False
    if start is None:
        start = _load_saved(s)
        legacy = start is not None and not isinstance(start.heads, HeadMap)
    if start is None or start.size > verified.size:
        start = RecordHeads()
    if start.size == verified.size and not _still_prefix(s.db, start):
        start = RecordHeads()
    if start.size == verified.size:
        done, changed = start, False
    else:
        # The scan checks that start's last entry is still there (else: from the start).
        scanned = _scan(s.db, state, start, verified.size)
        if scanned is None:
            scanned = _scan(s.db, state, RecordHeads(), verified.size)
        if scanned is None:  # cannot happen: from the start there is no prefix to lose
            raise IntegrityError(_t("log entry 0 is missing"))
        done, changed = scanned
    if done.head != verified.head:
        raise IntegrityError(_t("the audit log changed while it was being verified; try again"))
    saved = _SAVED_AT.get(s, start.size)
    if changed or legacy or done.size - saved >= _SAVE_EVERY:
        # Re-signing the whole map costs in proportion to the records: only when a
        # record changed, or the log grew enough that a rescan would cost more.
        _save(s, done)
        _SAVED_AT[s] = done.size
    _CACHE[s] = done
    s.scan_from = done.size  # the next trust sync reads from here (one request)
    return state, done


def advance_heads(db: Backend, state: TrustState, start: RecordHeads, size: int) -> RecordHeads:
    """``start`` continued over the log's first ``size`` entries (from the first
    entry if the log no longer holds ``start``'s last one), checking the chain.

    For a server's read-ahead of the latest statements (a hint the client
    verifies: docs/server.md "Operation inputs"); a client uses :func:`record_heads`.
    """
    scanned = _scan(db, state, start, size) if start.size <= size else None
    if scanned is None:
        scanned = _scan(db, state, RecordHeads(), size)
    if scanned is None:
        raise IntegrityError(_t("log entry 0 is missing"))
    return scanned[0]


def latest_statement_seqs(heads: RecordHeads, record_ids: Iterable[str]) -> list[int]:
    """The log positions of the latest statements of ``record_ids`` (those with one),
    in their order: what :func:`latest_statements` asks for."""
    return [h.seq for h in (heads.heads.get(r) for r in record_ids) if h is not None and h.digest]


def stored_fields(db: Backend, record_id: str) -> list[tuple[str, int, bytes]]:
    """Every stored (field, field version, sealed value) of a record."""
    names = db.records.field_names(record_id)
    return [(n, v, ct) for n, (v, ct) in db.records.fields(record_id, names).items()]


def latest_statements(
    db: Backend, heads: RecordHeads, record_ids: Iterable[str]
) -> dict[int, bytes]:
    """The stored envelopes of the latest logged statements of ``record_ids``, in one
    call (``{seq: envelope}``; a missing one is absent): give it to :func:`check_record`
    so that checking many records is not one round trip per record through the server."""
    seqs = latest_statement_seqs(heads, record_ids)
    return db.statements.get_many(seqs) if seqs else {}


@dataclass(frozen=True)
class Fetched:
    """The rows of a set of records, read together (:func:`fetch`): what record
    verification checks, and what approve and read then use, so that the rows
    used are the rows verified and checking many records is not one round trip
    per record through the server."""

    #: Record id -> bookkeeping row (a record that does not exist is absent).
    rows: dict[str, RecordRow]
    #: Record id -> (record version, wrapped key blob) (absent without one).
    blobs: dict[str, tuple[int, bytes]]
    #: Record id -> every stored field: name -> (field version, sealed value).
    fields: dict[str, dict[str, tuple[int, bytes]]]


def fetch(db: Backend, record_ids: Iterable[str]) -> Fetched:
    """The rows, key blobs and sealed fields of ``record_ids``, in three calls
    (one request through the server: the remote backend reads them ahead together)."""
    unique = list(dict.fromkeys(record_ids))
    if not unique:
        return Fetched({}, {}, {})
    return Fetched(
        db.records.get_many(unique),
        db.records.keyblob_many(unique),
        db.records.fields_many(unique),
    )


def check_record(
    db: Backend,
    state: TrustState,
    heads: RecordHeads,
    row: RecordRow,
    keyblob: bytes | None,
    statements: Mapping[int, bytes] | None = None,
    fields: Mapping[str, tuple[int, bytes]] | None = None,
) -> str | None:
    """Why a live record's rows are not its latest signed version, or None if they are.

    ``statements``: what :func:`latest_statements` fetched for a batch holding
    this record (else its statement is read alone). ``fields``: the record's
    stored fields as :func:`fetch` read them (else they are read here).
    """
    rid = row.id
    found = heads.heads.get(rid)
    if found is not None and found.deleted is not None:
        return _t(
            "record {id} was deleted (log entry {seq}) but its rows are back",
            id=rid,
            seq=found.deleted,
        )
    if found is None or not found.digest:
        return _t(
            "record {id} has no signed record statement in the log (a record written "
            "before record statements needs `childvault upgrade`)",
            id=rid,
        )
    stored = db.statements.get(found.seq) if statements is None else statements.get(found.seq)
    if stored is None:
        return _t("the signed statement of record {id} is missing", id=rid)
    try:
        # A record's own envelope, or its member document of a batch statement
        # (docs/trust.md, "Record statements"): either way the log names its digest.
        envelope = stored_statement(stored)
        if envelope.digest() != found.digest:
            return _t(
                "record {id} does not carry its latest signed version "
                "(log entry {seq}): it was replaced or rolled back",
                id=rid,
                seq=found.seq,
            )
        if keyblob is None:
            return _t("record {id} has no key blob", id=rid)
        stored_rows: dict[str, Any] = {
            "written_at": found.seq,
            "record": rid,
            "version": row.version,
            "type_name": row.type,
            "consent": row.consent,
            "metadata": row.metadata,
            "fields": (
                stored_fields(db, rid)
                if fields is None
                else [(n, v, ct) for n, (v, ct) in fields.items()]
            ),
            "keyblob": keyblob,
            "first": found.seq == found.first,
        }
        if isinstance(envelope, BatchMember):
            verify_member(envelope, state, **stored_rows)
        else:
            verify_record(envelope, state, **stored_rows)
    except IntegrityError as exc:
        return _problem(exc)
    return None


def _problem(exc: IntegrityError) -> str:
    # The reason without ALTERED's advice (the caller adds its own); a Message
    # stays a Message, so the reason is shown in the reader's language.
    first = exc.args[0] if exc.args else None
    if isinstance(first, Message) and first.template == ALTERED:
        problem = first.params["problem"]
        return problem if isinstance(problem, str) else str(first)
    if isinstance(first, Message):
        return first
    return str(exc).split(": the stored record was altered")[0]


def verify_records(s: Session, record_ids: Iterable[str], action: str, moment: datetime) -> Fetched:
    """Refuse (logged ``trust.refuse``, :class:`IntegrityError`, exit 4) the first of
    ``record_ids`` whose rows are not its latest signed version. Records that do
    not exist (deleted, unknown) are left to the caller's rules.

    Returns the rows checked (:func:`fetch`, read after the log was verified, so
    they are judged against a log at least as new as they are), for the caller
    to use: what it then releases or decrypts is exactly what was verified.
    """
    unique = list(dict.fromkeys(record_ids))
    found = record_heads(s)
    fetched = fetch(s.db, unique)
    if found is None:
        return fetched
    state, heads = found
    statements = latest_statements(s.db, heads, unique)
    for rid in unique:
        row = fetched.rows.get(rid)
        if row is None:
            continue
        blob = fetched.blobs.get(rid)
        why = check_record(
            s.db,
            state,
            heads,
            row,
            None if blob is None else blob[1],
            statements,
            fetched.fields.get(rid, {}),
        )
        if why is not None:
            s.distrust(action, why, moment)
    return fetched


# ------------------------------------------------------------------ signing


def sign_version(
    s: Session,
    row: RecordRow,
    fields: Iterable[tuple[str, int, bytes]],
    keyblob: bytes,
    moment: datetime,
    *,
    version: int | None = None,
    consent: Mapping[str, Any] | None = None,
    at: str | None = None,
) -> Envelope:
    """The acting user's signed ``record.version`` statement of ``row`` as it will be stored.
    ``at``: ``iso(moment)``, computed once for a batch of records."""
    return sign(
        record_statement(
            vault_id=s.vault_id,
            at=iso(moment) if at is None else at,
            record=row.id,
            version=row.version if version is None else version,
            type_name=row.type,
            consent=row.consent if consent is None else consent,
            metadata=row.metadata,
            fields=fields,
            keyblob=keyblob,
        ),
        [s.me],
        plain=True,
    )


def sign_batch_versions(
    s: Session,
    items: Sequence[tuple[RecordRow, Iterable[tuple[str, int, bytes]], bytes]],
    moment: datetime,
    *,
    at: str | None = None,
) -> list[BatchMember]:
    """The acting user's one signed ``record.batch`` statement over the first
    versions ``items`` (row, sealed fields, key blob) as they will be stored, as
    each record's :class:`BatchMember` (docs/trust.md, "Record statements")."""
    stamp = iso(moment) if at is None else at
    return sign_first_versions(
        s.vault_id,
        stamp,
        [
            (row.id, row.version, row.type, row.consent, row.metadata, fields, keyblob)
            for row, fields, keyblob in items
        ],
        [s.me],
    )


def with_record_statement(event: Event, envelope: Envelope | BatchMember) -> Event:
    """``event`` naming ``envelope`` (by digest) as the record statement it carries."""
    return Event(
        event.actor,
        event.action,
        event.outcome,
        records=event.records,
        fields=event.fields,
        purpose=event.purpose,
        request=event.request,
        grant=event.grant,
        detail={**event.detail, RECORD_STATEMENT: envelope.digest()},
    )


def append_signed(
    db: Backend, items: Sequence[tuple[Event, Envelope | BatchMember | None]], moment: datetime
) -> list[int]:
    """Append the events (inside the caller's transaction) and keep each envelope
    beside its entry; every event must already name its envelope."""
    seqs = _audit.append(db.audit, [event for event, _ in items], moment)
    # The remote backend sends a batch's members compactly (the envelope once):
    # it takes the statements themselves, and stores exactly their bytes.
    add_statements = getattr(db.statements, "add_statements", None)
    if add_statements is not None:
        add_statements(
            [(seq, env) for seq, (_, env) in zip(seqs, items, strict=True) if env is not None]
        )
        return seqs
    kept = [
        (seq, envelope.to_bytes())
        for seq, (_, envelope) in zip(seqs, items, strict=True)
        if envelope is not None
    ]
    # One statement a row; a backend with a batch insert (SQLCipher) takes an
    # import's batch in one call.
    add_many = getattr(db.statements, "add_many", None)
    if add_many is not None:
        add_many(kept)
    else:
        for seq, envelope_bytes in kept:
            db.statements.add(seq, envelope_bytes)
    return seqs
