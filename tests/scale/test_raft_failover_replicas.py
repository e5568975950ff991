"""The OpenBao leader SIGKILLed during an import through two ``serve`` replicas (issue 17).

A vault on PostgreSQL with the Vault provider against the session's three-node
OpenBao Raft cluster, served by two ``childvault serve`` replicas; a worker
imports through ``--server A,B`` while the test SIGKILLs the Raft leader in the
middle of a batch. In Vault mode the replicas hold no Vault credential and
never call OpenBao for an import: the workstation wraps each record's key
itself with its own ``VAULT_TOKEN`` (here the root token of the throw-away
cluster) and sends only ciphertext and wrapped keys to a replica. So the
failover is the Vault provider's (childvault/keys/_openbao/_http.py), seen from
a client of the replicas.

Expected: the import completes through the new leader, or fails cleanly (exit
5, whole batches only) and a rerun imports exactly the rest; every row is
stored once and the log verifies; records of both batches decrypt through a
grant via the replicas; a new leader appears within the provider's
bound; the killed node is restarted and rejoins, so later tests see three
nodes. No time is asserted (the bounds only stop a hang).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from childvault.keys import VaultSettings, setup_vault
from childvault.keys._openbao._http import HA_WAIT_S
from childvault.vault import OpenBaoCredentials, OpenBaoKeys, Vault
from tests.conftest import born_years_ago
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.raft import RaftCluster
from tests.scale._replicas import PgServed, make_pg_vault
from tests.scale.test_failover import _count, _exactly_once
from tests.server._vaultserver import synthetic_csv

#: Rows of the import: a batch of 500 (one transaction) and one of 100.
ROWS = 600
#: Rows of one import batch (childvault/vault/_svc_records_import.py).
BATCH = 500


@pytest.fixture
def cluster(raft_cluster: RaftCluster) -> Iterator[RaftCluster]:
    """The session cluster, with every node running and the cluster whole after the test."""
    yield raft_cluster
    for i, node in enumerate(raft_cluster.nodes):
        if not node.running:
            raft_cluster.restart(i)
    raft_cluster.wait_healthy()


@pytest.fixture
def served(tmp_path: Path, postgres: PostgresServer, cluster: RaftCluster) -> Iterator[PgServed]:
    """A PostgreSQL vault whose keys are in the Raft cluster; no replica running yet."""
    settings = VaultSettings(addr=",".join(cluster.addrs))
    # No audit device on the throw-away cluster: the failover, not the audit trail, is tested.
    setup_vault(settings, cluster.root_token, allow_no_audit_device=True)
    keys = dataclasses.replace(OpenBaoKeys(settings), token=cluster.root_token)
    pg = make_pg_vault(tmp_path, postgres, people=("officer1", "worker1"), keys=keys)
    try:
        yield pg
    finally:
        pg.stop()


def _salts(cluster: RaftCluster) -> int:
    """Salt documents in the cluster's KV mount (one per wrapped record, of any vault)."""
    resp = cluster.api("GET", "childvault-kv/metadata/records?list=true")
    if resp.status_code == 404:
        return 0
    resp.raise_for_status()
    return len(resp.json()["data"]["keys"])


def _read_through_replicas(pg: PgServed, cluster: RaftCluster, rows: Path) -> None:
    """Records of both batches decrypt through a grant, via the replicas.

    The keys of the rows imported after the failover were wrapped through the
    new leader: a worker's request, an officer's approval and the worker's read
    (each with their own Vault credential) show they unwrap.
    """
    creds = OpenBaoCredentials(token=cluster.root_token)
    with pg.open_local("officer1") as officer:
        entries = [e["entry"] for e in officer.audit_entries()]
    ids = [r for e in entries if e["action"] == "record.create" for r in e["records"]]
    # Rows of young children who consented to case management (an older
    # child needs their own consent first, M-12), from both batches.
    under_14 = born_years_ago(14).isoformat()  # born after: not 14 yet today
    with rows.open(encoding="utf-8", newline="") as fh:
        young = {
            i: row["name"]
            for i, row in enumerate(csv.DictReader(fh))
            if row["date_of_birth"] > under_14 and "case_management" in row["purposes"]
        }
    picked = list(young)[:6] + [i for i in young if i >= BATCH][:6]
    sample = [ids[i] for i in picked]
    with Vault.connect(pg.urls, pg.identity("worker1"), credentials=creds) as worker:
        req = worker.request_access(sample, ("name",), "case_management", "核对")
    with Vault.connect(pg.urls, pg.identity("officer1"), credentials=creds) as officer:
        token = officer.approve(req).token
    with Vault.connect(pg.urls, pg.identity("worker1"), credentials=creds) as worker:
        got = worker.read_with_grant(token)
    # Records are created in row order: each decrypts to its own row's name.
    assert {r: got[r]["name"] for r in sample} == {ids[i]: young[i] for i in picked}


def test_raft_leader_killed_mid_import_through_two_replicas(
    served: PgServed, cluster: RaftCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg = served
    # The replicas start without any Vault credential: they never need one.
    pg.start_replica()
    pg.start_replica()
    # The workstation's own Vault credential (clients inherit the environment).
    monkeypatch.setenv("VAULT_TOKEN", cluster.root_token)
    rows = synthetic_csv(tmp_path / "rows.csv", ROWS)
    before = _salts(cluster)
    importer = pg.cli_background("worker1", "--json", "import", "--allow-duplicates", str(rows))
    # Kill the leader once the first batch's salt documents are being written.
    deadline = time.monotonic() + 600
    while _salts(cluster) <= before:
        assert importer.poll() is None, importer.communicate()[1].decode()
        assert time.monotonic() < deadline, "no salt document written in 600 s"
        time.sleep(0.05)
    assert importer.poll() is None, "the import finished before the leader was killed"
    leader = cluster.leader()
    cluster.kill(leader)
    # The provider waits at most HA_WAIT_S for an active node: a new one must come within it.
    new_leader = cluster.wait_for_leader(HA_WAIT_S, exclude=leader)
    assert new_leader != leader

    out, err = importer.communicate(timeout=900)
    assert b"Traceback" not in err, err.decode()
    partial = _count(pg)
    if importer.returncode == 0:
        assert json.loads(out)["imported"] == ROWS
        outcome = "completed"
    else:
        # A write in flight to the killed leader is not re-sent (it may have
        # run): the batch fails cleanly and its transaction rolls back.
        assert importer.returncode == 5, f"{out.decode()}\n{err.decode()}"
        error = json.loads(out)["error"]
        assert error["type"] == "ProviderUnavailable"
        assert "Vault" in error["message"]
        print(f"the import failed cleanly: {error['message']}")
        assert partial % BATCH == 0 and partial < ROWS
        done = pg.cli_json("worker1", "import", "--allow-duplicates", str(rows))
        assert done["imported"] == ROWS - partial
        outcome = f"failed cleanly after {partial} rows, resumed"
    _exactly_once(pg, ROWS)
    _read_through_replicas(pg, cluster, rows)

    # The killed node rejoins from its own Raft data; the cluster is whole again.
    cluster.restart(leader)
    assert sorted(cluster.voters()) == [n.node_id for n in cluster.nodes]
    print(f"import during the leader's failover: {outcome}")
