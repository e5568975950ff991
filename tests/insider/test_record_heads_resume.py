"""Record heads resumed from an earlier scan (``_record_trust.record_heads``).

The scan of new log entries starts one entry early and checks that the entry
the earlier scan ended on is still the same one (it saves a separate read of
that entry, a round trip through the server: issue 13). A resumed scan must
give what a scan from the start gives, and a start the log no longer has must
never be continued.
"""

from __future__ import annotations

import dataclasses

from childvault.vault import _record_trust
from childvault.vault._record_trust import RecordHeads
from tests.conftest import World, add_children


def test_a_resumed_scan_equals_a_full_one_and_a_lost_start_is_not_continued(
    world: World,
) -> None:
    with world.open("worker1") as v:
        add_children(v, 2)
        s = v._session
        found = _record_trust.record_heads(s)
        assert found is not None
        state, middle = found
        add_children(v, 3)
        found = _record_trust.record_heads(s)  # resumed from ``middle`` (this session's)
        assert found is not None
        state, resumed = found
        size = resumed.size
        assert size > middle.size
        full = _record_trust._scan(s.db, state, RecordHeads(), size)
        assert full is not None
        assert (full[0].heads, full[0].size, full[0].head) == (
            resumed.heads,
            resumed.size,
            resumed.head,
        )
        again = _record_trust._scan(s.db, state, middle, size)
        assert again is not None and again[0].heads == resumed.heads
        # A start whose last entry is not the log's (rewritten below it), or lies
        # beyond the log's end: not continued (the caller scans from the start).
        forged = dataclasses.replace(middle, head=b"\x00" * 32)
        assert _record_trust._scan(s.db, state, forged, size) is None
        beyond = RecordHeads(dict(middle.heads), size + 10, middle.head)
        assert _record_trust._scan(s.db, state, beyond, size + 20) is None
        # record_heads itself falls back to a full scan from such a start.
        _record_trust._CACHE[s] = forged
        found = _record_trust.record_heads(s)
        assert found is not None and found[1].heads == full[0].heads
