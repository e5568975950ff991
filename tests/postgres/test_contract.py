"""The library's main flow and its tamper checks, on both stores (SQLCipher and PostgreSQL).

Records in, find, request, approve (with its checkpoint), read, correct,
delete, audit verify; then an insider's edits of log rows through SQL, which
``audit verify`` must name. On PostgreSQL the library runs as the service role.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from childvault.keys import IntegrityError, NotFound
from childvault.vault._merkle import leaf_hash
from tests._insider import Insider
from tests.conftest import World, add_children, child_values
from tests.postgres.conftest import PgWorld


@contextmanager
def _sql(world: World) -> Iterator[Any]:
    """An insider's direct connection (PostgreSQL: the migration role, which may edit).

    Yields ``run(sql_with_?, params) -> rows``: the same statements on both stores.
    """
    if isinstance(world, PgWorld):
        with psycopg.connect(world.owner_dsn(), autocommit=True) as conn:

            def run(query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
                cur = conn.execute(query.replace("?", "%s"), params)  # type: ignore[call-overload]
                return cur.fetchall() if cur.description else []

            yield run
    else:
        with Insider(world, "worker1") as insider:
            yield lambda query, params=(): insider.execute(query, params)


def test_the_whole_flow(any_world: World) -> None:
    world = any_world
    with world.open("worker1") as v:
        ids = add_children(v, 5)
        assert v.find("id_number", child_values(2)["id_number"]) == [ids[2]]
        req = v.request_access(ids[:3], ("name", "guardian_phone"), "case_management", "家访")
    with world.open("officer1") as v:
        approval = v.approve(req, uses=2)
    with world.open("worker1") as v:
        got = v.read_with_grant(approval.token)
    assert got[ids[1]]["name"] == child_values(1)["name"]
    assert got[ids[2]]["guardian_phone"] == child_values(2)["guardian_phone"]
    with world.open("officer1") as v:
        assert v.correct(ids[1], "name", "更正后的名字") == 2
        v.delete(ids[4], "duplicate entry")
        with pytest.raises(NotFound):
            v.record_info(ids[4])
        v.checkpoint()
    with world.open("worker1") as v:
        assert len(list(v.list_records())) == 4
        req = v.request_access([ids[1]], ("name",), "case_management", "核对更正")
    with world.open("officer2") as v:
        approval = v.approve(req)
    with world.open("worker1") as v:
        assert v.read_with_grant(approval.token)[ids[1]]["name"] == "更正后的名字"
    with world.open("admin") as v:
        report = v.verify_audit()
    assert report.checkpoints >= 2 and report.witnessed >= 2
    actions = [json.loads(e)["action"] for (e,) in _rows(world, "SELECT entry FROM audit")]
    assert {"record.create", "request.create", "grant.read", "record.correct"} <= set(actions)


def test_resumed_approvals_read_the_newer_checkpoints_only(any_world: World) -> None:
    """Issue 13 (round 2 session 11): ``checkpoints.since`` on both stores, and
    approvals resumed from the officer's own checkpoint over it."""
    world = any_world
    with world.open("worker1") as v:
        ids = add_children(v, 1)
    for _ in range(3):
        with world.open("worker1") as v:
            req = v.request_access(ids, ("name",), "case_management", "家访")
        with world.open("officer1") as v:
            v.approve(req)
    with world.open("officer1") as v:
        every = v._session.db.checkpoints.all()
        assert len(every) == 3
        middle = every[1].size
        newer = v._session.db.checkpoints.since(middle)
        assert newer == [c for c in every if c.size >= middle] == every[1:]
        assert v._session.db.checkpoints.since(every[-1].size + 1) == []
    with world.open("admin") as v:
        assert v.verify_audit(full=True).checkpoints == 3


def test_checkpoints_after_an_id_and_through_it(any_world: World) -> None:
    """Round 2 session 11: ``checkpoints.after`` and ``through`` on both stores
    (a serving replica's witness catch-up reads only the rows above its mark)."""
    world = any_world
    with world.open("officer1") as v:
        assert v._session.db.checkpoints.after(0) == []
        assert v._session.db.checkpoints.through(0) == (0, None)
        for _ in range(3):
            v.checkpoint()
        repo = v._session.db.checkpoints
        every = sorted(repo.all(), key=lambda c: c.id)
        assert len(every) == 3
        first, middle, last = every
        assert repo.after(first.id) == [middle, last]
        assert repo.after(last.id) == []
        assert repo.after(first.id - 1) == every
        assert repo.through(middle.id) == (2, middle.note)
        assert repo.through(last.id) == (3, last.note)
        assert repo.through(last.id + 1) == (3, None)


