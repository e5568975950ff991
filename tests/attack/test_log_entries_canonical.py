"""A log entry written with a member twice, in a local (SQLCipher) vault (review RV11-1).

SQLite's index columns (``action``, ``request_ref``, ``grant_ref``,
``recipient_ref``) read a member written twice as its first value; ``json.loads``
(every check and report of the library) as its last. The server refuses such
entries (review RV9-6), but a staff member holding the database passphrase
writes to a local vault directly: a ``grant.read`` they sign themselves, whose
detail says ``"recipient": null`` and then ``"recipient": "court"``, verified
(their own signature, linked) yet absent from the transfers register, which
finds reads through the recipient index. The trust replay (``audit verify``,
``audit checkpoint`` and every operation that seals, approves or reads) now
refuses any entry that is not the canonical encoding of its own parse.
"""

from __future__ import annotations

import json

import pytest

from childvault.keys import IntegrityError
from childvault.vault import _audit
from childvault.vault._registrations import Verified, anchor_of, replay
from childvault.vault._statements import TrustState
from tests._insider import Insider
from tests.attack._own_entry import append_own, approved_read
from tests.conftest import World

#: The recipient written twice: null first (SQLite's index), the court last (json).
_TWICE = (b'"detail":{', b'"detail":{"recipient":null,')


def test_a_read_with_its_recipient_written_twice_is_refused(world: World) -> None:
    seq, _ = append_own(world, approved_read(world), _TWICE)
    with Insider(world, "admin") as insider:
        ((entry, index),) = insider.rows("audit", ["entry", "recipient_ref"], where={"seq": seq})
    # The premise: every parser of the library reads the court, the index nothing.
    assert json.loads(bytes(entry))["detail"]["recipient"] == "court"
    assert index is None
    match = f"log entry {seq} is not in canonical form"
    with world.open("officer2") as v, pytest.raises(IntegrityError, match=match):
        v.verify_audit(full=True)
    # Nor does an officer sign a checkpoint over it (what witnesses cosign).
    with world.open("officer1") as v, pytest.raises(IntegrityError, match=match):
        v.checkpoint()


def test_an_action_written_twice_is_refused(world: World) -> None:
    """The action index says ``record.list`` (no grant's read), the entry ``grant.read``."""
    seq, _ = append_own(
        world,
        approved_read(world),
        (b'{"action":"grant.read"', b'{"action":"record.list","action":"grant.read"'),
    )
    with Insider(world, "admin") as insider:
        ((action,),) = insider.rows("audit", ["action"], where={"seq": seq})
    assert action == "record.list"
    with world.open("officer2") as v, pytest.raises(IntegrityError, match="canonical form"):
        v.verify_audit(full=True)


def test_the_honest_read_is_in_the_register(world: World) -> None:
    """The same entry as the library writes it verifies and is listed (the attacks
    above differ from it only in the member written twice)."""
    seq, _ = append_own(world, approved_read(world))
    with world.open("officer2") as v:
        assert v.verify_audit(full=True).entries == seq + 1
    with world.open("admin") as v:
        assert [t.seq for t in v.transfers()] == [seq]


def test_an_entry_changed_after_the_servers_check_is_refused(world: World) -> None:
    """The server finds each entry canonical as it arrives and gives the replay at
    commit those bytes (``replay(canonical=...)``), which it does not encode again.
    Bytes stored otherwise than they were checked are checked as ever."""
    seq, stored = append_own(world, approved_read(world), _TWICE)
    anchor = anchor_of(world.ids["worker1"])
    assert anchor is not None

    def start() -> Verified:  # replay changes the state it is given
        return Verified(TrustState.start(anchor), 0, None)

    with world.open("officer2") as v:
        db = v._session.db
        # What was checked: the honest entry, which the stored one is not.
        honest = _audit.canonical(_audit.decode_entry(stored))
        assert honest != stored
        with pytest.raises(IntegrityError, match=f"log entry {seq} is not in canonical form"):
            replay(db, start(), canonical={honest})
        # The same bytes are passed over: the caller checked them (the skip is real).
        assert replay(db, start(), canonical={stored}).size == seq + 1
