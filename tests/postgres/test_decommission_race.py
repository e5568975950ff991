"""A record added while decommissioning runs is refused or listed, never shredded
without being on the guardian contact list (P-23, compliance gap 8).

Two connections interleaved deterministically, on both stores: a worker's add
runs in a thread and is held at a chosen point (events, no timing); the admin
decommissions meanwhile; then the add goes on. The hooks call the real method
first (the real check, the real INSERT) and only wait after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from childvault.keys import AccessDenied
from childvault.vault._sql._records import Records
from childvault.vault._svc_records_write import RecordWrites
from tests.conftest import World, add_children
from tests.postgres.conftest import PgWorld

_WAIT_S = 60.0  # a guard against a hang only: every wait is for an event


class _Held:
    """A worker thread adding one record, held at a hook until released."""

    def __init__(self, world: World) -> None:
        self.reached, self.go = threading.Event(), threading.Event()
        self.added: list[str] = []
        self.error: BaseException | None = None
        self._world = world
        self._thread = threading.Thread(target=self._run, daemon=True)

    def hook(self, original: Callable[..., Any], *, before: bool = False) -> Callable[..., Any]:
        """``original``, then wait to be released (``before``: wait first); in the
        worker's thread, at the first call only."""

        def hold() -> None:
            if threading.current_thread() is self._thread and not self.reached.is_set():
                self.reached.set()
                assert self.go.wait(_WAIT_S)

        def held(*args: Any, **kwargs: Any) -> Any:
            if before:
                hold()
            result = original(*args, **kwargs)
            if not before:
                hold()
            return result

        return held

    def _run(self) -> None:
        try:
            with self._world.open("worker1") as v:
                self.added = add_children(v, 1)
        except BaseException as exc:
            self.error = exc

    def start(self) -> None:
        self._thread.start()
        assert self.reached.wait(_WAIT_S), self.error

    def finish(self) -> None:
        self.go.set()
        self._thread.join(_WAIT_S)
        assert not self._thread.is_alive()


@pytest.fixture
def cosigned(any_world: World, tmp_path: Path) -> Iterator[tuple[World, list[str]]]:
    """The vault with two records and an officer's co-signature over them."""
    with any_world.open("worker1") as v:
        ids = add_children(v, 2)
    with any_world.open("officer1") as v:
        assert v.cosign_decommission(tmp_path / "contacts.sealed").records == 2
    yield any_world, ids


def test_an_add_checked_before_the_stop_is_refused_in_its_own_transaction(
    cosigned: tuple[World, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The add passed the service's check (collection still on) and sealed its
    record, then waits at the write, before its transaction; decommissioning
    completes. The add's INSERT reads the row in
    its own transaction and is refused: nothing stays behind, nothing unlisted."""
    world, listed = cosigned
    add = _Held(world)
    monkeypatch.setattr(RecordWrites, "_write", add.hook(RecordWrites._write, before=True))
    add.start()
    with world.open("admin") as v:
        assert v.decommission(confirm=True).records_shredded == len(listed)
    add.finish()
    assert isinstance(add.error, AccessDenied) and "decommissioned" in str(add.error)
    assert add.added == []
    with world.open("officer1") as v:
        assert list(v.list_records()) == []
        ok = [
            e["entry"]
            for e in v.audit_entries()
            if e["entry"]["action"] == "record.create" and e["entry"]["outcome"] == "ok"
        ]
        assert {r for e in ok for r in e["records"]} == set(listed)


def _waiting_for_the_write_lock(world: PgWorld) -> bool:
    """Whether some session waits for a lock (the advisory write lock) in its database."""
    with psycopg.connect(world.owner_dsn(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON l.database = d.oid "
            "WHERE NOT l.granted AND l.locktype = 'advisory' AND d.datname = %s",
            (world.database,),
        ).fetchone()
    return bool(row and row[0])


def test_decommissioning_waits_for_an_add_in_flight_and_refuses_as_stale(
    cosigned: tuple[World, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: the add has inserted and holds its transaction open; the admin's
    decommissioning starts and waits for the write lock (seen in ``pg_locks``); the
    add commits. Decommissioning then sees the record, which its contact list does
    not hold, and refuses as stale; nothing is shredded."""
    world, listed = cosigned
    if not isinstance(world, PgWorld):
        pytest.skip("a waiting lock is observed in pg_locks (SQLCipher: BEGIN IMMEDIATE)")
    add = _Held(world)
    monkeypatch.setattr(Records, "insert", add.hook(Records.insert))
    add.start()
    outcome: list[BaseException | int] = []

    def decommission() -> None:
        try:
            with world.open("admin") as v:
                outcome.append(v.decommission(confirm=True).records_shredded)
        except BaseException as exc:
            outcome.append(exc)

    admin = threading.Thread(target=decommission, daemon=True)
    admin.start()
    deadline = time.monotonic() + _WAIT_S
    while not _waiting_for_the_write_lock(world):
        assert time.monotonic() < deadline and admin.is_alive(), outcome
        time.sleep(0.05)
    add.finish()
    admin.join(_WAIT_S)
    assert add.error is None and len(add.added) == 1
    assert len(outcome) == 1 and isinstance(outcome[0], AccessDenied), outcome
    assert "co-signs again" in str(outcome[0])
    with world.open("officer1") as v:
        assert {r.id for r in v.list_records()} == {*listed, *add.added}
