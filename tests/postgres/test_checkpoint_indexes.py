"""The checkpoints table's look-ups through indexes, on both stores (round 2 session 12).

Every approval asks ``checkpoints.latest_by`` (the officer's last checkpoint)
and ``checkpoints.since`` (the ones after it); a connection's witness
catch-up asks ``after`` and ``through``; ``audit verify`` and the reports read
``all``. One checkpoint is stored per approval, so without an index the first
two scanned a table that grows with every approval ever made. Migration 6
(both stores) adds ``checkpoints_signer_size`` and ``checkpoints_size``.

- each query the repository runs (recorded as it runs, not copied here) is
  planned through an index or the primary key, without a sort, on SQLite and
  on PostgreSQL with a table large enough for its planner to choose;
- a vault left by the previous release (schema 5: no such indexes) is
  refused on PostgreSQL until ``childvault upgrade`` migrates it (SQLCipher
  migrates on open), then answers as before, approves and verifies.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from childvault.keys import StorageError
from childvault.vault._postgres import MIGRATIONS, PostgresBackend
from childvault.vault._postgres._conn import _placeholders
from childvault.vault._sqlcipher import MIGRATIONS as SQLCIPHER_MIGRATIONS
from childvault.vault._sqlcipher import SQLCipherBackend
from tests._insider import Insider
from tests.conftest import World, add_children
from tests.fixtures.postgres import PostgresServer
from tests.postgres.conftest import OWNER, PgWorld, new_database
from tests.test_cli import run

INDEXES = ("checkpoints_signer_size", "checkpoints_size")
#: Enough rows for PostgreSQL's planner to prefer an index to a scan.
ROWS = 20_000
SIGNERS = 20
_INSERT = (
    "INSERT INTO checkpoints (size, root, note, signer, created_at, resume_state) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)

# -- the plans ----------------------------------------------------------------------------


@contextmanager
def _store(kind: str, tmp_path: Path, postgres: PostgresServer | None) -> Iterator[Any]:
    """A new, empty store of ``kind`` at today's schema (PostgreSQL: as the migration role)."""
    if kind == "sqlcipher":
        store: Any = SQLCipherBackend(tmp_path / "v.db", secrets.token_bytes(32), create=True)
    else:
        assert postgres is not None
        store = PostgresBackend(postgres.dsn(OWNER, new_database(postgres)), create=True)
    try:
        yield store
    finally:
        store.close()


