"""Batch record statements (issue 18, session 6): the attacks of docs/decisions.md,
"One record statement per batch", each refused before anything is released.

A batch of new records is signed once (a ``record.batch`` statement over the
Merkle root of the records' ``record.version`` payloads); beside each record's
``record.create`` entry the vault keeps the record's member document (the
batch envelope, its index, its inclusion proof), whose digest the entry names.
The insider is a staff member (worker2) who opens the database with their own
key and rewrites rows; every test checks the approval refuses (exit 4) and
logs a ``trust.refuse``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from childvault.keys import IntegrityError
from childvault.vault import _record_trust, _statements
from childvault.vault._audit import Event
from childvault.vault._session import Session
from tests._insider import Insider
from tests.conftest import World, add_children
from tests.insider._helpers import put_back, record_rows, refusals
from tests.insider._helpers import request as _request


def _refusals(world: World) -> list[dict[str, object]]:
    return refusals(world, "request.approve")


def _refused(world: World, ids: list[str], match: str) -> None:
    """An approval of ``ids`` is refused naming ``match``, and logged."""
    before = len(_refusals(world))
    req = _request(world, ids)
    with world.open("officer1") as v, pytest.raises(IntegrityError, match=match):
        v.approve(req)
    with world.open("admin") as v:
        assert v._session.db.access.request(req).status == "pending"  # type: ignore[union-attr]
    assert len(_refusals(world)) == before + 1


def _approved(world: World, ids: list[str]) -> dict[str, dict[str, str]]:
    req = _request(world, ids)
    with world.open("officer1") as v:
        token = v.approve(req).token
    with world.open("worker1") as v:
        return v.read_with_grant(token)


@contextmanager
def _checked(world: World, user: str = "officer1") -> Iterator[Session]:
    with world.open(user) as v:
        yield v._session


def _seq(world: World, rid: str) -> int:
    """The seq of the entry carrying ``rid``'s latest logged record statement."""
    with _checked(world) as s:
        found = _record_trust.record_heads(s)
        assert found is not None
        return found[1].heads[rid].seq


def _stored(world: World, seq: int) -> bytes:
    with Insider(world, "worker2") as insider:
        return bytes(insider.rows("statements", ["envelope"], where={"seq": seq})[0][0])


def _put(world: World, seq: int, data: bytes) -> None:
    with Insider(world, "worker2") as insider:
        insider.update("statements", {"envelope": data}, {"seq": seq})


def _member(world: World, rid: str) -> _statements.BatchMember:
    found = _statements.stored_statement(_stored(world, _seq(world, rid)))
    assert isinstance(found, _statements.BatchMember)
    return found


def _verify_member(world: World, rid: str, member: _statements.BatchMember) -> None:
    """Run the member check alone on ``rid``'s stored rows (past the log's digest
    check, which every edited document already fails): the second layer."""
    with _checked(world) as s:
        found = _record_trust.record_heads(s)
        assert found is not None
        state, heads = found
        row = s.db.records.get(rid)
        blob = s.db.records.keyblob(rid)
        assert row is not None and blob is not None
        head = heads.heads[rid]
        _statements.verify_member(
            member,
            state,
            written_at=head.seq,
            record=rid,
            version=row.version,
            type_name=row.type,
            consent=row.consent,
            metadata=row.metadata,
            fields=_record_trust.stored_fields(s.db, rid),
            keyblob=blob[1],
            first=head.seq == head.first,
        )


def test_a_batch_is_signed_once_and_each_record_reads_alone(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 5)
    members = [_member(world, rid) for rid in ids]
    # One envelope, one signature, for the whole batch; each record its own proof.
    assert len({m.batch.digest() for m in members}) == 1
    assert len(members[0].batch.signatures) == 1
    assert [m.index for m in members] == list(range(5))
    statement = members[0].batch.statement()
    assert (statement["kind"], statement["size"]) == ("record.batch", 5)
    # One record of the batch is approved and read on its own.
    out = _approved(world, [ids[3]])
    assert set(out) == {ids[3]}
    assert _refusals(world) == []


def test_record_add_keeps_its_own_statement(world: World) -> None:
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
    found = _statements.stored_statement(_stored(world, _seq(world, rid)))
    assert isinstance(found, _statements.Envelope)
    assert found.statement()["kind"] == "record.version"


def test_swapping_a_record_between_two_batches_is_refused(world: World) -> None:
    with world.open("worker1") as v:
        a = add_children(v, 2)
        b = add_children(v, 2)
    # The member documents of a[0] and b[0] trade places.
    sa, sb = _seq(world, a[0]), _seq(world, b[0])
    da, db = _stored(world, sa), _stored(world, sb)
    _put(world, sa, db)
    _put(world, sb, da)
    _refused(world, [a[0]], a[0])
    _refused(world, [b[0]], b[0])
    # The other batch's member at a[0]'s proof position does not reach its root.
    other = _statements.stored_statement(db)
    assert isinstance(other, _statements.BatchMember)
    with pytest.raises(IntegrityError, match="not in its batch statement"):
        _verify_member(world, a[0], other)


def test_a_record_moved_under_another_id_of_its_batch_is_refused(world: World) -> None:
    with world.open("worker1") as v:
        a, b = add_children(v, 2)
    # b's rows (fields and key blob) copied over a's: a's leaf holds a's id.
    with Insider(world, "worker2") as insider:
        for name, value in insider.rows("fields", ["name", "value"], where={"record_id": b}):
            insider.update("fields", {"value": value}, {"record_id": a, "name": name})
        (blob,) = insider.rows("keyblobs", ["blob"], where={"record_id": b})[0]
        insider.update("keyblobs", {"blob": blob}, {"record_id": a})
    _refused(world, [a], a)


