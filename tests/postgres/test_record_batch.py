"""The batched record reads ``records.get_many``, ``keyblob_many`` and ``fields_many``.

Approve, read and record verification read a set of records' rows, key blobs
and sealed fields together (``_record_trust.fetch``) so that, through the
server, that is one round trip rather than one per record (issue 13). Each
must answer exactly what the single calls answer, on both stores; through the
server see tests/server/test_record_batch_server.py.
"""

from __future__ import annotations

import secrets

from childvault.vault._backend import Backend
from tests.conftest import World, add_children


def _singles_agree(db: Backend, asked: list[str], names: list[str] | None) -> None:
    rows = db.records.get_many(asked)
    blobs = db.records.keyblob_many(asked)
    fields = db.records.fields_many(asked, names)
    for rid in asked:
        assert rows.get(rid) == db.records.get(rid)
        assert blobs.get(rid) == db.records.keyblob(rid)
        wanted = db.records.field_names(rid) if names is None else names
        assert fields[rid] == db.records.fields(rid, wanted)
    # Missing records are absent from rows and blobs, present (empty) in fields.
    assert set(rows) == set(blobs) == {r for r in asked if db.records.get(r) is not None}
    assert set(fields) == set(asked)


def test_the_batched_record_reads_answer_what_the_single_reads_answer(any_world: World) -> None:
    with any_world.open("worker1") as v:
        ids = add_children(v, 4)
        db: Backend = v._session.db
        # Repeats, unknown ids, and more ids than one ``IN (...)`` holds (split).
        unknown = [secrets.token_hex(16) for _ in range(1100)]
        asked = [ids[1], *unknown[:3], ids[0], ids[1], *unknown[3:], ids[3], ids[2]]
        _singles_agree(db, asked, None)
        _singles_agree(db, asked, ["name", "guardian_phone", "no_such_field"])
        assert db.records.fields_many(ids, []) == {r: {} for r in ids}
        assert db.records.get_many([]) == {}
        assert db.records.keyblob_many([]) == {}
        assert db.records.fields_many([]) == {}
        # Every stored field, as field_names lists them.
        everything = db.records.fields_many([ids[0]])[ids[0]]
        assert sorted(everything) == db.records.field_names(ids[0])
        assert "name" in everything
