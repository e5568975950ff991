"""An approval whose trust sync predates a checkpoint stored through the other replica.

The bug (tests/scale/test_replicas.py, 2 of 4 runs at load 6): an officer's
client synced the log through replica A; the other officer then approved
through replica B, storing a checkpoint over more entries; the first officer's
approval read the stored checkpoints fresh (its inputs, a later request A
answered with the same generation: B's commit is not counted there) but
predicted its append on the older sync, and its own check of the log before
signing compared that newer checkpoint with the predicted log: "diverged: the
first N entries do not match stored checkpoint K", though the stored log was
sound. Here the interleaving is forced, in that order, with real replicas.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import childvault.vault._remote as remote
from childvault.vault import Vault
from childvault.vault._remote import _base
from tests.fixtures.postgres import PostgresServer
from tests.scale._replicas import PgServed, make_pg_vault
from tests.server._vaultserver import synthetic_csv


@pytest.fixture
def served(tmp_path: Path, postgres: PostgresServer) -> Iterator[PgServed]:
    """A PostgreSQL vault (each test starts its replicas)."""
    pg = make_pg_vault(tmp_path, postgres)
    try:
        yield pg
    finally:
        pg.stop()


def test_approval_after_a_checkpoint_through_the_other_replica_is_not_diverged(
    served: PgServed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg = served
    a, b = pg.start_replica(), pg.start_replica()
    pg.cli("worker1", "import", str(synthetic_csv(tmp_path / "seed.csv", 4)), url=a.url)
    seed = [r["id"] for r in pg.cli_json("worker1", "list", url=a.url)["records"]]
    earlier = pg.request("worker1", seed[2], reason="visit", url=a.url)
    first = pg.request("worker1", seed[0], reason="visit", url=a.url)
    second = pg.request("worker1", seed[1], reason="visit", url=b.url)
    # The sync must still be held when the approval runs, however slow the
    # machine: the interleaving, not the clock, is what is tested. Patched where
    # RemoteBackend._expire reads it (_remote/_base.py).
    monkeypatch.setattr(_base, "CACHE_SECONDS", 3600.0)
    with (
        Vault.connect(a.url, pg.identity("officer1")) as o1,
        Vault.connect(b.url, pg.identity("officer2")) as o2,
    ):
        # o1's own checkpoint first: its next one is checked from there, over the
        # log the client holds (the sync's tail, then its own predicted entries).
        o1.approve(earlier)
        assert {r.id for r in o1.requests()} == {first, second}
        # o1's trust sync through A, as every command begins (listing requests
        # logs the listing: its commit empties what the client read before).
        o1._session.trust()
        backend = o1._session.db
        held = backend._cache.get(remote._TAIL)
        assert isinstance(held, tuple) and held[3]  # the whole tail, to the head then
        synced = held[0] + len(held[1])
        o2.approve(second)  # via B: its entries and a checkpoint over them
        with pg.open_local("officer1") as local:
            sizes = [cp.size for cp in local._session.db.checkpoints.all()]
        # The interleaving of the bug: a stored checkpoint covers more than o1 synced,
        # and o1 still holds that sync (A counted no commit since).
        assert max(sizes) > synced
        assert backend._cache.get(remote._TAIL) is held
        approval = o1.approve(first)
        report = o1.verify_audit()
    assert approval.request_id == first
    with pg.open_local("officer1") as local:
        assert local.verify_audit(full=True).entries == report.entries
        approved = {r.id for r in local.requests(status="approved")}
        entries = [e["entry"] for e in local.audit_entries()]
    assert approved == {earlier, first, second}
    decisions = [e["request"] for e in entries if e["action"] == "request.approve"]
    assert sorted(decisions) == sorted([earlier, first, second])  # each logged once
    assert [r["reason"] for r in a.refusals() + b.refusals()] == []
