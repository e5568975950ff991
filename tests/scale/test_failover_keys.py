"""Key-slot writes through ``--server A,B`` (client failover), issue 13.

Merging the failover backend with the admin operations over the wire once lost
the key slots that `keys share` and `keys rotate` write (fixed in fbb54fc): the
command said it had shared the key, the slot never changed. These tests run
both commands through two real replicas on one PostgreSQL database, the first
of them dead, and check the slots on the server and that the new holder can
approve.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from childvault.keys import KeySlots
from tests.fixtures.postgres import PostgresServer
from tests.scale._replicas import PgServed, make_pg_vault
from tests.server._vaultserver import passphrase, synthetic_csv


@pytest.fixture
def served(tmp_path: Path, postgres: PostgresServer) -> Iterator[PgServed]:
    """Two officers (both holders), a worker and a third officer who holds nothing yet."""
    pg = make_pg_vault(tmp_path, postgres, people=("officer1", "officer2", "worker1"))
    try:
        with pg.open_local("admin") as admin:
            admin.add_user("officer3", ["officer"], passphrase("officer3"))
        ws = pg.workstation("officer3") / "identities"
        ws.mkdir(parents=True, mode=0o700)
        (ws / "officer3.id").write_bytes((pg.home / "identities" / "officer3.id").read_bytes())
        yield pg
    finally:
        pg.stop()


def _generations(pg: PgServed, user: str) -> list[int]:
    """The custodian generations ``user``'s slot on the server holds."""
    vault_id = str(json.loads((pg.home / "config.json").read_text(encoding="utf-8"))["vault_id"])
    found = KeySlots(pg.home / "keyslots.json").open(pg.identity(user), vault_id)
    return sorted(int(k.split("/")[1]) for k in found if k.startswith("custodian/"))


def _approve_and_read(pg: PgServed, officer: str, tmp_path: Path) -> None:
    """A worker imports a row and asks for its name; ``officer`` approves; the worker reads."""
    pg.cli("worker1", "import", str(synthetic_csv(tmp_path / f"{officer}.csv", 1)))
    record = pg.cli_json("worker1", "list")["records"][0]["id"]
    req = pg.request("worker1", record, reason="home visit")
    token = tmp_path / f"{officer}.token"
    pg.cli(officer, "approve", req, "--out", str(token))
    read = pg.cli_json("worker1", "read", record, "--grant", f"@{token}")
    assert set(read["records"][record]) == {"name"} and read["records"][record]["name"]


def test_keys_share_through_failover_reaches_the_new_holders_slot(
    served: PgServed, tmp_path: Path
) -> None:
    pg = served
    a, _b = pg.start_replica(), pg.start_replica()
    assert _generations(pg, "officer3") == []
    a.stop(kill=True)  # the client's first server is dead: it fails over to the second
    pg.cli("officer1", "keys", "share", "officer3")
    assert _generations(pg, "officer3") == _generations(pg, "officer1") != []
    _approve_and_read(pg, "officer3", tmp_path)
    pg.cli("officer3", "audit", "verify")


def test_keys_rotate_through_failover_rewrites_every_slot(served: PgServed, tmp_path: Path) -> None:
    pg = served
    a, _b = pg.start_replica(), pg.start_replica()
    before = _generations(pg, "officer2")
    a.stop(kill=True)
    done = pg.cli_json("officer1", "keys", "rotate")
    assert done["generation"] == max(before) + 1
    assert _generations(pg, "officer1") == _generations(pg, "officer2") == [done["generation"]]
    assert _generations(pg, "worker1") == []
    _approve_and_read(pg, "officer2", tmp_path)
    pg.cli("officer2", "audit", "verify")
