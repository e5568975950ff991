"""The limits SECURITY.md admits, pinned by tests so the document stays true.

Every user holds the SQLCipher key (one passphrase opens the database), so an
insider with their own code can edit rows. ``audit verify`` detects any change
to the log itself and to registrations (users, custodian keys), and truncation
when a witness is kept; it cannot see changes to bookkeeping rows the log does
not describe (entries appended in someone else's name are now caught: issue
12; so is a grant's use counter reset by SQL: insider/test_grant_rows.py). And a
full-home backup keeps opening for the officers of its time after ``keys
rotate``, until that copy is destroyed. If one of these tests starts failing
because the product got stronger, update SECURITY.md with it.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from childvault.keys import IntegrityError
from childvault.vault import _audit, _merkle
from childvault.vault._audit import Event
from childvault.vault._time import iso
from tests._insider import Insider, at_least
from tests.conftest import World, add_children, child_values


def _grant(world: World, ids: list[str]) -> tuple[str, str]:
    with world.open("worker1") as v:
        req = v.request_access(ids, ["name"], "case_management", "一次")
    with world.open("officer1") as v:
        approval = v.approve(req)
    return approval.token, approval.grant_id


def test_insider_deletes_record_rows_verify_passes_the_log_still_names_the_record(
    world: World,
) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 2)
    with Insider(world, "worker1") as insider:  # foreign keys on, as in the library
        insider.delete("records", where={"id": ids[0]})
    with world.open("admin") as v:
        v.verify_audit()  # the limit: data destroyed outside the library is not detected
        creates = [e for e in v.audit_entries(record=ids[0])]
    assert [e["entry"]["action"] for e in creates] == ["record.create"]
    with world.open("worker1") as v:
        assert {r.id for r in v.list_records()} == {ids[1]}


def test_insider_appends_a_well_formed_entry_in_another_name_and_it_is_detected(
    world: World,
) -> None:
    """Closed by issue 12: entries carry their actor's signature, and `audit
    verify` checks it against the actor's verified key."""
    # The library's own entry encoding, chained onto the current head.
    event = Event("officer1", "record.delete", records=["0" * 32], detail={"category": "request"})
    with Insider(world, "worker1") as insider:
        seq, prev = insider.rows("audit", ["seq", "hash"], order_by="seq")[-1]
        entry = _audit.encode_entry(
            seq + 1, iso(datetime(2026, 11, 24, 10, 0, tzinfo=UTC)), event, bytes(prev)
        )
        insider.insert("audit", {"seq": seq + 1, "entry": entry, "hash": _merkle.leaf_hash(entry)})
    with world.open("admin") as v, pytest.raises(IntegrityError, match="not signed by them"):
        v.verify_audit()


def test_insider_truncation_is_caught_only_with_the_witness(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 2)
    _grant(world, ids)  # an approval: a checkpoint, stored and witnessed
    with world.open("worker1") as v:
        add_children(v, 2)
    with Insider(world, "worker1") as insider:
        size = max(s for (s,) in insider.rows("checkpoints", ["size"]))
        # Cut below the checkpoint, where a run of entries ends (its last entry
        # signed): a cut inside a run leaves an unsigned entry, caught anyway.
        signed = {seq for seq, sig in insider.rows("audit", ["seq", "sig"]) if sig is not None}
        cut = max(seq + 1 for seq in signed if seq + 1 < size)
        insider.delete("audit", where={"seq": at_least(cut)})
        insider.delete("checkpoints")
    with world.open("admin") as v, pytest.raises(IntegrityError, match="truncated"):
        v.verify_audit()
    world.witness.unlink()
    with world.open("admin") as v:
        v.verify_audit()  # the limit: without the witness, a cut log verifies


def test_full_home_backup_stays_readable_after_delete_and_rotate(
    world: World, tmp_path: Path
) -> None:
    """Rotation retires old *database* copies, not a backup that carries its own
    key slots: that backup opens for the officers of its time until destroyed."""
    with world.open("worker1") as v:
        ids = add_children(v, 1)
    backup = tmp_path / "backup"
    shutil.copytree(world.home, backup)
    with world.open("officer1") as v:
        v.delete(ids[0], "监护人申请删除")
        v.rotate_keys()
    old = World(backup, world.ids, world.clock)
    token, _ = _grant(old, ids)
    with old.open("worker1") as v:
        assert v.read_with_grant(token) == {ids[0]: {"name": child_values(0)["name"]}}
