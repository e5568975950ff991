"""The audit verify fast paths: the regex reading of seq/prev and the per-page checks.

Both are pinned against the plain definitions: ``json.loads`` for the entry,
and the per-entry reference loop (copied here as it was before the page
checks) for ``verify``'s result, errors and progress ticks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from childvault.keys import IntegrityError
from childvault.vault import _audit, _audit_checks, _audit_entry
from childvault.vault._merkle import Frontier, leaf_hash
from childvault.vault._sql._tables import AuditLog

# Controls, quotes, backslashes, non-ASCII; not U+0000, which encode_entry
# refuses (tests/attack/test_log_entries_nul.py).
_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", categories=None, exclude_characters="\x00"),
    max_size=12,
)
_DETAIL = st.dictionaries(
    st.text(alphabet='abcdefgprevseq"\\', max_size=6),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**53) + 1, 2**53 - 1),
        _TEXT,
        st.lists(_TEXT, max_size=3),
    ),
    max_size=4,
)


@st.composite
def _events(draw: Any) -> _audit.Event:
    return _audit.Event(
        draw(_TEXT),
        draw(st.sampled_from(sorted(_audit.ACTIONS))),
        draw(st.sampled_from(sorted(_audit.OUTCOMES))),
        records=draw(st.lists(_TEXT, max_size=3)),
        fields=draw(st.lists(_TEXT, max_size=3)),
        purpose=draw(st.none() | _TEXT),
        request=draw(st.none() | _TEXT),
        grant=draw(st.none() | _TEXT),
        detail=draw(_DETAIL),
    )


def _loads(entry: bytes) -> tuple[Any, Any]:
    obj = json.loads(entry)
    return obj["seq"], obj["prev"]


def _same_as_json_loads(entry: bytes) -> None:
    try:
        want: Any = _loads(entry)
    except (ValueError, KeyError, TypeError) as exc:
        want = type(exc)
    try:
        got: Any = _audit_entry._seq_prev(entry)
    except (ValueError, KeyError, TypeError) as exc:
        got = type(exc)
    assert got == want and type(got) is type(want)


@settings(max_examples=500, deadline=None)
@given(_events(), st.integers(0, 2**40), st.none() | st.binary(min_size=32, max_size=32))
def test_seq_prev_fast_path_reads_written_entries_like_json_loads(
    event: _audit.Event, seq: int, prev: bytes | None
) -> None:
    entry = _audit.encode_entry(seq, "2026-01-01T00:00:00Z", event, prev)
    assert _audit_entry._seq_prev(entry) == (seq, None if prev is None else prev.hex())
    _same_as_json_loads(entry)


@settings(max_examples=1500, deadline=None)
@given(_events(), st.integers(0, 99), st.data())
def test_seq_prev_equals_json_loads_on_mutated_entries(
    event: _audit.Event, seq: int, data: Any
) -> None:
    entry = bytearray(_audit.encode_entry(seq, "t", event, bytes(32)))
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["set", "insert", "delete", "cut"]))
        at = data.draw(st.integers(0, len(entry)))
        byte = data.draw(st.sampled_from(list(b'"\\{}[],:0123456789-null prevseq\x00\x1f\xc3\xff')))
        if kind == "set" and at < len(entry):
            entry[at] = byte
        elif kind == "insert":
            entry.insert(at, byte)
        elif kind == "delete" and at < len(entry):
            del entry[at]
        elif kind == "cut":
            del entry[at:]
    _same_as_json_loads(bytes(entry))


# -- verify: page checks against the per-entry reference loop -----------------------


class _FakeLog:
    """A log source (what verify reads), over rows held in memory."""

    def __init__(self, rows: list[tuple[Any, Any, Any]], batch: int) -> None:
        self.rows = sorted(rows, key=lambda r: r[0])
        self.batch = batch

    def checkpoints(self) -> list[Any]:
        return []

    def pages(self, start: int = 0, *, batch: int = 0) -> Iterator[list[Any]]:
        for at in range(0, len(self.rows), self.batch):
            yield self.rows[at : at + self.batch]

    row = staticmethod(AuditLog.row)


def _reference(rows: list[tuple[Any, Any, Any]], progress: Callable[[int], None]) -> bytes:
    """The per-entry loop of verify before the page checks (no checkpoints)."""
    frontier = Frontier()
    prev_hex = None
    for index, row in enumerate(sorted(rows, key=lambda r: r[0])):
        seq, entry, digest = AuditLog.row(row)
        if seq != index:
            raise _audit_checks._bad(
                f"entry {index} is missing (next stored entry is {seq}): entries were deleted"
            )
        computed = leaf_hash(entry)
        if computed != digest:
            raise _audit_checks._bad(f"entry {seq} was modified (its bytes do not match its hash)")
        try:
            entry_seq, entry_prev = _audit_entry._seq_prev(entry)
        except (ValueError, KeyError, TypeError) as exc:
            raise _audit_checks._bad(f"entry {seq} is not a valid log entry") from exc
        if entry_seq != seq:
            raise _audit_checks._bad(
                f"entry {seq} carries sequence number {entry_seq}: entries were reordered"
            )
        if entry_prev != prev_hex:
            raise _audit_checks._bad(
                f"entry {seq} does not link to entry {seq - 1} "
                "(an entry before it was changed, removed, inserted or reordered)"
            )
        prev_hex = computed.hex()
        frontier.append(computed)
        if (index + 1) % 10000 == 0:
            progress(index + 1)
    return frontier.root()


def _chain(n: int) -> list[tuple[Any, Any, Any]]:
    rows: list[tuple[Any, Any, Any]] = []
    prev = None
    for seq in range(n):
        event = _audit.Event("w", "record.create", records=[f"r{seq}"], detail={"row": seq})
        entry = _audit.encode_entry(seq, "2026-01-01T00:00:00Z", event, prev)
        prev = leaf_hash(entry)
        rows.append((seq, entry, prev))
    return rows


def _outcome(fn: Callable[[Callable[[int], None]], bytes]) -> tuple[Any, list[int]]:
    ticks: list[int] = []
    try:
        return fn(ticks.append), ticks
    except IntegrityError as exc:
        return str(exc), ticks


def _tamper(rows: list[tuple[Any, Any, Any]], how: str, at: int) -> None:
    seq, entry, digest = rows[at]
    if not isinstance(entry, bytes):
        return
    if how == "edit":
        rows[at] = (seq, entry.replace(b"record.create", b"record.delete"), digest)
    elif how == "rehash":
        new = entry.replace(b'"w"', b'"x"')
        rows[at] = (seq, new, leaf_hash(new))
    elif how == "delete":
        del rows[at]
    elif how == "swap" and at + 1 < len(rows):
        rows[at], rows[at + 1] = (seq, *rows[at + 1][1:]), (rows[at + 1][0], entry, digest)
    elif how == "text":
        # An entry already made invalid UTF-8 stays bytes (SQLite would keep it a BLOB).
        rows[at] = (seq, entry.decode(errors="surrogateescape"), digest)
    elif how == "reformat":  # valid JSON, not the fast shape: json.loads decides
        try:
            new = json.dumps(json.loads(entry)).encode()
        except ValueError:  # an earlier tampering left it undecodable: nothing to reformat
            return
        rows[at] = (seq, new, leaf_hash(new))
    elif how == "badutf8":
        new = entry.replace(b'"w"', b'"\xff"')
        rows[at] = (seq, new, leaf_hash(new))


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 60),
    st.integers(1, 25),
    st.lists(
        st.tuples(
            st.sampled_from(["edit", "rehash", "delete", "swap", "text", "reformat", "badutf8"]),
            st.integers(0, 59),
        ),
        max_size=2,
    ),
)
def test_verify_pages_report_what_the_per_entry_loop_reports(
    n: int, batch: int, tampering: list[tuple[str, int]]
) -> None:
    rows = _chain(n)
    for how, at in tampering:
        if at < len(rows):
            _tamper(rows, how, at)

    def ours(progress: Callable[[int], None]) -> bytes:
        store: Any = _FakeLog(rows, batch)
        return _audit.verify(store, origin="o", signers={}, progress=progress).root

    assert _outcome(ours) == _outcome(lambda p: _reference(rows, p))


@pytest.mark.parametrize("batch", [5000, 7, 10000])
def test_verify_pages_tick_progress_like_the_per_entry_loop(batch: int) -> None:
    rows = _chain(25_001)
    store: Any = _FakeLog(rows, batch)
    ticks: list[int] = []
    report = _audit.verify(store, origin="o", signers={}, progress=ticks.append)
    assert ticks == [10_000, 20_000]
    assert report.entries == 25_001 and report.root == _reference(rows, lambda _: None)
