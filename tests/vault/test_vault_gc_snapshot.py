"""``vault gc`` after a Vault snapshot is restored over a deletion (issue 14).

A Raft snapshot taken before a record was shredded holds its salt; restoring it
into the live Vault (a recovery, or an insider with ``sys/storage/raft``) brings
the salt back unmarked, with every version as it was. The database and the
verified log still say the record was deleted, so ``vault gc`` must report it as
revived (exit 4), never count it as live or as an orphan to forget.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import add_children
from tests.integration.conftest import BaoServer
from tests.integration.test_vault_hardening import run_cli, world_on

pytestmark = pytest.mark.vault


@pytest.fixture(scope="module")
def raft_bao(bao_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """A persistent server (Raft storage), the only kind with snapshots."""
    server = BaoServer(bao_binary, tmp_path_factory.mktemp("snap-bao"), persistent=True)
    with server:
        server.start()
        server.setup()
        yield server


def _snapshot(server: BaoServer) -> bytes:
    resp = server.api("GET", "sys/storage/raft/snapshot")
    resp.raise_for_status()
    assert resp.content, "an empty snapshot"
    return resp.content


def _restore(server: BaoServer, snapshot: bytes) -> None:
    resp = requests.post(
        f"{server.addr}/v1/sys/storage/raft/snapshot",
        headers={"X-Vault-Token": server.root_token},
        data=snapshot,
        timeout=60,
    )
    assert resp.status_code == 204, resp.text


def test_gc_reports_a_record_revived_by_a_snapshot_restore(
    raft_bao: BaoServer, tmp_path: Path
) -> None:
    world = world_on(raft_bao, tmp_path)
    with world.open("worker1") as v:
        kept, gone = add_children(v, 2)
    before = _snapshot(raft_bao)
    with world.open("officer1") as v:
        v.delete(gone, "retention")
    code, out = run_cli(world, "admin", "--json", "vault", "gc")
    assert code == 0, out
    assert json.loads(out)["revived"] == []
    shredded = raft_bao.api("GET", f"childvault-kv/data/records/{gone}")
    assert shredded.status_code == 404  # every version destroyed

    _restore(raft_bao, before)
    back = raft_bao.api("GET", f"childvault-kv/data/records/{gone}")
    assert back.status_code == 200, back.text  # the salt is live again

    code, out = run_cli(world, "admin", "--json", "vault", "gc")
    assert code == 4, out
    report = json.loads(out)
    assert report["ok"] is False
    assert [(f["record_id"], f["marked"]) for f in report["revived"]] == [(gone, False)]
    assert gone not in [o["record_id"] for o in report["orphans"]]
    assert kept not in [f["record_id"] for f in report["revived"]]
    # The record stays deleted for the vault: no approval reads it again.
    with world.open("officer1") as v:
        assert gone not in {r.id for r in v.list_records()}
