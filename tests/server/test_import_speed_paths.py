"""The server's commit replay does not verify a signature twice, without opening a hole.

The server verifies each appended log entry's signature as the batch arrives
(``VaultHost._check_entries``) and replays the batch at commit
(``_registrations.replay``). The replay takes the (key, signed message,
signature) triples already verified and skips only those exact triples: an entry whose
stored signature differs, or whose actor's key at that point of the log is
another, is verified as before (issue 13, session 5).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from childvault.keys import IntegrityError
from childvault.vault import _audit
from childvault.vault._backend import Backend
from childvault.vault._registrations import Verified, anchor_of, replay
from childvault.vault._statements import Anchor, TrustState
from tests._insider import Insider
from tests.conftest import World, add_children
from tests.server._vaultserver import make_vault, synthetic_csv


def _db(v: object) -> Backend:
    db: Backend = v._session.db  # type: ignore[attr-defined]
    return db


def _start(anchor: Anchor) -> Verified:
    return Verified(TrustState.start(anchor), 0, None)


def _triples(db: Backend, state: TrustState, size: int) -> set[tuple[bytes, bytes, bytes]]:
    """Every (actor's key, signed message, stored signature) of the log's signed
    entries, the message as the run rule gives it (a run's closing entry signs
    where its run starts)."""
    sigs = db.audit.signatures(0, size - 1)
    out = set()
    runs = _audit.RunCheck()
    for rows in db.audit.pages(0):
        for raw in rows:
            seq, entry, digest = db.audit.row(raw)
            obj = _audit.decode_entry(entry)
            actor, action = obj["actor"], obj["action"]
            if actor not in state.users:
                runs.other()
                continue
            key = state.users[actor].sign_key
            if seq in sigs:
                out.add((key, runs.message(seq, actor, key, action, digest), sigs[seq]))
                assert runs.signed(seq, actor, key, action) is None
            else:
                assert runs.unsigned(seq, actor, key, action) is None
    return out


def test_replay_with_checked_triples_gives_the_same_state(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 3)
    anchor = anchor_of(world.ids["worker1"])
    assert anchor is not None
    with world.open("worker1") as v:
        db = _db(v)
        full = replay(db, _start(anchor))
        triples = _triples(db, full.state, full.size)
        assert len(triples) >= 3
        again = replay(db, _start(anchor), checked=triples)
    assert (again.size, again.head) == (full.size, full.head)
    assert again.state.to_bytes() == full.state.to_bytes()


def test_a_forged_signature_is_refused_whatever_was_checked(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 1)
    anchor = anchor_of(world.ids["worker1"])
    assert anchor is not None
    with world.open("worker1") as v:
        db = _db(v)
        full = replay(db, _start(anchor))
        genuine = _triples(db, full.state, full.size)
        last = full.size - 1
        digest = db.audit.row(next(iter(db.audit.pages(last)))[0])[2]
    # The insider writes worker2's signature over worker1's last entry.
    forged = world.ids["worker2"].sign(_audit.entry_message(digest))
    with Insider(world, "worker1") as insider:
        assert insider.update("audit", {"sig": forged}, where={"seq": last}) == 1
    worker2_key = full.state.users["worker2"].sign_key
    with world.open("admin") as v:
        db = _db(v)
        # The genuine triple names another signature: it does not excuse the stored one.
        with pytest.raises(IntegrityError, match=f"log entry {last} .* not signed by them"):
            replay(db, _start(anchor), checked=genuine)
        # The forged signature does verify under worker2's key, which is not the actor's.
        with pytest.raises(IntegrityError, match=f"log entry {last} .* not signed by them"):
            replay(
                db,
                _start(anchor),
                checked=genuine | {(worker2_key, _audit.entry_message(digest), forged)},
            )


def test_an_import_through_the_server_commits_and_verifies(tmp_path: Path) -> None:
    served = make_vault(tmp_path, ("worker1", "officer1"))
    served.start()
    try:
        source = synthetic_csv(tmp_path / "rows.csv", 40)
        with served.connect("worker1") as w:
            w.import_file(source)
            assert len(list(w.list_records())) == 40
        # A later client replays the whole log from the store and verifies every signature.
        with served.connect("officer1") as o:
            report = o.verify_audit(full=True)
        assert report.entries > 40
    finally:
        served.stop()
