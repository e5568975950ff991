"""One signature per appended run (docs/decisions.md, "One signature per appended
run"): the attacks an insider with the database key can try on a run's
signature, each refused by ``audit verify`` (resumed and full) and by the trust
replay every operation makes (``_registrations.replay``, the trust sync's
verifier). The server's append check is tested in tests/server/test_run_signatures.py.

In the template vault, worker1 adding three children appends one run of three
``record.create`` entries: two unsigned, the third signed over the run's first
sequence number and its own hash (:func:`_audit.run_message`).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from childvault.keys import IntegrityError
from childvault.vault import _audit, _merkle
from childvault.vault._registrations import Verified, anchor_of, replay
from childvault.vault._statements import TrustState
from childvault.vault._time import iso
from tests._insider import Insider
from tests.conftest import World, add_children

_WHEN = iso(datetime(2026, 11, 24, 10, 0, tzinfo=UTC))


def _run(world: World) -> list[int]:
    """worker1 adds three children; the seqs of the run that logged them."""
    with world.open("worker1") as v:
        add_children(v, 3)
        size = v._session.db.audit.size()
    run = [size - 3, size - 2, size - 1]
    with Insider(world, "worker2") as insider:
        sigs: dict[int, object] = dict(insider.rows("audit", ["seq", "sig"], order_by="seq"))
    # The honest shape: only the run's last entry is signed.
    assert [sigs[s] is not None for s in run] == [False, False, True]
    return run


def _refused_everywhere(world: World, seq: int) -> None:
    """`audit verify` (resumed and full) and a replay from the anchor name ``seq``."""
    match = f"log entry {seq} is in the name of 'worker1' but not signed by them"
    with world.open("officer2") as v, pytest.raises(IntegrityError, match=match):
        v.verify_audit()
    with world.open("officer2") as v, pytest.raises(IntegrityError, match=match):
        v.verify_audit(full=True)
    anchor = anchor_of(world.ids["officer2"])
    assert anchor is not None
    with world.open("admin") as v, pytest.raises(IntegrityError, match=match):
        replay(v._session.db, Verified(TrustState.start(anchor), 0, None))


def _chain(insider: Insider, seq: int, event: _audit.Event, sig: bytes | None = None) -> bytes:
    """Write ``event`` as entry ``seq``, linked to entry ``seq - 1`` as stored; its hash."""
    prev = bytes(insider.rows("audit", ["hash"], where={"seq": seq - 1})[0][0])
    entry = _audit.encode_entry(seq, _WHEN, event, prev)
    digest = _merkle.leaf_hash(entry)
    row = {"entry": entry, "hash": digest, "sig": sig}
    if insider.count("audit", where={"seq": seq}):
        insider.update("audit", row, where={"seq": seq})
    else:
        insider.insert("audit", {"seq": seq, **row})
    return digest


def test_an_honest_run_verifies(world: World) -> None:
    _run(world)
    with world.open("officer2") as v:
        assert v.verify_audit(full=True).entries > 3


def test_attack_strip_the_closing_signature(world: World) -> None:
    first, _, last = _run(world)
    with Insider(world, "worker2") as insider:
        assert insider.update("audit", {"sig": None}, where={"seq": last}) == 1
    _refused_everywhere(world, first)


def test_attack_unsigned_entries_in_anothers_name_at_the_tail(world: World) -> None:
    _, _, last = _run(world)
    with Insider(world, "worker2") as insider:
        for seq in (last + 1, last + 2):
            _chain(insider, seq, _audit.Event("worker1", "record.create", records=["0" * 32]))
    _refused_everywhere(world, last + 1)


def test_attack_unsigned_entry_in_anothers_name_just_before_their_run(world: World) -> None:
    """The insider slips an unsigned entry in worker1's name onto the head between
    worker1's check of the log and worker1's append of a run (a race): worker1's
    signature commits to it through the chain, but names where worker1's run
    starts, so the forged entry stays unsigned."""
    with world.open("worker1") as v:
        db = v._session.db
        with Insider(world, "worker2") as insider:
            forged = int(insider.rows("audit", ["seq"], order_by="seq")[-1][0]) + 1
            _chain(insider, forged, _audit.Event("worker1", "record.delete", records=["0" * 32]))
        # worker1's appender, as the library calls it once its checks are done.
        events = [_audit.Event("worker1", "record.list", detail={"n": i}) for i in range(3)]
        with db.transaction():
            assert _audit.append(db.audit, events, datetime.now(UTC)) == [
                forged + 1,
                forged + 2,
                forged + 3,
            ]
    with Insider(world, "worker2") as insider:
        sigs: dict[int, object] = dict(insider.rows("audit", ["seq", "sig"], order_by="seq"))
    assert [sigs[s] is not None for s in range(forged, forged + 4)] == [False] * 3 + [True]
    _refused_everywhere(world, forged)


def test_attack_splice_another_actors_entry_into_a_run(world: World) -> None:
    first, middle, last = _run(world)
    with Insider(world, "worker2") as insider:
        sig = bytes(insider.rows("audit", ["sig"], where={"seq": last})[0][0])
        # worker2's own entry, signed by worker2, in place of the run's middle;
        # the run's last entry linked to it, keeping worker1's signature.
        mine = _audit.Event("worker2", "record.list", detail={})
        digest = _chain(insider, middle, mine)
        insider.update(
            "audit",
            {"sig": world.ids["worker2"].sign(_audit.entry_message(digest))},
            {"seq": middle},
        )
        closing = _audit.decode_entry(
            bytes(insider.rows("audit", ["entry"], where={"seq": last})[0][0])
        )
        event = _audit.Event(
            "worker1",
            "record.create",
            records=closing["records"],
            fields=closing["fields"],
            detail=closing["detail"],
        )
        _chain(insider, last, event, sig)
    _refused_everywhere(world, first)


def test_attack_move_the_signature_to_an_earlier_entry(world: World) -> None:
    first, _, last = _run(world)
    with Insider(world, "worker2") as insider:
        sig = bytes(insider.rows("audit", ["sig"], where={"seq": last})[0][0])
        insider.update("audit", {"sig": None}, where={"seq": last})
        insider.update("audit", {"sig": sig}, where={"seq": first})
    _refused_everywhere(world, first)


def test_attack_replay_a_runs_signature_on_another_run(world: World) -> None:
    _, _, one = _run(world)
    first, _, two = _run(world)
    with Insider(world, "worker2") as insider:
        sig = bytes(insider.rows("audit", ["sig"], where={"seq": one})[0][0])
        insider.update("audit", {"sig": sig}, where={"seq": two})
    _refused_everywhere(world, first)
