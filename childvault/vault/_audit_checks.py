"""The per-entry and per-page checks that :func:`._audit.verify` runs over the log.

Separate from :mod:`._audit` so the verification walk reads as one loop; these
are its checks of one entry or one page (timestamps, roots, the page fast paths).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from childvault._i18n import _t
from childvault.keys import IntegrityError
from childvault.vault._audit_entry import _entry_re, entry_time
from childvault.vault._merkle import Frontier
from childvault.vault._time import iso, parse_iso


def _bad(message: str) -> IntegrityError:
    return IntegrityError(_t("audit log integrity failure: {problem}", problem=message))


@dataclass(frozen=True)
class _Expected:
    size: int
    root: bytes
    source: str


#: How far an entry's ``ts`` may lie before the latest earlier entry's without
#: failing :func:`verify`. :func:`append` never writes a step back; the margin
#: is for logs written before it stamped monotonically, by processes on
#: machines whose clocks differed by up to a few seconds (docs/decisions.md).
TS_TOLERANCE = timedelta(seconds=5)
# What :func:`iso` writes (or the same without microseconds): among stamps of
# one width, text order is time order.
_ISO_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?Z"


def _check_time(seq: int, entry: bytes, latest: datetime | None) -> datetime:
    """The entry's time, or ``latest`` if later; IntegrityError if it is before
    ``latest`` beyond the tolerance."""
    moment = entry_time(entry)
    if moment is None or moment.tzinfo is None:
        raise _bad(_t("entry {seq} has no valid timestamp (ts)", seq=seq))
    if latest is not None and moment < latest - TS_TOLERANCE:
        raise _bad(
            _t(
                "entry {seq} is dated {moment}, {seconds:.0f} s before an earlier entry "
                "({latest}): log timestamps never go backwards (tolerance {tolerance:.0f} s); the "
                "entry was inserted, re-dated or written by a process whose clock was wrong",
                seq=seq,
                moment=iso(moment),
                seconds=(latest - moment).total_seconds(),
                latest=iso(latest),
                tolerance=TS_TOLERANCE.total_seconds(),
            )
        )
    return moment if latest is None or moment > latest else latest


def _check_roots(frontier: Frontier, due: Iterable[_Expected]) -> None:
    """Compare the frontier's root with every checkpoint of its size."""
    root = None
    for exp in due:
        if root is None:
            root = frontier.root()
        if root != exp.root:
            raise _bad(
                _t(
                    "diverged: the first {size} entries do not match {source} (the log was "
                    "rewritten or replaced)",
                    size=frontier.size,
                    source=exp.source,
                )
            )


def _hashed_page(
    rows: Sequence[Any], index: int
) -> tuple[Sequence[int], Sequence[bytes], list[bytes]] | None:
    """(seqs, entries, leaf hashes) of a page if its seqs run on from ``index`` and
    every stored hash is the recomputed leaf hash; else None. May raise
    TypeError/ValueError on altered columns (the callers catch them)."""
    seqs, entries, digests = zip(*rows, strict=True)
    if list(seqs) != list(range(index, index + len(seqs))):
        return None
    sha = hashlib.sha256
    leaves = [sha(b"\x00" + entry).digest() for entry in entries]
    if leaves != list(digests):
        return None
    return seqs, entries, leaves


def _in_time_order(stamps: Sequence[str], latest: datetime | None) -> bool:
    """Quoted-free :func:`iso` texts of one width, none before the one before it,
    the first not before ``latest``: the fast paths' time check (text order is
    time order for one width; anything else goes to the reference loop)."""
    # map() and sorted() rather than generators: one call a page, in C, not
    # a Python frame an entry. A list equals its sorted copy exactly when no
    # text is greater than the one after it.
    stamps = list(stamps)
    return not (
        len(set(map(len, stamps))) != 1
        or not all(map(re.compile(_ISO_PATTERN).fullmatch, stamps))
        or stamps != sorted(stamps)
        or (latest is not None and parse_iso(stamps[0]) < latest)
    )


def _check_page(
    rows: Sequence[Any], index: int, prev_hex: str | None, latest: datetime | None = None
) -> list[bytes] | None:
    """The leaf hashes of a page of raw audit rows if every entry passes, else ``None``.

    The same per-entry checks as the reference loop in :func:`verify`, done a
    page at a time: seq contiguous from ``index``, stored hash equal to the
    recomputed leaf hash, every entry of the fast shape of :func:`_seq_prev`
    with its ``seq`` and its ``prev`` equal to the previous entry's hash
    (``prev_hex`` for the first). ``None`` (never an error) on anything else,
    including a column of another type, so the caller re-checks the page entry
    by entry and reports the first problem exactly as before. Timestamps pass
    here only if all have one width of :func:`iso`'s form and none is before
    the one before it (nor the first before ``latest``, the latest so far);
    anything else goes to the reference loop, which allows the tolerance.
    """
    if not rows:
        return None
    try:
        hashed = _hashed_page(rows, index)
        if hashed is None:
            return None
        seqs, entries, leaves = hashed
        count = len(seqs)
        fullmatch = _entry_re().fullmatch
        matches = [fullmatch(entry.decode("utf-8")) for entry in entries]
    except (TypeError, ValueError, AttributeError):
        return None  # wrong column types, bad UTF-8: the reference loop decides
    groups = [match.groups() for match in matches if match is not None]
    if len(groups) != count:
        return None  # not all in the fast shape: json.loads decides, entry by entry
    prevs, seq_texts, ts_texts = zip(*groups, strict=True)
    # The seq group is canonical decimal, so equal text means equal number.
    if list(seq_texts) != [str(seq) for seq in seqs]:
        return None
    # Quoted iso() text of one width, so text order is time order.
    stamps = [t[1:-1] for t in ts_texts]
    if not _in_time_order(stamps, latest):
        return None
    if prevs[0] != prev_hex:
        return None
    # Each prev group is exactly 64 hex digits: equal concatenations, equal links.
    rest = prevs[1:]
    if None in rest or "".join(rest) != b"".join(leaves[:-1]).hex():
        return None
    return leaves


