"""Scan flooding (issue 12, left alone in session 10), fixed in session 11.

Entries of the actions the library scans (``SCANNED_ACTIONS``: the notice,
rights and incident registers, the settings, users and keys) are read by every
later scan of their action (the notice register at every approval and read).
Any user could append as many as they liked through the server (a denied
attempt is anyone's, and so is a subject report's link), making every later
scan slower for everyone. The server now takes them from a per-user quota
(``ScanQuota``) unless the author holds the action's role. Each test fails
without it: the server took every such entry.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from childvault.server._submitted import QUOTA_KEY
from childvault.server._vault import SCAN_BURST, SCAN_PER_HOUR, ScanQuota
from childvault.vault._audit import Event
from childvault.vault._sqlcipher import SQLCipherBackend
from tests.attack import _wire
from tests.attack._wire import log_rows, refused
from tests.server._vaultserver import VaultServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served."""
    yield from _wire.served_fixture(tmp_path_factory)


def _denied(who: str, action: str, n: int) -> list[Event]:
    return [Event(who, action, "denied", detail={"reason": "role"}) for _ in range(n)]


def test_scan_flood_of_register_entries_through_the_server(served: VaultServer) -> None:
    """A staff member appends denied ``notice.publish`` entries (read by the notice
    scan of every approval and read) and subject-report links: the server takes
    :data:`SCAN_BURST` of them, then refuses (429, nothing stored)."""
    vs = served
    staff = vs.identity("worker2")
    rows = log_rows(vs, staff, *_denied("worker2", "notice.publish", SCAN_BURST - 2))
    assert _wire.ok(_wire.rpc(vs, "worker2", "audit", "append", rows)) is None
    detail = {"rights": "cd" * 16, "answer": "report.subject"}
    links = [
        Event("worker2", "rights.link", records=["ab" * 16], detail=detail),
        Event("worker2", "rights.close", records=["ab" * 16], detail={**detail, "outcome": "done"}),
    ]
    assert (
        _wire.ok(_wire.rpc(vs, "worker2", "audit", "append", log_rows(vs, staff, *links))) is None
    )
    size = _wire.read(vs, "audit", "size")
    for more in (
        _denied("worker2", "notice.publish", 1),
        links[:1],
        _denied("worker2", "setting.set", 1),
    ):
        refused(
            _wire.rpc(vs, "worker2", "audit", "append", log_rows(vs, staff, *more)),
            429,
            "rate_limited",
        )
    assert _wire.read(vs, "audit", "size") == size
    # Entries of no scanned action are not counted (a listing any role may make).
    listing = Event("worker2", "record.list", detail={"count": 0})
    assert (
        _wire.ok(_wire.rpc(vs, "worker2", "audit", "append", log_rows(vs, staff, listing))) is None
    )


def test_scan_quota_leaves_a_roles_holder_alone(served: VaultServer) -> None:
    """An officer's entries of the officer's actions are theirs to log (the rights
    register's own entries): not counted. The same officer's attempts at an
    admin's action are."""
    vs = served
    officer = vs.identity("officer2")
    mine = _denied("officer2", "rights.close", SCAN_BURST + 5)
    assert (
        _wire.ok(_wire.rpc(vs, "officer2", "audit", "append", log_rows(vs, officer, *mine))) is None
    )
    admins = _denied("officer2", "notice.publish", SCAN_BURST + 1)
    refused(
        _wire.rpc(vs, "officer2", "audit", "append", log_rows(vs, officer, *admins)),
        429,
        "rate_limited",
    )
    assert (
        _wire.ok(
            _wire.rpc(
                vs, "officer2", "audit", "append", log_rows(vs, officer, *admins[:SCAN_BURST])
            )
        )
        is None
    )


def test_scan_quota_refills_by_the_hour(tmp_path: Path) -> None:
    """The bucket: all of a call or none, then :data:`SCAN_PER_HOUR` an hour (a
    settable clock, no waiting), kept in the database's server-only rows."""
    now = [1_800_000_000.0]
    quota = ScanQuota(clock=lambda: now[0])
    with closing(SQLCipherBackend(tmp_path / "db", secrets.token_bytes(32), create=True)) as db:
        with db.transaction():
            assert quota.take(db, "worker2", SCAN_BURST)
            assert not quota.take(db, "worker2", 1)
            assert quota.take(db, "worker1", 1)  # per user
        # Another server process on the same database (a restart, a replica) sees it.
        again = ScanQuota(clock=lambda: now[0])
        assert not again.take(db, "worker2", 1)
        assert db.meta.get(QUOTA_KEY + "worker2") is not None
        now[0] += 3600 / SCAN_PER_HOUR  # one entry's worth
        assert again.take(db, "worker2", 1)
        assert not quota.take(db, "worker2", 1)
        now[0] += 10 * 3600  # never more than the burst
        assert not quota.take(db, "worker2", SCAN_BURST + 1)
        assert quota.take(db, "worker2", SCAN_BURST)
        # A rolled-back append gives its tokens back.
        now[0] += 10 * 3600
        with pytest.raises(RuntimeError), db.transaction():
            assert quota.take(db, "worker2", SCAN_BURST)
            raise RuntimeError("the append failed")
        assert quota.take(db, "worker2", SCAN_BURST)
        # A clock behind the row's (another replica's) adds nothing.
        now[0] -= 3600
        assert not quota.take(db, "worker2", 1)
        # A row this server did not write is an empty bucket, refilling from now.
        now[0] += 10 * 3600
        for bad in ("nan 0", "999 0", "-1 0", "x", "1 inf"):
            db.meta.set(QUOTA_KEY + "worker2", bad)
            assert not quota.take(db, "worker2", 1)
        now[0] += 3600 / SCAN_PER_HOUR
        assert quota.take(db, "worker2", 1)


def test_a_client_cannot_refill_its_quota(served: VaultServer) -> None:
    """The buckets are server-only rows: an officer (who may write settings)
    refilling their own or resetting anyone's bucket is refused, alone and in a
    batch, and nobody reads them."""
    vs = served
    for user in ("officer2", "worker2"):
        key = QUOTA_KEY + user
        full = f"{SCAN_BURST} 0"
        refused(_wire.rpc(vs, "officer2", "meta", "set", key, full), 403, "server_only")
        refused(_wire.rpc(vs, "officer2", "meta", "delete", key), 403, "server_only")
        refused(
            _wire.batch(vs, "officer2", _wire.call("meta", "set", key, full)), 403, "server_only"
        )
        refused(_wire.rpc(vs, user, "meta", "get", key), 403, "server_only")
