"""``childvault serve`` over PostgreSQL: one replica, then two on one database (issue 17).

Real parts only: the session's PostgreSQL server, ``childvault serve``
processes, clients as separate processes with only their identity file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from childvault.vault._httpsig import HTTPSignatureAuth
from tests.fixtures.postgres import PostgresServer
from tests.scale._replicas import PgServed, make_pg_vault

SAMPLE = Path(__file__).resolve().parents[2] / "childvault" / "vault" / "data" / "sample.csv"


@pytest.fixture
def served(tmp_path: Path, postgres: PostgresServer) -> Iterator[PgServed]:
    """A PostgreSQL vault with no replica running yet (each test starts its own)."""
    pg = make_pg_vault(tmp_path, postgres)
    try:
        yield pg
    finally:
        pg.stop()


def test_core_flow_through_serve_over_postgresql(served: PgServed, tmp_path: Path) -> None:
    pg = served
    replica = pg.start_replica()
    pg.cli("worker1", "import", str(SAMPLE))
    ids = [r["id"] for r in pg.cli_json("worker1", "list")["records"][:2]]
    assert len(ids) == 2
    req = pg.cli_json(
        "worker1",
        "request",
        "--record",
        ids[0],
        "--record",
        ids[1],
        "--field",
        "name",
        "--purpose",
        "case_management",
        "--reason",
        "home visit",
    )
    token = tmp_path / "grant.token"
    pg.cli("officer2", "approve", req["request_id"], "--uses", "2", "--out", str(token))
    read = pg.cli_json("worker1", "read", ids[0], ids[1], "--grant", f"@{token}")
    assert set(read["records"]) == set(ids)
    assert all(set(v) == {"name"} for v in read["records"].values())
    pg.cli("officer1", "delete", ids[1], "--reason", "guardian asked")
    pg.cli("worker1", "read", ids[1], "--grant", f"@{token}", expect=3)
    pg.cli("worker1", "audit", "verify")
    pg.cli("officer1", "audit", "verify")
    assert replica.refusals() == []
    # The rows are in PostgreSQL: the home holds no SQLCipher file.
    assert not (pg.home / "vault.db").exists()
    with pg.open_local("officer1") as officer:
        assert officer.verify_audit().entries > 0


def _signed_count(pg: PgServed, url: str) -> requests.PreparedRequest:
    body = json.dumps(
        {"txn": None, "repo": "records", "method": "count", "args": [], "kwargs": {"$o": []}}
    ).encode()
    return requests.Request(
        "POST",
        url + "/v1/rpc",
        data=body,
        headers={"Content-Type": "application/json"},
        auth=HTTPSignatureAuth(pg.identity("worker1")),
    ).prepare()


def test_a_request_replayed_against_the_other_replica_or_after_a_restart_is_refused(
    served: PgServed,
) -> None:
    pg = served
    a = pg.start_replica()
    b = pg.start_replica()
    prepared = _signed_count(pg, a.url)
    with requests.Session() as http:
        first = http.send(prepared, timeout=30)
        assert first.status_code == 200, first.text
        # The same signed bytes to the other replica: the path and body are the
        # same, only the authority differs (which is not signed).
        prepared.url = b.url + "/v1/rpc"
        again = http.send(prepared, timeout=30)
        assert (again.status_code, again.json()["reason"]) == (401, "replay")
        # A restart does not forget it either: the nonce is in the database.
        a.stop()
        a = pg.start_replica(port=a.port)
        prepared.url = a.url + "/v1/rpc"
        after = http.send(prepared, timeout=30)
        assert (after.status_code, after.json()["reason"]) == (401, "replay")
    assert [r["reason"] for r in b.refusals()] == ["replay"]