def _rows(world: World, query: str) -> list[tuple[Any, ...]]:
    with _sql(world) as run:
        return [tuple(bytes(c) if isinstance(c, memoryview) else c for c in r) for r in run(query)]


def _populate(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 3)
    with world.open("admin") as v:
        v.verify_audit()


def _first_by_worker(run: Any) -> tuple[int, bytes]:
    """(seq, entry) of the first log entry worker1 wrote (a record they created)."""
    for seq, entry in run("SELECT seq, entry FROM audit ORDER BY seq"):
        if b'"actor":"worker1"' in bytes(entry):
            return int(seq), bytes(entry)
    raise AssertionError("no entry by worker1")


def test_an_edited_log_entry_is_named(any_world: World) -> None:
    _populate(any_world)
    with _sql(any_world) as run:
        seq, entry = _first_by_worker(run)
        changed = entry.replace(b'"worker1"', b'"worker2"')
        assert changed != entry
        run("UPDATE audit SET entry = ? WHERE seq = ?", (changed, seq))
    with (
        any_world.open("admin") as v,
        pytest.raises(IntegrityError, match=f"entry {seq} was modified"),
    ):
        v.verify_audit()


def test_an_edit_with_its_hash_recomputed_breaks_the_next_link(any_world: World) -> None:
    _populate(any_world)
    with _sql(any_world) as run:
        seq, entry = _first_by_worker(run)
        changed = entry.replace(b'"worker1"', b'"worker2"')
        run(
            "UPDATE audit SET entry = ?, hash = ? WHERE seq = ?", (changed, leaf_hash(changed), seq)
        )
    with (
        any_world.open("admin") as v,
        pytest.raises(IntegrityError, match=f"entry {seq + 1} does not link"),
    ):
        v.verify_audit()


def test_attack_strip_a_runs_closing_signature_is_named(any_world: World) -> None:
    """worker1's three children are one run, signed once at its last entry
    (docs/trust.md, "Log entries"): with that signature gone, the run's first
    entry is named on both stores."""
    _populate(any_world)
    with _sql(any_world) as run:
        first, _ = _first_by_worker(run)
        signed = [int(seq) for seq, sig in run("SELECT seq, sig FROM audit ORDER BY seq") if sig]
        assert first not in signed and first + 1 not in signed and first + 2 in signed
        run("UPDATE audit SET sig = NULL WHERE seq = ?", (first + 2,))
    match = f"log entry {first} is in the name of 'worker1' but not signed by them"
    with any_world.open("admin") as v, pytest.raises(IntegrityError, match=match):
        v.verify_audit(full=True)


def test_a_deleted_log_entry_is_named(any_world: World) -> None:
    _populate(any_world)
    with _sql(any_world) as run:
        run("DELETE FROM audit WHERE seq = ?", (7,))
    with any_world.open("admin") as v, pytest.raises(IntegrityError, match="entry 7 is missing"):
        v.verify_audit()


def test_a_non_json_entry_does_not_break_the_store(any_world: World) -> None:
    # The action index is derived from the entry; garbage there must not make
    # the row unwritable (SQLite: json_valid; PostgreSQL: the guarded function).
    _populate(any_world)
    with _sql(any_world) as run:
        run("UPDATE audit SET entry = ? WHERE seq = ?", (b"\xff not json", 8))
    with any_world.open("admin") as v, pytest.raises(IntegrityError, match="entry 8"):
        v.verify_audit()


def test_meta_replace_is_a_compare_and_set(any_world: World) -> None:
    """The server's release count is written with ``meta.replace``: of two writers
    that read the same value, only the first changes the row (one conditional
    UPDATE, on both stores; on PostgreSQL the transactions are also serialised by
    the write lock)."""
    with any_world.open("admin") as v:
        meta = v._session.db.meta
        with v._session.db.transaction():
            meta.set("server/release/test", "count 0")
        assert meta.replace("server/release/test", "count 0", "count 1") is True
        # A second writer that also read "count 0" loses, and changes nothing.
        assert meta.replace("server/release/test", "count 0", "count 1 again") is False
        assert meta.get("server/release/test") == "count 1"
        assert meta.replace("server/release/none", "x", "y") is False
        assert meta.get("server/release/none") is None
