"""The audit log: verification passes untouched and names the first bad entry
after edits, deletions, reordering, truncation and replacement done directly on
the database with its key."""

from __future__ import annotations

import json

import pytest
import rfc8785

from childvault.keys import AccessDenied, IntegrityError
from childvault.vault._merkle import leaf_hash
from tests._insider import Insider, at_least
from tests.conftest import World, add_children


def _populated(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 5)


def _verify(world: World) -> None:
    with world.open("worker2") as v:
        v.verify_audit()


def test_untouched_log_verifies(world: World) -> None:
    _populated(world)
    with world.open("worker2") as v:
        report = v.verify_audit()
    assert report.entries >= 12  # init + users + custodian + share + 5 records


def test_every_write_appends_an_entry_in_its_transaction(world: World) -> None:
    with world.open("worker1") as v:
        before = v.verify_audit().entries
        ids = add_children(v, 3)
        assert v.verify_audit().entries == before + 3
    with world.open("officer1") as v:
        entries = [e["entry"] for e in v.audit_entries(record=ids[0])]
    assert [e["action"] for e in entries] == ["record.create"]
    assert entries[0]["actor"] == "worker1"


def test_entries_are_canonical_json_with_prev_chain(world: World) -> None:
    _populated(world)
    with Insider(world, "worker1") as insider:
        rows = insider.rows("audit", ["seq", "entry", "hash"], order_by="seq")
    prev = None
    for seq, entry, digest in rows:
        obj = json.loads(entry)
        assert rfc8785.dumps(obj) == bytes(entry)
        assert obj["seq"] == seq and obj["prev"] == prev
        assert leaf_hash(bytes(entry)) == bytes(digest)
        prev = bytes(digest).hex()


def _edit(world: World, seq: int) -> None:
    with Insider(world, "worker1") as insider:
        ((entry,),) = insider.rows("audit", ["entry"], where={"seq": seq})
        changed = bytes(entry).replace(b'"worker1"', b'"worker2"')
        assert changed != bytes(entry)
        insider.update("audit", {"entry": changed}, where={"seq": seq})


def test_edited_entry_is_named(world: World) -> None:
    _populated(world)
    _edit(world, 9)  # the first record entry (issue 12 added the countersign entry)
    with pytest.raises(IntegrityError, match=r"entry 9 was modified") as info:
        _verify(world)
    assert info.value.exit_code == 4


def test_edited_entry_with_recomputed_hash_breaks_the_next_link(world: World) -> None:
    _populated(world)
    with Insider(world, "worker1") as insider:
        ((entry,),) = insider.rows("audit", ["entry"], where={"seq": 9})
        changed = bytes(entry).replace(b'"worker1"', b'"worker2"')
        insider.update("audit", {"entry": changed, "hash": leaf_hash(changed)}, where={"seq": 9})
    with pytest.raises(IntegrityError, match=r"entry 10 does not link to entry 9"):
        _verify(world)


def test_deleted_entry_is_named(world: World) -> None:
    _populated(world)
    with Insider(world, "worker1") as insider:
        insider.delete("audit", where={"seq": 7})
    with pytest.raises(IntegrityError, match=r"entry 7 is missing"):
        _verify(world)


def test_swapped_entries_are_detected(world: World) -> None:
    _populated(world)
    with Insider(world, "worker1") as insider:
        (a,) = insider.rows("audit", ["entry", "hash"], where={"seq": 8})
        (b,) = insider.rows("audit", ["entry", "hash"], where={"seq": 9})
        insider.update("audit", {"entry": b[0], "hash": b[1]}, where={"seq": 8})
        insider.update("audit", {"entry": a[0], "hash": a[1]}, where={"seq": 9})
    with pytest.raises(IntegrityError, match=r"entry 8 carries sequence number 9"):
        _verify(world)


def test_truncation_is_detected_against_the_witness(world: World) -> None:
    _populated(world)
    with world.open("officer1") as v:
        v.checkpoint()
    size = json.loads(world.witness.read_text().splitlines()[-1])["note"].split("\n")[1]
    with Insider(world, "worker1") as insider:
        insider.delete("audit", where={"seq": at_least(int(size) - 3)})
        insider.delete("checkpoints")  # the insider also removes the stored copies
    with pytest.raises(IntegrityError, match="truncated"):
        _verify(world)


