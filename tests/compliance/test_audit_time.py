"""Log timestamps never go backwards (issue 15 finding 6; DESIGN section 7).

``audit verify`` accepted entries dated before their predecessors, so an entry
inserted or re-dated in the past went unnoticed by the time check; and a clock
stepped back would have written such entries honestly. Now ``append`` stamps
``max(now, previous ts)`` and ``verify`` refuses a step back beyond
``TS_TOLERANCE`` (5 s).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from childvault.keys import IntegrityError
from childvault.vault import _audit
from childvault.vault._merkle import leaf_hash
from childvault.vault._time import iso
from tests.conftest import World, add_children

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


class _Log:
    """A log source over rows held in memory (what verify reads)."""

    def __init__(self, rows: list[tuple[int, bytes, bytes]], batch: int) -> None:
        self.rows, self.batch = rows, batch

    def checkpoints(self) -> list[Any]:
        return []

    def pages(self, start: int = 0, *, batch: int = 0) -> Iterator[list[Any]]:
        for at in range(start, len(self.rows), self.batch):
            yield self.rows[at : at + self.batch]

    def row(self, raw: Any) -> tuple[int, bytes, bytes]:
        return raw  # type: ignore[no-any-return]

    def entry_at(self, seq: int) -> tuple[bytes, bytes] | None:
        return self.rows[seq][1:] if seq < len(self.rows) else None


def _chain(offsets: list[float]) -> list[tuple[int, bytes, bytes]]:
    """Entries dated T0 + each offset (seconds), correctly chained and hashed."""
    rows: list[tuple[int, bytes, bytes]] = []
    prev = None
    for seq, offset in enumerate(offsets):
        event = _audit.Event("w", "record.create", records=[f"{seq:032x}"])
        entry = _audit.encode_entry(seq, iso(T0 + timedelta(seconds=offset)), event, prev)
        prev = leaf_hash(entry)
        rows.append((seq, entry, prev))
    return rows


@pytest.mark.parametrize("batch", [1, 3, 5000])
def test_verify_fails_on_an_entry_dated_before_its_predecessor(batch: int) -> None:
    rows = _chain([0, 60, 120, 50, 180])
    with pytest.raises(IntegrityError, match=r"entry 3 is dated .* 70 s before an earlier entry"):
        _audit.verify(_Log(rows, batch), origin="o", signers={})


@pytest.mark.parametrize("batch", [1, 2, 5000])
def test_verify_allows_a_step_back_within_the_tolerance(batch: int) -> None:
    rows = _chain([0, 60, 56, 61, 120])
    assert _audit.verify(_Log(rows, batch), origin="o", signers={}).entries == 5
    # The tolerance is against the latest time so far, not just the predecessor:
    # steps of 4 s back cannot add up to more than 5 s.
    with pytest.raises(IntegrityError, match="entry 3 is dated"):
        _audit.verify(_Log(_chain([0, 60, 56, 52]), batch), origin="o", signers={})


@pytest.mark.parametrize("batch", [1, 3, 5000])
def test_a_step_back_inside_the_already_verified_prefix_is_still_refused(batch: int) -> None:
    """Regression (merge of issues 15 and 18): entries inside the verifier's known
    prefix take the cheap chain check; the trust-state replay that produced the
    prefix never looked at times, so the cheap check must refuse a step back too."""
    rows = _chain([0, 60, 120, 50, 180, 240])
    known = (5, rows[4][2])  # entries 0..4 "already verified", head = entry 4's hash
    with pytest.raises(IntegrityError, match=r"entry 3 is dated .* 70 s before an earlier entry"):
        _audit.verify(_Log(rows, batch), origin="o", signers={}, known=known)
    # The same log without the step back passes on the cheap path.
    good = _chain([0, 60, 120, 150, 180, 240])
    report = _audit.verify(_Log(good, batch), origin="o", signers={}, known=(5, good[4][2]))
    assert report.entries == 6


def test_append_stamps_monotonically_when_the_clock_steps_back(world: World) -> None:
    """An injected clock stepped back one hour: the log still verifies."""
    with world.open("worker1") as v:
        add_children(v, 1)
    with world.open("admin") as v:
        before = [e["entry"]["ts"] for e in v.audit_entries()]
    world.clock.advance(hours=-1)
    with world.open("worker1") as v:
        add_children(v, 1)
    with world.open("admin") as v:
        stamps = [e["entry"]["ts"] for e in v.audit_entries()]
        v.verify_audit()
    assert len(stamps) > len(before)
    assert stamps == sorted(stamps) and stamps[len(before)] == before[-1]