def _recorded(
    store: Any, calls: Sequence[Callable[[], object]]
) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements (and parameters) the repository sends while ``calls`` run.

    The store's own ``q`` still runs each one; it is only wrapped to note it.
    """
    seen: list[tuple[str, tuple[Any, ...]]] = []
    real = store._conn.q

    def noting(sql: str, params: Sequence[Any] = ()) -> Any:
        seen.append((sql, tuple(params)))
        return real(sql, params)

    store._conn.q = noting
    try:
        for call in calls:
            call()
    finally:
        del store._conn.q
    return seen


def _plan(store: Any, kind: str, sql: str, params: tuple[Any, ...]) -> str:
    """The plan of one statement as text: SQLite's ``EXPLAIN QUERY PLAN`` rows, or
    PostgreSQL's ``EXPLAIN`` lines (node types and index names appear in both)."""
    if kind == "sqlcipher":
        rows = store._conn.q("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        return " | ".join(str(r[-1]) for r in rows)
    with psycopg.connect(store._conn.pool.conninfo, autocommit=True) as conn:
        found = conn.execute("EXPLAIN " + _placeholders(sql), params).fetchall()  # type: ignore[call-overload]
    return " | ".join(str(r[0]) for r in found)


@pytest.mark.parametrize("kind", ["sqlcipher", "postgresql"])
def test_every_checkpoint_lookup_uses_an_index(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    postgres = request.getfixturevalue("postgres") if kind == "postgresql" else None
    with _store(kind, tmp_path, postgres) as store:
        rows = [
            (5 * (i + 1), secrets.token_bytes(32), f"note {i}", f"officer{i % SIGNERS}", "t", b"s")
            for i in range(ROWS)
        ]
        with store.transaction():
            store._conn.many(_INSERT, rows)
        if kind == "postgresql":
            with psycopg.connect(store._conn.pool.conninfo, autocommit=True) as conn:
                conn.execute("ANALYZE checkpoints")
        cps = store.checkpoints
        top = 5 * ROWS
        # The answers first: the officer's largest tree, the rows of the last sizes.
        assert cps.latest_by("officer7") == (f"note {ROWS - SIGNERS + 7}", b"s")
        assert [r.size for r in cps.since(top - 10)] == [top - 10, top - 5, top]
        assert [r.id for r in cps.after(ROWS - 2)] == [ROWS - 1, ROWS]
        assert cps.through(3) == (3, "note 2")
        lookups = {
            "latest_by": lambda: cps.latest_by("officer7"),
            "since": lambda: cps.since(top - 10),
            "after": lambda: cps.after(ROWS - 2),
            "through": lambda: cps.through(3),
            "all": lambda: cps.all(),
        }
        for name, call in lookups.items():
            statements = _recorded(store, [call])
            assert statements, name
            for sql, params in statements:
                plan = _plan(store, kind, sql, params)
                if kind == "sqlcipher":
                    # SEARCH/SCAN ... USING (INTEGER PRIMARY KEY | INDEX ...), never a
                    # bare table scan, never a sort in a temporary B-tree.
                    assert "USING" in plan, (name, plan)
                    assert "TEMP B-TREE" not in plan, (name, plan)
                elif name != "all":
                    # `all` reads every row: a scan then a sort is PostgreSQL's fair choice.
                    assert "Seq Scan" not in plan, (name, plan)
                    assert "Sort" not in plan, (name, plan)
                want = {"latest_by": INDEXES[0], "since": INDEXES[1]}.get(name)
                if want is not None:
                    assert want in plan, (name, plan)


# -- the upgrade --------------------------------------------------------------------------


def _approve_some(world: World, n: int) -> None:
    """``n`` requests by worker1, approved by officer1 and officer2 in turn."""
    with world.open("worker1") as v:
        ids = add_children(v, 1)
        requests = [v.request_access(ids, ["name"], "case_management", f"r{i}") for i in range(n)]
    for i, req in enumerate(requests):
        with world.open("officer1" if i % 2 == 0 else "officer2") as v:
            v.approve(req)


def _as_previous_release(world: World) -> None:
    """The schema the previous release left: migration 6 undone (only its indexes)."""
    if isinstance(world, PgWorld):
        with psycopg.connect(world.owner_dsn(), autocommit=True) as conn:
            for index in INDEXES:
                conn.execute(f"DROP INDEX {index}")  # type: ignore[call-overload]
            conn.execute("DELETE FROM cv_schema WHERE version = %s", (len(MIGRATIONS),))
        return
    with Insider(world, "admin") as insider:
        for index in INDEXES:
            insider.execute(f"DROP INDEX {index}")
        insider.execute(f"PRAGMA user_version = {len(SQLCIPHER_MIGRATIONS) - 1}")


def _indexes(world: World) -> set[str]:
    """The checkpoints table's index names, as the store lists them."""
    if isinstance(world, PgWorld):
        with psycopg.connect(world.owner_dsn(), autocommit=True) as conn:
            found = conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'checkpoints'"
            ).fetchall()
        return {str(r[0]) for r in found}
    with Insider(world, "admin") as insider:
        rows = insider.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'checkpoints'"
        )
    return {str(r[0]) for r in rows}


def test_a_vault_of_the_previous_release_upgrades_and_keeps_working(
    any_world: World,
) -> None:
    _approve_some(any_world, 4)
    with any_world.open("admin") as v:
        db = v._session.db
        before = {who: db.checkpoints.latest_by(who) for who in ("officer1", "officer2")}
        every = db.checkpoints.all()
    assert all(before.values()) and len(every) >= 4
    _as_previous_release(any_world)
    assert not set(INDEXES) & _indexes(any_world)
    env: dict[str, str] = {}
    if isinstance(any_world, PgWorld):
        # The service role cannot run the migration: refused until upgraded.
        with pytest.raises(StorageError, match="childvault upgrade"):
            any_world.open("admin")
        env["CHILDVAULT_MIGRATION_DSN"] = any_world.owner_dsn()
    result = run(any_world, "admin", "--json", "upgrade", env=env)
    assert result.exit_code == 0, result.output
    assert set(INDEXES) <= _indexes(any_world)
    with any_world.open("admin") as v:
        db = v._session.db
        assert {who: db.checkpoints.latest_by(who) for who in before} == before
        assert db.checkpoints.all() == every
    # Approvals go on (each reads latest_by and since) and the log verifies.
    _approve_some(any_world, 2)
    with any_world.open("admin") as v:
        db = v._session.db
        after = db.checkpoints.all()
        assert after[: len(every)] == every and len(after) == len(every) + 2
        newest = max(after, key=lambda r: (r.size, r.id))
        latest = db.checkpoints.latest_by(newest.signer)
        assert latest is not None and latest[0] == newest.note
    with any_world.open("officer1") as v:
        # It raises on any fault; every stored checkpoint was checked.
        assert v.verify_audit(full=True).checkpoints == len(after)