def test_dropping_a_record_from_its_batch_is_refused(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 3)
    # Its member document deleted: the record has no statement left.
    with Insider(world, "worker2") as insider:
        insider.delete("statements", {"seq": _seq(world, ids[0])})
    _refused(world, [ids[0]], ids[0])
    # A smaller batch over the other two, signed by the insider, put in their place.
    with _checked(world, "worker2") as s:
        items = []
        for rid in ids[1:]:
            row = s.db.records.get(rid)
            blob = s.db.records.keyblob(rid)
            assert row is not None and blob is not None
            items.append((row, _record_trust.stored_fields(s.db, rid), blob[1]))
        smaller = _record_trust.sign_batch_versions(s, items, s.now())
    for rid, member in zip(ids[1:], smaller, strict=True):
        _put(world, _seq(world, rid), member.to_bytes())
    _refused(world, [ids[1]], ids[1])
    # worker2 is staff and may sign batches of their own; what refuses theirs is
    # that each record's entry (signed by worker1, chained) names worker1's document.
    assert smaller[0].batch.signatures[0][0] == "worker2"


def test_editing_one_records_proof_index_or_digest_is_refused(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 4)
    member = _member(world, ids[1])
    # Past the digest check: a changed proof or index no longer reaches the root.
    bad_hash = bytes(32)
    edited_proof = dataclasses.replace(member, proof=(bad_hash, *member.proof[1:]))
    with pytest.raises(IntegrityError, match="not in its batch statement"):
        _verify_member(world, ids[1], edited_proof)
    with pytest.raises(IntegrityError, match="not in its batch statement"):
        _verify_member(world, ids[1], dataclasses.replace(member, index=2))
    _verify_member(world, ids[1], member)  # the genuine one passes
    # In the vault: the edited document, then a record whose rows (its leaf's
    # field digest) changed, are both refused.
    _put(world, _seq(world, ids[1]), edited_proof.to_bytes())
    _refused(world, [ids[1]], ids[1])
    with Insider(world, "worker2") as insider:
        (value,) = insider.rows("fields", ["value"], where={"record_id": ids[2], "name": "name"})[0]
        changed = bytes(value[:-1]) + bytes([value[-1] ^ 1])
        insider.update("fields", {"value": changed}, {"record_id": ids[2], "name": "name"})
    _refused(world, [ids[2]], ids[2])


def test_replacing_a_batch_statement_with_an_older_one_is_refused(world: World) -> None:
    with world.open("worker1") as v:
        old = add_children(v, 2)
        new = add_children(v, 2)
    older = _member(world, old[0]).batch
    current = _member(world, new[0])
    swapped = dataclasses.replace(current, batch=older)
    with pytest.raises(IntegrityError, match="not in its batch statement"):
        _verify_member(world, new[0], swapped)
    _put(world, _seq(world, new[0]), swapped.to_bytes())
    _refused(world, [new[0]], new[0])


def test_a_batch_replayed_into_another_vault_is_refused(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 2)
    member = _member(world, ids[0])
    with _checked(world) as s:
        found = _record_trust.record_heads(s)
        assert found is not None
        state = found[0]
        other = _statements.Anchor("f" * 32, state.anchor.admin, state.anchor.sign_key)
        elsewhere = dataclasses.replace(state, anchor=other)
        row = s.db.records.get(ids[0])
        blob = s.db.records.keyblob(ids[0])
        assert row is not None and blob is not None
        with pytest.raises(IntegrityError, match="not a batch statement of this vault"):
            _statements.verify_member(
                member,
                elsewhere,
                written_at=found[1].heads[ids[0]].seq,
                record=ids[0],
                version=1,
                type_name=row.type,
                consent=row.consent,
                metadata=row.metadata,
                fields=_record_trust.stored_fields(s.db, ids[0]),
                keyblob=blob[1],
                first=True,
            )
    # The batch statement names this vault: the leaf and the root commit to it.
    assert json.loads(member.batch.payload)["vault"] == state.anchor.vault_id


def test_a_correction_after_the_batch_then_its_rollback_is_refused(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 2)
    rid = ids[0]
    batch_seq = _seq(world, rid)
    old = record_rows(world, rid)
    with world.open("officer1") as v:
        v.correct(rid, "name", "更正后")
    correction_seq = _seq(world, rid)
    assert correction_seq > batch_seq  # the correction's own statement supersedes the batch
    assert isinstance(
        _statements.stored_statement(_stored(world, correction_seq)), _statements.Envelope
    )
    assert _approved(world, [rid])[rid]["name"] == "更正后"
    # Every row put back as the batch wrote it.
    put_back(world, rid, old)
    _refused(world, [rid], rid)
    # ... and the batch member copied over the correction's statement as well.
    _put(world, correction_seq, _stored(world, batch_seq))
    _refused(world, [rid], rid)


def test_a_batch_member_logged_again_as_a_fresh_first_version_is_refused(world: World) -> None:
    """worker2 logs, in their own name, a new record.create entry for worker1's
    record naming its genuine batch member: not the record's first statement."""
    with world.open("worker1") as v:
        ids = add_children(v, 2)
    rid = ids[0]
    member = _member(world, rid)
    with world.open("worker2") as v:
        s = v._session
        event = Event("worker2", "record.create", records=[rid], detail={"type": "child"})
        with s.db.transaction():
            _record_trust.append_signed(
                s.db, [(_record_trust.with_record_statement(event, member), member)], s.now()
            )
    _refused(world, [rid], "only carries first versions")