def test_replaced_log_of_equal_length_is_detected(world: World) -> None:
    """Rewrite every entry consistently (a valid chain) after a checkpoint."""
    _populated(world)
    with world.open("officer1") as v:
        v.checkpoint()
    with Insider(world, "worker1") as insider:
        rows = insider.rows("audit", ["seq", "entry"], order_by="seq")
        prev = None
        insider.delete("checkpoints")
        for seq, entry in rows:
            obj = json.loads(entry)
            obj["actor"] = "someone-else"
            obj["prev"] = prev
            new = rfc8785.dumps(obj)
            digest = leaf_hash(new)
            insider.update("audit", {"entry": new, "hash": digest}, where={"seq": seq})
            prev = digest.hex()
    with pytest.raises(IntegrityError, match="diverged"):
        _verify(world)


def test_forged_checkpoint_signature_fails(world: World) -> None:
    _populated(world)
    with world.open("officer1") as v:
        note = v.checkpoint()
    lines = world.witness.read_text().splitlines()
    forged = note.replace(note.split("\n")[1], str(int(note.split("\n")[1]) + 5), 1)
    lines.append(json.dumps({"note": forged}))
    world.witness.write_text("\n".join(lines) + "\n")
    with pytest.raises(IntegrityError, match="witness checkpoint"):
        _verify(world)


def test_damaged_witness_line_is_reported(world: World) -> None:
    _populated(world)
    with world.open("officer1") as v:
        v.checkpoint()
    with world.witness.open("a") as fh:
        fh.write('{"note": "half a line')
    with pytest.raises(IntegrityError, match="line 2 is damaged"):
        _verify(world)


def test_staff_cannot_read_the_log_or_sign_and_is_logged(world: World) -> None:
    with world.open("worker1") as v:
        with pytest.raises(AccessDenied):
            list(v.audit_entries())
        with pytest.raises(AccessDenied):
            v.checkpoint()
    with world.open("admin") as v:
        denied = [e["entry"] for e in v.audit_entries() if e["entry"]["outcome"] == "denied"]
    assert [e["action"] for e in denied] == ["audit.read", "audit.checkpoint"]


def test_user_row_inserted_outside_the_log_is_detected(world: World) -> None:
    """An insider with the database key registers their own 'officer' key."""
    from childvault.keys import Identity

    rogue = Identity.generate("rogue")
    with Insider(world, "worker1") as insider:
        insider.insert(
            "users",
            {
                "name": "rogue",
                "roles": "officer",
                "enc_key": rogue.public.encryption_key,
                "sign_key": rogue.public.signing_key,
                "created_at": "2026-11-24",
                "created_by": "admin",
            },
        )
    with pytest.raises(IntegrityError, match="user 'rogue'"):
        _verify(world)


def test_user_keys_swapped_outside_the_log_are_detected(world: World) -> None:
    from childvault.keys import Identity

    rogue = Identity.generate("officer1")
    with Insider(world, "worker1") as insider:
        insider.update("users", {"sign_key": rogue.public.signing_key}, where={"name": "officer1"})
    with pytest.raises(IntegrityError, match="officer1"):
        _verify(world)


def test_custodian_key_swapped_outside_the_log_is_detected(world: World) -> None:
    """Swapping the custodian public key would make staff seal new records to
    the insider; `audit verify` (and so `doctor`) flags it."""
    from childvault.keys import CustodianSecret

    rogue = CustodianSecret.generate(1)
    with Insider(world, "worker1") as insider:
        insider.update("custodians", {"public_key": rogue.public}, where={"generation": 1})
    with pytest.raises(IntegrityError, match="custodian key generation 1"):
        _verify(world)
    # And no staff member seals a new record to it.
    with (
        world.open("worker1") as v,
        pytest.raises(
            IntegrityError,
            match=r"not created by a logged|not the one the signed custodian statements",
        ),
    ):
        add_children(v, 1)


def test_a_rewritten_log_is_never_signed(world: World) -> None:
    """Regression: `audit checkpoint` (and every approval) signed whatever the log
    held; after an insider's edit it must refuse instead of blessing it."""
    _populated(world)
    with world.open("officer1") as v:
        v.checkpoint()
    _edit(world, 9)
    with world.open("officer1") as v, pytest.raises(IntegrityError, match="entry 9"):
        v.checkpoint()
