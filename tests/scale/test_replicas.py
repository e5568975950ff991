"""``childvault serve`` over PostgreSQL: one replica, then two on one database (issue 17).

Real parts only: the session's PostgreSQL server, ``childvault serve``
processes, clients as separate processes with only their identity file.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from childvault.vault._httpsig import HTTPSignatureAuth
from tests.fixtures.postgres import PostgresServer
from tests.scale._replicas import PgServed, make_pg_vault
from tests.server._vaultserver import synthetic_csv

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
    pg.cli("worker1", "import", str(synthetic_csv(tmp_path / "rows.csv", 6)))
    ids = [r["id"] for r in pg.cli_json("worker1", "list")["records"][:2]]
    assert len(ids) == 2
    req = pg.request("worker1", ids[0], ids[1], reason="home visit")
    token = tmp_path / "grant.token"
    pg.cli("officer2", "approve", req, "--uses", "2", "--out", str(token))
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


def _done(proc: subprocess.Popen[bytes]) -> dict[str, object]:
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, f"{out.decode()}\n{err.decode()}"
    return dict(json.loads(out.decode().splitlines()[-1]))


def test_two_replicas_eight_clients_keep_one_linear_chain(served: PgServed, tmp_path: Path) -> None:
    pg = served
    a, b = pg.start_replica(), pg.start_replica()
    pg.cli("worker1", "import", str(synthetic_csv(tmp_path / "seed.csv", 6)), url=a.url)
    seed = [r["id"] for r in pg.cli_json("worker1", "list", url=b.url)["records"]]
    per_requester, per_importer = 3, 30
    # Every client talks to one replica; the two replicas share the database.
    procs = [
        pg.client(
            f"worker{i}",
            (a, b)[i % 2].url,
            "import",
            str(synthetic_csv(tmp_path / f"w{i}.csv", per_importer, i)),
        )
        for i in range(1, 5)
    ]
    procs += [
        pg.client("worker1", a.url, "request", str(per_requester), *seed[:2]),
        pg.client("worker2", b.url, "request", str(per_requester), *seed[2:4]),
    ]
    procs += [
        pg.client(officer, replica.url, "approve", str(2 * per_requester))
        for officer, replica in (("officer1", b), ("officer2", a))
    ]
    results = [_done(p) for p in procs]
    assert [r["imported"] for r in results[:4]] == [per_importer] * 4
    asked = set(results[4]["requests"]) | set(results[5]["requests"])  # type: ignore[arg-type]
    approved = set(results[6]["approved"]) | set(results[7]["approved"])  # type: ignore[arg-type]
    assert len(asked) == 2 * per_requester
    assert len(approved) == 2 * per_requester  # each request approved exactly once
    # A read through one replica with a grant approved through the other.
    req = pg.request("worker3", seed[0], reason="visit", url=a.url)
    token = tmp_path / "grant.token"
    pg.cli("officer1", "approve", req, "--out", str(token), url=b.url)
    read = pg.cli_json("worker3", "read", seed[0], "--grant", f"@{token}", url=a.url)
    assert set(read["records"]) == {seed[0]}
    for replica in (a, b):
        pg.cli("officer2", "audit", "verify", url=replica.url)
    with pg.open_local("officer1") as officer:
        assert officer._session.db.records.count() == 6 + 4 * per_importer
        reqs = officer.requests(status=None)
        assert {r.id for r in reqs if r.status == "approved"} == asked | {req}
        report = officer.verify_audit()  # one chain, every signature, statement, checkpoint
        entries = [e["entry"] for e in officer.audit_entries()]
        checkpoints = officer._session.db.checkpoints.all()
    assert report.entries == len(entries)
    assert [e["seq"] for e in entries] == list(range(len(entries)))
    approvals = [e for e in entries if e["action"] == "request.approve" and e["outcome"] == "ok"]
    assert {e["grant"] for e in approvals} - {e["grant"] for e in approvals[-1:]} == approved
    created = [e for e in entries if e["action"] == "record.create"]
    ids = [r for e in created for r in e["records"]]
    assert len(ids) == len(set(ids)) == 6 + 4 * per_importer  # nothing lost, nothing twice
    # Every approval signed a checkpoint over a prefix of the one chain.
    assert len(checkpoints) >= len(approvals)
    assert all(0 < cp.size <= len(entries) for cp in checkpoints)
