"""Issue 14 attack tests against a real OpenBao: key rotation that stays rotated.

Each test first shows the attack working where the issue says it worked, then
that the hardened path stops it. The provider-level attacks (staff salt read,
salt write-back after shredding, setup without an audit device) are in
``test_vault_provider.py``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from childvault.cli.main import cli
from childvault.keys import ChildVaultError, Identity
from tests.conftest import PASSPHRASES, ROLES, World, add_children, build_template, copy_world
from tests.integration.conftest import BaoServer

pytestmark = pytest.mark.vault

POLICY = {"staff": "childvault-staff", "officer": "childvault-officer", "admin": "childvault-admin"}
KEY = "childvault-transit/keys/childvault-dek"


@pytest.fixture(scope="module")
def hard_bao(bao_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """A server of its own: the tests rotate and trim its Transit key."""
    with BaoServer(bao_binary, tmp_path_factory.mktemp("hard-bao")) as server:
        server.start()
        server.setup()
        yield server


@pytest.fixture
def world(hard_bao: BaoServer, tmp_path: Path) -> World:
    src = tmp_path / "template" / "home"
    settings = json.loads(hard_bao.settings.to_json())
    ids: dict[str, Identity] = build_template(src, provider="vault", vault_settings=settings)
    roles = {"admin": "admin", **{name: r[0] for name, r in ROLES.items()}}
    tokens = {n: hard_bao.token([POLICY[r]], ttl="2h") for n, r in roles.items()}
    return copy_world(src, ids, tmp_path / "live", tokens=tokens, provider="vault")


def run_cli(world: World, user: str, *args: str) -> tuple[int, str]:
    assert world.tokens is not None
    env = {
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": user,
        "CHILDVAULT_PASSPHRASE": PASSPHRASES[user],
        "VAULT_TOKEN": world.tokens[user],
    }
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.output


def backup(world: World, dest: Path) -> World:
    shutil.copytree(world.home, dest)
    return World(dest, world.ids, world.clock, world.tokens, "vault")


def read_name(world: World, record_id: str) -> str:
    """worker1 asks, officer1 approves, worker1 reads: the full childvault path."""
    with world.open("worker1") as v:
        req = v.request_access([record_id], ["name"], "case_management", "backup check")
    with world.open("officer1") as v:
        token = v.approve(req).token
    with world.open("worker1") as v:
        return v.read_with_grant(token)[record_id]["name"]


def set_floor(server: BaoServer, version: int) -> int:
    """Root lowers (or raises) min_decryption_version; return OpenBao's status."""
    return server.api("POST", f"{KEY}/config", json={"min_decryption_version": version}).status_code


def test_rotate_trim_keeps_old_blobs_dead_even_when_root_lowers_the_floor(
    world: World, hard_bao: BaoServer, tmp_path: Path
) -> None:
    """Attack (issue 14, 4): after a rotation, the floor is lowered and old blobs open again."""
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
    name = read_name(world, rid)
    old = backup(world, tmp_path / "backup-v1")

    # Without --trim: the message no longer claims destruction, and the attack works.
    code, out = run_cli(world, "admin", "keys", "rotate")
    assert code == 0, out
    gen = hard_bao.api("GET", KEY).json()["data"]["latest_version"]
    assert f"key versions below {gen} retired" in out and "NOT destroyed" in out
    with pytest.raises(ChildVaultError):
        read_name(old, rid)
    assert set_floor(hard_bao, 1) in (200, 204)
    assert read_name(old, rid) == name  # retired, not destroyed
    # ... and the admin's doctor names the lowered floor.
    code, out = run_cli(world, "admin", "--json", "doctor")
    assert code == 1 and "min_decryption_version 1 is below" in out, out

    # With --trim: every older version is deleted from the server.
    older = backup(world, tmp_path / "backup-v2")
    code, out = run_cli(world, "admin", "keys", "rotate", "--trim")
    assert code == 0, out
    gen = hard_bao.api("GET", KEY).json()["data"]["latest_version"]
    assert f"key versions below {gen} deleted from the Vault server (trimmed)" in out, out
    info = hard_bao.api("GET", KEY).json()["data"]
    assert info["min_available_version"] == gen
    assert sorted(int(k) for k in info["keys"]) == [gen]
    # Root cannot bring them back: OpenBao refuses a floor below the trimmed
    # versions, and even if it did not, the key material is gone.
    for floor in (1, gen - 1):
        set_floor(hard_bao, floor)
        for backup_world in (old, older):
            with pytest.raises(ChildVaultError):
                read_name(backup_world, rid)
    assert set_floor(hard_bao, gen) in (200, 204)
    # The live record still reads.
    assert read_name(world, rid) == name
    code, out = run_cli(world, "admin", "--json", "doctor")
    assert "min_decryption_version" not in out, out