class KnownPrefixMismatch(IntegrityError):
    """The log's entry at the end of a ``known`` prefix does not hash to the known
    head: the claimed verified prefix does not hold (a restore, or tampering);
    the caller verifies again without it, so every entry gets every check."""


#: The ``prev`` member as encode_entry writes it, and its key token.
_PREV_MARK = b'"prev":"'
_PREV_KEY = b'"prev"'
_PREV_AT = len(_PREV_MARK)
#: The ``ts`` member likewise.
_TS_MARK = b'"ts":"'
_TS_KEY = b'"ts"'
_TS_AT = len(_TS_MARK)


def _check_known_page(
    rows: Sequence[Any],
    index: int,
    prev_hex: str | None,
    latest: datetime | None = None,
    *,
    times: bool = True,
) -> list[bytes] | None:
    """:func:`_check_page` for entries inside a prefix the caller verified before.

    Only the chain is checked: seq contiguous, stored hash equal to the
    recomputed leaf hash, and the 64 characters after each entry's
    ``"prev":"`` equal to the previous leaf hash (in hex), for entries with no
    backslash and exactly one ``"prev"`` token. In such an entry every quote
    is structural, so that token is its only ``prev`` key: the top-level one
    the entry's earlier full check read (an entry written otherwise is left
    to the full checks, as is anything else that differs).

    Timestamps get the same check as in :func:`_check_page` (the prefix was
    verified by the trust-state replay, which does not look at times), read
    the same way from the one ``"ts"`` token of such an entry.

    That is enough because :func:`verify` also requires the prefix's last
    entry to hash to the head the caller verified (:class:`KnownPrefixMismatch`
    otherwise): going back from that entry, each entry's bytes name the hash
    of the one before, so every entry is the very bytes the caller verified
    before (another would be a SHA-256 collision), its ``seq`` and link
    included.

    ``times=False``: the timestamps are not read, for entries below a
    :class:`KnownTree`, whose times an earlier :func:`verify` checked (the same
    bytes, by the argument above).
    """
    if not rows or index == 0 or prev_hex is None:
        return None  # the first entry has no prev: the full check handles it
    try:
        hashed = _hashed_page(rows, index)
        if hashed is None:
            return None
        _seqs, entries, leaves = hashed
        # The per-entry conditions, checked on the page at once: no backslash
        # in any entry (every quote is structural, so the one "prev" token is
        # the entry's only prev key, the top-level one its check used), and as
        # many "prev" and "ts" tokens in the page as entries. A token cannot
        # span the NUL between two entries, so with each entry holding at least
        # one (its mark is found below), each holds exactly one.
        page = b"\x00".join(entries)
        count = len(entries)
        if b"\\" in page or page.count(_PREV_KEY) != count:
            return None
        if times and page.count(_TS_KEY) != count:
            return None
        prev_at = [entry.find(_PREV_MARK) for entry in entries]
        ts_at = [entry.find(_TS_MARK) + _TS_AT for entry in entries] if times else []
        if -1 in prev_at or _TS_AT - 1 in ts_at:
            return None
        prevs = b"".join(
            [
                entry[at + _PREV_AT : at + _PREV_AT + 64]
                for entry, at in zip(entries, prev_at, strict=True)
            ]
        )
        stamps = (
            [
                entry[at : entry.index(b'"', at)].decode("ascii")
                for entry, at in zip(entries, ts_at, strict=True)
            ]
            if times
            else []
        )
    except (TypeError, ValueError, AttributeError):
        return None
    if times and not _in_time_order(stamps, latest):
        return None
    # Equal to the hex of the leaves, so each is exactly 64 lower-case hex digits.
    if prevs != (prev_hex + b"".join(leaves[:-1]).hex()).encode("ascii"):
        return None
    return leaves


def _check_known_head(index: int, last_leaf: bytes, known: tuple[int, bytes] | None) -> None:
    """At ``index`` entries: the end of the known prefix must hash to its head."""
    if known is None:
        return
    size, head = known
    if index < size:
        raise KnownPrefixMismatch(
            _t("the log has {index} entries, fewer than last verified", index=index)
        )
    if index == size and last_leaf != head:
        raise KnownPrefixMismatch(_t("entry {entry} is not the one last verified", entry=index - 1))


def _split_pages(
    pages: Iterable[Sequence[Any]], index: int, *splits: int
) -> Iterator[Sequence[Any]]:
    """The pages of rows from ``index`` on, cut after entry 0 (it has no ``prev``:
    the full check takes it alone) and where each known prefix ends (``splits``)."""
    wanted = [c for c in splits if c]
    cuts = sorted({c for c in (1, *wanted) if c > index}) if wanted else []
    for rows in pages:
        end = index + len(rows)
        at = 0
        for cut in cuts:
            if index < cut < end:
                yield rows[at : cut - index]
                at = cut - index
        yield rows[at:] if at else rows
        index = end
