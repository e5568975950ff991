"""A session verifies the trust state once per log head (issue 18: every role-gated
operation asks for it), and still verifies whatever is appended after that."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from childvault.keys import IntegrityError
from childvault.vault import _audit, _merkle
from childvault.vault._audit import Event
from childvault.vault._time import iso
from tests._insider import Insider
from tests.conftest import World, add_children


def _append_forged(world: World, actor: str) -> None:
    """An entry chained onto the head in ``actor``'s name, without their signature."""
    event = Event(actor, "record.list", detail={"count": 0})
    with Insider(world, "worker2") as insider:
        seq, prev = insider.rows("audit", ["seq", "hash"], order_by="seq")[-1]
        at = iso(datetime(2026, 11, 24, 10, 0, tzinfo=UTC))
        entry = _audit.encode_entry(seq + 1, at, event, bytes(prev))
        insider.insert("audit", {"seq": seq + 1, "entry": entry, "hash": _merkle.leaf_hash(entry)})


def test_an_unchanged_log_is_not_replayed_again(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 1)
        s = v._session
        first = s.trust()
        assert first is not None
        # Nothing appended since: the verified state is answered as is (a replay
        # would have copied it), by require and by trust alike.
        assert s._trust_state(save=False) is first
        assert s.trust() is first
        v.requests(None)  # role-gated (require), and logs its own entry
        after = s.trust()
        assert after is not None and s._verified is not None
        assert s._verified.size == s.db.audit.head()[0]


def test_an_entry_appended_after_verification_is_still_verified(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 1)
        v.list_page()
        assert v._session.trust() is not None
        # An insider appends an entry in an officer's name while the session is open.
        _append_forged(world, "officer1")
        with pytest.raises(IntegrityError, match="not signed"):
            v._session.trust()
        with pytest.raises(IntegrityError):
            v.list_page()
