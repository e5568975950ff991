"""``childvault vault gc`` against a real OpenBao: a failed batch's salts are found and
destroyed, live records are untouched (issue 14, item 6)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from childvault.cli._cmd_vault_admin import parse_grace
from childvault.cli.main import cli
from childvault.keys import ChildVaultError
from tests._insider import Insider
from tests.conftest import PASSPHRASES, World, add_children
from tests.integration.conftest import BaoServer
from tests.integration.test_vault_hardening import read_name, run_cli, world_on

pytestmark = pytest.mark.vault

# Salts and Transit encrypt, but no blind-index HMAC: a batch wraps every
# record's keys (writing their salts to Vault), then fails on the index tags,
# before any row reaches the database.
_HALF_STAFF = """
path "childvault-transit/encrypt/childvault-dek" { capabilities = ["update"] }
path "childvault-kv/data/records/*" { capabilities = ["create"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
path "sys/capabilities-self" { capabilities = ["update"] }
"""


@pytest.fixture(scope="module")
def gc_bao(bao_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """A server of its own: the test destroys salts on it."""
    with BaoServer(bao_binary, tmp_path_factory.mktemp("gc-bao")) as server:
        server.start()
        server.setup()
        yield server


def failed_batch(world: World, server: BaoServer, n: int) -> None:
    """worker1 adds ``n`` records with a token that cannot compute index tags."""
    server.api(
        "PUT", "sys/policies/acl/half-staff", json={"policy": _HALF_STAFF}
    ).raise_for_status()
    assert world.tokens is not None
    half = World(
        world.home,
        world.ids,
        world.clock,
        {**world.tokens, "worker1": server.token(["half-staff"])},
        "vault",
    )
    with half.open("worker1") as v, pytest.raises(ChildVaultError):
        add_children(v, n)


def test_gc_lists_and_destroys_the_salts_of_a_failed_batch(
    gc_bao: BaoServer, tmp_path: Path
) -> None:
    world = world_on(gc_bao, tmp_path)
    with world.open("worker1") as v:
        live = add_children(v, 2)
    before = {rid: read_name(world, rid) for rid in live}
    failed_batch(world, gc_bao, 3)
    with world.open("worker1") as v:
        assert sorted(r.id for r in v.list_records()) == sorted(live)

    # Within the grace period nothing is listed (a batch may still be in flight).
    code, out = run_cli(world, "admin", "--json", "vault", "gc")
    assert code == 0, out
    assert json.loads(out)["orphans"] == []

    # Dry run: the three orphans are listed, nothing is destroyed.
    code, out = run_cli(world, "admin", "--json", "vault", "gc", "--grace", "0s")
    assert code == 0, out
    report = json.loads(out)
    orphans = sorted(o["record_id"] for o in report["orphans"])
    assert len(orphans) == 3 and not set(orphans) & set(live)
    assert report["destroyed"] == 0
    for rid in orphans:
        data = gc_bao.api("GET", f"childvault-kv/data/records/{rid}")
        assert data.status_code == 200  # still there

    # Officers may not run it (and their Vault policy cannot list salts).
    code, out = run_cli(world, "officer1", "vault", "gc", "--grace", "0s", "--yes")
    assert code == 3, out  # denied, and logged (below)

    code, out = run_cli(world, "admin", "vault", "gc", "--grace", "0s", "--yes")
    assert code == 0, out
    assert "Destroyed 3 orphaned salt document(s)" in out
    for rid in orphans:
        assert gc_bao.api("GET", f"childvault-kv/data/records/{rid}").status_code == 404
        meta = gc_bao.api("GET", f"childvault-kv/metadata/records/{rid}").json()["data"]
        assert meta["custom_metadata"]["orphan"] == "vault gc"
        assert all(v["destroyed"] for v in meta["versions"].values())

    # Live records untouched: their salts are there and they still read.
    assert {rid: read_name(world, rid) for rid in live} == before
    code, out = run_cli(world, "admin", "--json", "vault", "gc", "--grace", "0s")
    assert code == 0, out
    assert json.loads(out)["orphans"] == []

    # The destruction is in childvault's log, with the salts' ids.
    with world.open("admin") as v:
        entries = [e["entry"] for e in v.audit_entries() if e["entry"]["action"] == "vault.gc"]
    denied, done = entries
    assert (denied["actor"], denied["outcome"]) == ("officer1", "denied")
    assert (done["actor"], done["outcome"]) == ("admin", "ok")
    assert sorted(done["detail"]["salts_destroyed"]) == orphans


def test_gc_is_for_vault_mode_only(world: World) -> None:
    with world.open("admin") as v, pytest.raises(ChildVaultError, match="Vault/OpenBao"):
        v.vault_gc(grace=timedelta(0))
    env = {
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": "admin",
        "CHILDVAULT_PASSPHRASE": PASSPHRASES["admin"],
    }
    result = CliRunner().invoke(cli, ["vault", "gc", "--grace", "0s"], env=env)
    assert result.exit_code == 2 and "Vault/OpenBao" in result.output, result.output


@pytest.mark.parametrize(
    ("text", "seconds"), [("7d", 604800), ("12h", 43200), ("30m", 1800), ("0s", 0)]
)
def test_grace_periods(text: str, seconds: int) -> None:
    assert parse_grace(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "7", "d7", "-1d", "1w", "1.5h", "7 d 2h"])
def test_a_bad_grace_period_is_a_usage_error(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_grace(text)


def test_gc_finds_a_shredded_record_whose_salt_was_written_back(
    gc_bao: BaoServer, tmp_path: Path
) -> None:
    """Attack (issue 14 audit, gap 3): officers and admins may set the KV
    ``custom_metadata`` (to write the shredded mark) and Vault cannot limit its
    value, so after a deletion an officer clears the mark and writes a saved
    salt back with ``cas=N``. The policy cannot stop it; ``vault gc`` finds it
    (the database's tombstone against the salt's versions and mark), exit 4."""
    world = world_on(gc_bao, tmp_path)
    assert world.tokens is not None
    with world.open("worker1") as v:
        kept, gone = add_children(v, 2)
    path = f"childvault-kv/data/records/{gone}"
    saved = gc_bao.api("GET", path).json()["data"]["data"]  # copied while it existed
    with world.open("officer1") as v:
        v.delete(gone, "retention")
    code, out = run_cli(world, "admin", "--json", "vault", "gc")
    assert code == 0, out
    assert json.loads(out)["revived"] == []

    meta_path = f"childvault-kv/metadata/records/{gone}"
    officer = world.tokens["officer1"]
    cleared = gc_bao.api("POST", meta_path, token=officer, json={"custom_metadata": {}})
    assert cleared.status_code == 204, cleared.text
    current = gc_bao.api("GET", meta_path).json()["data"]["current_version"]
    back = gc_bao.api(
        "POST", path, token=officer, json={"options": {"cas": current}, "data": saved}
    )
    assert back.status_code == 200, back.text

    code, out = run_cli(world, "admin", "--json", "vault", "gc")
    assert code == 4, out
    report = json.loads(out)
    assert report["ok"] is False
    (found,) = report["revived"]
    assert found == {"record_id": gone, "live_versions": [current + 1], "marked": False}
    assert kept != gone
    code, out = run_cli(world, "admin", "vault", "gc")
    assert code == 4 and f"SHREDDED RECORD REVIVED {gone}" in out, out

    # Regression (session 13's leftover): the insider also deletes the database's
    # deletion record. The verified log still holds the officer's `record.delete`, so
    # the salt is still reported as revived, not listed (or destroyed) as an orphan.
    with Insider(world, "worker1") as insider:
        assert insider.delete("tombstones", where={"record_id": gone}) == 1
    code, out = run_cli(world, "admin", "--json", "vault", "gc", "--grace", "0s")
    assert code == 4, out
    report = json.loads(out)
    assert [f["record_id"] for f in report["revived"]] == [gone]
    assert gone not in [o["record_id"] for o in report["orphans"]]
