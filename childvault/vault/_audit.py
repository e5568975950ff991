"""The tamper-evident audit log (docs/architecture.md, "Audit log").

Each entry is the RFC 8785 canonical JSON of
``{seq, ts, actor, action, outcome, records, fields, purpose, request, grant,
detail, prev}``, stored as the exact bytes that were hashed. ``prev`` is the
hex hash of the previous entry (``null`` for the first), and the entry hash
``SHA-256(0x00 || entry)`` is also the RFC 6962 leaf hash, so signed
checkpoints commit to the whole log through a Merkle root.

No child's data goes into an entry: record ids are random, fields are names,
and ``detail`` carries only bookkeeping chosen by the library.

This module appends and verifies. The entry format is in :mod:`._audit_entry`,
who signs what in :mod:`._audit_sign`, witness files in :mod:`._audit_witness`
and the checks :func:`verify` runs in :mod:`._audit_checks`.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from childvault._i18n import _t
from childvault.keys import IntegrityError

# A name imported as itself is re-exported: other code and tests import it from
# this module, which held it before the split (issue 11).
from childvault.vault._audit_checks import TS_TOLERANCE as TS_TOLERANCE
from childvault.vault._audit_checks import KnownPrefixMismatch as KnownPrefixMismatch
from childvault.vault._audit_checks import (
    _bad,
    _check_known_head,
    _check_known_page,
    _check_page,
    _check_roots,
    _check_time,
    _Expected,
    _split_pages,
)
from childvault.vault._audit_entry import ACTIONS as ACTIONS
from childvault.vault._audit_entry import OUTCOMES as OUTCOMES
from childvault.vault._audit_entry import DetailValue as DetailValue
from childvault.vault._audit_entry import Event as Event
from childvault.vault._audit_entry import _one_entry_time, _seq_prev
from childvault.vault._audit_entry import canonical as canonical
from childvault.vault._audit_entry import canonical_plain as canonical_plain
from childvault.vault._audit_entry import decode_entry as decode_entry
from childvault.vault._audit_entry import encode_entry as encode_entry
from childvault.vault._audit_entry import entry_time as entry_time
from childvault.vault._audit_entry import holds_nul as holds_nul
from childvault.vault._audit_entry import is_canonical as is_canonical
from childvault.vault._audit_sign import SIGN_ALONE as SIGN_ALONE
from childvault.vault._audit_sign import RunCheck as RunCheck
from childvault.vault._audit_sign import entry_message as entry_message
from childvault.vault._audit_sign import run_message as run_message
from childvault.vault._audit_sign import signing_function as signing_function
from childvault.vault._audit_witness import MAX_WITNESS_LINE as MAX_WITNESS_LINE
from childvault.vault._audit_witness import read_witness as read_witness
from childvault.vault._audit_witness import read_witness_heads as read_witness_heads
from childvault.vault._audit_witness import witness_lines as witness_lines
from childvault.vault._backend import AuditRepo, LogSource
from childvault.vault._merkle import HASH_SIZE, Frontier, leaf_hash
from childvault.vault._note import Checkpoint, verify_note
from childvault.vault._time import iso


def append(log: AuditRepo, events: Sequence[Event], now: datetime) -> list[int]:
    """Append entries for ``events``; must run inside the backend's transaction.

    Reads the head under the write lock, so concurrent processes extend one
    linear chain. Returns the sequence numbers given.

    Stamps monotonically: an entry is dated ``max(now, the previous entry's
    time)``, so a clock stepped back (NTP, a wrong manual setting, another
    machine's clock) never dates an entry before its predecessor, and
    :func:`verify` may refuse timestamps that go backwards (issue 15).
    """
    seq, prev = log.head()
    # A minimal appender (the benchmarks' in-memory log) may not read entries back.
    entry_at = getattr(log, "entry_at", None)
    if seq > 0 and entry_at is not None:
        last = entry_at(seq - 1)
        last_ts = None if last is None else _one_entry_time(last[0])
        if last_ts is not None and last_ts > now:
            now = last_ts
    ts = iso(now)
    # The acting user signs the entries in their own name (docs/trust.md): an
    # entry written in another's name then lacks that user's signature. One
    # signature closes each run of their consecutive entries (docs/decisions.md,
    # "One signature per appended run"): the run's last entry, over where the
    # run starts and the last entry's hash (the chain commits to the rest).
    signer = getattr(log, "signer", None)
    name = None if signer is None else signer.name
    sign = None if signer is None else signing_function(signer) if len(events) > 1 else signer.sign
    rows: list[tuple[int, bytes, bytes, bytes | None]] = []
    start: int | None = None  # the first entry of the signer's open run
    last = len(events) - 1
    for i, event in enumerate(events):
        entry = encode_entry(seq, ts, event, prev)
        digest = leaf_hash(entry)
        sig = None
        if sign is not None and event.actor == name:
            if event.action in SIGN_ALONE:
                # Never inside a run: the entry before it closed the open run.
                sig = sign(entry_message(digest))
            elif i == last or events[i + 1].actor != name or events[i + 1].action in SIGN_ALONE:
                sig = sign(entry_message(digest) if start is None else run_message(start, digest))
                start = None
            elif start is None:
                start = seq
        rows.append((seq, entry, digest, sig))
        prev = digest
        seq += 1
    log.append(rows)
    return [r[0] for r in rows]


@dataclass
class VerifyReport:
    """The result of a successful verification."""

    entries: int
    root: bytes
    checkpoints: int
    witnessed: int
    signers: list[str]
    #: What a checkpoint of this log keeps so a later check can resume from it:
    #: the Merkle frontier before the last entry, then the last entry's leaf hash.
    resume_state: bytes = field(default=b"", repr=False)
    #: The first entry checked: 0, or the size of the checkpoint resumed from.
    checked_from: int = 0
    #: :func:`checkpoint_digest` of every checkpoint this verification compared
    #: with the log (all of them: a larger one fails as a truncation).
    checked: bytes = field(default=b"", repr=False)

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return {
            "ok": True,
            "entries": self.entries,
            "root": self.root.hex(),
            "checkpoints_verified": self.checkpoints,
            "witness_checkpoints_verified": self.witnessed,
            "signers": self.signers,
        }


@dataclass(frozen=True)
class Resume:
    """A log prefix already verified, as kept with a checkpoint of ``size`` entries.

    Only for a checkpoint the verifier signed itself (its signature checked
    with the key of the unlocked identity, not one from the database). Built by
    :meth:`from_state`, which accepts the stored state only if it gives the
    signed root: then the frontier and the last entry's leaf hash are exactly
    those the signature covers, and only the entries after them need checking
    before signing again (docs/decisions.md).
    """

    size: int
    frontier: Frontier
    before: Frontier
    last_leaf: bytes

    @classmethod
    def from_state(cls, size: int, state: bytes, root: bytes) -> Resume | None:
        """From :attr:`VerifyReport.resume_state`; ``None`` unless it yields ``root``."""
        if size < 1 or len(state) < HASH_SIZE:
            return None
        try:
            before = Frontier.from_bytes(size - 1, state[:-HASH_SIZE])
        except ValueError:
            return None
        last_leaf = state[-HASH_SIZE:]
        frontier = before.copy()
        frontier.append(last_leaf)
        # Another (before, last) pair with this root would be a SHA-256 collision.
        if frontier.root() != root:
            return None
        return cls(size, frontier, before, last_leaf)


@dataclass(frozen=True)
class KnownTree:
    """The Merkle tree of a log prefix the caller verified before, to resume building from.

    ``state`` is :attr:`VerifyReport.resume_state` of a verification that ended
    at ``size`` entries (the frontier before the last entry, then its leaf
    hash ``head``), and ``checked`` the :func:`checkpoint_digest` of the
    checkpoints it compared with the log. Only as trustworthy as where it came
    from: the caller takes it from the verifier's own signed state
    (``_registrations.load_tree``). :func:`verify` still checks the chain of
    the prefix from the first entry and that entry ``size - 1`` hashes to
    ``head``; then the prefix is the very bytes verified before and the
    frontier is its own (docs/decisions.md).
    """

    size: int
    state: bytes
    checked: bytes

    @property
    def head(self) -> bytes:
        """The leaf hash of entry ``size - 1``."""
        return self.state[-HASH_SIZE:]

    def frontiers(self) -> tuple[Frontier, Frontier]:
        """(the frontier before the last entry, the frontier of all ``size`` entries);
        ValueError if the state does not fit ``size``."""
        if self.size < 1 or len(self.state) < HASH_SIZE:
            raise ValueError(_t("a known tree needs at least one entry"))
        before = Frontier.from_bytes(self.size - 1, self.state[:-HASH_SIZE])
        after = before.copy()
        after.append(self.head)
        return before, after


def checkpoint_digest(pairs: Iterable[tuple[int, bytes]], upto: int) -> bytes:
    """SHA-256 over the distinct (size, root) pairs of at most ``upto`` entries, sorted.

    What a :class:`KnownTree` records as checked: a later verification may
    skip rebuilding the prefix's tree only if the checkpoints of that prefix
    are exactly these (any added, changed or removed one: it rebuilds).
    """
    chosen = sorted({(size, root) for size, root in pairs if size <= upto})
    digest = hashlib.sha256(b"childvault/checked-checkpoints/1\x00")
    for size, root in chosen:
        digest.update(size.to_bytes(8, "big") + root)
    return digest.digest()


_PROGRESS_EVERY = 10000


def _take_tree(index: int, last_leaf: bytes, tree: KnownTree | None) -> tuple[Frontier, Frontier]:
    """At ``index`` = ``tree.size`` entries: (before, frontier) from the known tree, if
    the entry just checked is the one it ends with; else KnownPrefixMismatch."""
    if tree is None or last_leaf != tree.head:
        raise KnownPrefixMismatch(_t("entry {index} is not the one last verified", index=index - 1))
    return tree.frontiers()


def verify(
    log: LogSource,
    *,
    origin: str,
    signers: Mapping[str, bytes],
    witness_notes: Iterable[str] = (),
    progress: Callable[[int], None] | None = None,
    resume: Resume | None = None,
    known: tuple[int, bytes] | None = None,
    tree: KnownTree | None = None,
) -> VerifyReport:
    """Check the whole log; raise :class:`IntegrityError` naming the first bad entry.

    Streams the entries: re-hashes each, checks the stored hash, the sequence
    and the ``prev`` link, folds the leaf into a Merkle frontier and compares
    the root with every stored and witnessed checkpoint of that size. A
    checkpoint larger than the log means the log was truncated; a root
    mismatch means it diverged (was replaced or rewritten).

    With ``resume``, the entries before ``resume.size`` are not re-read: the
    walk starts from the resumed frontier, after checking the hash of the
    entry the next one links to; stored checkpoints of smaller trees are then
    not read (``log.checkpoints_from``) and the caller passes only the witness
    notes that bind the rest (a full verification checks every root).

    With ``known = (N, H)`` (the caller verified the first N entries before and
    the last of them hashed to H), those entries get the chain checks only
    (:func:`_check_known_page`); if entry N-1 does not hash to H, or the log
    has fewer than N entries, :class:`KnownPrefixMismatch` is raised and the
    caller checks again without ``known``.

    With ``tree`` (a :class:`KnownTree` the caller verified before), the
    Merkle tree of its prefix is not rebuilt when that prefix's checkpoints
    are exactly those compared with it then: the prefix gets every chain
    check as before, entry ``tree.size - 1`` must hash to ``tree.head``
    (:class:`KnownPrefixMismatch` otherwise, or if the log is shorter), and
    the tree is built on from the stored frontier (docs/decisions.md).
    """
    expected: dict[int, list[_Expected]] = {}
    used_signers: set[str] = set()

    def add(note: str, source: str) -> Checkpoint:
        cp, names = verify_note(note, signers)
        if cp.origin != origin:
            raise _bad(
                _t("{source} is for another log ({origin!r})", source=source, origin=cp.origin)
            )
        used_signers.update(names)
        expected.setdefault(cp.size, []).append(_Expected(cp.size, cp.root, source))
        return cp

    # Resumed, a stored checkpoint of a smaller tree would only get its
    # signature checked (the prefix it covers is fixed by the resumed one):
    # not read at all, so an approval does not grow with the checkpoints.
    stored = log.checkpoints_from(resume.size) if resume is not None else log.checkpoints()
    for row in stored:
        try:
            cp = add(row.note, _t("stored checkpoint {id}", id=row.id))
        except IntegrityError as exc:
            raise _bad(
                _t(
                    "stored checkpoint {id} does not verify: {problem}",
                    id=row.id,
                    problem=exc.args[0],
                )
            ) from exc
        if (cp.size, cp.root) != (row.size, row.root):
            raise _bad(
                _t(
                    "stored checkpoint {id}: its size or root column differs from its note",
                    id=row.id,
                )
            )
    witnessed = 0
    for number, note in enumerate(witness_notes, start=1):
        try:
            add(note, _t("witness checkpoint {number}", number=number))
        except IntegrityError as exc:
            raise _bad(
                _t(
                    "witness checkpoint {number} does not verify: {problem}",
                    number=number,
                    problem=exc.args[0],
                )
            ) from exc
        witnessed += 1

    frontier = Frontier()
    prev_hex: str | None = None
    # The latest entry time so far: no entry may be dated before it beyond
    # TS_TOLERANCE (DESIGN section 7: log timestamps never go backwards).
    latest: datetime | None = None
    index = 0
    before = Frontier()  # the frontier before the last entry seen
    last_leaf = b""
    if resume is not None:
        frontier, before = resume.frontier.copy(), resume.before.copy()
        last_leaf = resume.last_leaf
        index = resume.size
        last = log.entry_at(index - 1)
        if last is None:
            raise _bad(
                _t(
                    "truncated: entry {entry} is missing but a checkpoint you signed covers "
                    "{index} entries",
                    entry=index - 1,
                    index=index,
                )
            )
        if leaf_hash(last[0]) != last[1]:
            raise _bad(
                _t("entry {entry} was modified (its bytes do not match its hash)", entry=index - 1)
            )
        if last[1] != last_leaf:
            raise _bad(
                _t(
                    "diverged: entry {entry} is not the one a checkpoint you signed covers (the "
                    "log was rewritten or replaced)",
                    entry=index - 1,
                )
            )
        prev_hex = last_leaf.hex()
        latest = _check_time(index - 1, last[0], None)
        _check_roots(frontier, expected.get(index, ()))
    checked_from = index
    # Sizes at which the per-entry loop compares roots (after that entry).
    marks = sorted(size for size in expected if size > index)
    known_size = known[0] if known is not None and known[0] > index else 0
    # Below skip_to the tree is not built: the known tree's frontier takes over there.
    skip_to = 0
    # Below light_to the entries get the chain checks only (_check_known_page):
    # the known prefix's and the known tree's, each ending in its known head.
    light_to = known_size
    if tree is not None and resume is None and tree.size > index:
        pairs = [(e.size, e.root) for sizes in expected.values() for e in sizes]
        if checkpoint_digest(pairs, tree.size) == tree.checked:
            try:
                tree.frontiers()
                skip_to = tree.size
                light_to = max(known_size, skip_to)
            except ValueError:
                skip_to = 0  # a state that does not fit its size: build the tree
    for rows in _split_pages(log.pages(index), index, known_size, skip_to):
        if known_size and index == known_size:
            _check_known_head(index, last_leaf, known)
        if skip_to and index == skip_to:
            before, frontier = _take_tree(index, last_leaf, tree)
            skip_to = 0
        # Pages are cut at skip_to, so a page lies wholly below it or not at all.
        building = not skip_to
        leaves = None
        if index < light_to:
            # Below the known tree the times were checked by the verification
            # that kept it (the same bytes): not read again.
            leaves = _check_known_page(rows, index, prev_hex, latest, times=building)
        if leaves is None:
            leaves = _check_page(rows, index, prev_hex, latest)
        if leaves is None:
            # Something in this page is off (or merely not in the fast shape):
            # the reference loop, entry by entry, names the first problem.
            for row in rows:
                seq, entry, digest = log.row(row)
                if seq != index:
                    raise _bad(
                        _t(
                            "entry {index} is missing (next stored entry is {seq}): entries were "
                            "deleted",
                            index=index,
                            seq=seq,
                        )
                    )
                computed = leaf_hash(entry)
                if computed != digest:
                    raise _bad(
                        _t("entry {seq} was modified (its bytes do not match its hash)", seq=seq)
                    )
                try:
                    entry_seq, entry_prev = _seq_prev(entry)
                except (ValueError, KeyError, TypeError) as exc:
                    raise _bad(_t("entry {seq} is not a valid log entry", seq=seq)) from exc
                if entry_seq != seq:
                    raise _bad(
                        _t(
                            "entry {seq} carries sequence number {entry_seq}: entries were "
                            "reordered",
                            seq=seq,
                            entry_seq=entry_seq,
                        )
                    )
                if entry_prev != prev_hex:
                    raise _bad(
                        _t(
                            "entry {seq} does not link to entry {prev} (an entry before it was "
                            "changed, removed, inserted or reordered)",
                            seq=seq,
                            prev=seq - 1,
                        )
                    )
                latest = _check_time(seq, entry, latest)
                prev_hex = computed.hex()
                if building:
                    before = frontier.copy()
                    frontier.append(computed)
                last_leaf = computed
                index += 1
                if building:
                    _check_roots(frontier, expected.get(index, ()))
                if progress is not None and index % _PROGRESS_EVERY == 0:
                    progress(index)
            continue
        # Every entry of the page checked out: fold its leaves, stopping at each
        # checkpoint size and progress tick inside it, in the order the
        # reference loop meets them.
        end = index + len(leaves)
        pos = end if not building else index
        if not building and progress is not None:
            every = _PROGRESS_EVERY
            for tick in range((index // every + 1) * every, end + 1, every):
                progress(tick)
        while pos < end:
            stop = end
            at = bisect_right(marks, pos)
            if at < len(marks):
                stop = min(stop, marks[at])
            if progress is not None:
                stop = min(stop, (pos // _PROGRESS_EVERY + 1) * _PROGRESS_EVERY)
            chunk = leaves[pos - index : stop - index]
            frontier.extend(chunk[:-1])
            before = frontier.copy()
            frontier.append(chunk[-1])
            pos = stop
            _check_roots(frontier, expected.get(pos, ()))
            if progress is not None and pos % _PROGRESS_EVERY == 0:
                progress(pos)
        index = end
        last_leaf = leaves[-1]
        prev_hex = last_leaf.hex()
        # The page's times were checked non-decreasing: its last is the latest.
        latest = entry_time(log.row(rows[-1])[1])
    if known_size and index <= known_size:
        _check_known_head(index, last_leaf, known)
    if skip_to:
        if index < skip_to:
            raise KnownPrefixMismatch(
                _t("the log has {index} entries, fewer than last verified", index=index)
            )
        before, frontier = _take_tree(index, last_leaf, tree)
    if index == 0 and expected.get(0):
        for exp in expected[0]:
            if frontier.root() != exp.root:
                raise _bad(_t("diverged: the empty log does not match {source}", source=exp.source))
    longer = [e for sizes in expected.values() for e in sizes if e.size > index]
    if longer:
        worst = max(longer, key=lambda e: e.size)
        raise _bad(
            _t(
                "truncated: the log has {index} entries but {source} covers {size} (entries "
                "{index} to {last} were removed)",
                index=index,
                source=worst.source,
                size=worst.size,
                last=worst.size - 1,
            )
        )
    return VerifyReport(
        index,
        frontier.root(),
        len(stored),
        witnessed,
        sorted(used_signers),
        resume_state=before.to_bytes() + last_leaf if index else b"",
        checked_from=checked_from,
        checked=checkpoint_digest(
            [(e.size, e.root) for sizes in expected.values() for e in sizes], index
        ),
    )
