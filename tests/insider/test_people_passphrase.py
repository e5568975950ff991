"""Issue 12, ``passphrase change``: the owner re-encrypts their identity file;
the old passphrase stops working, the keys (and so the data) stay."""

from __future__ import annotations

from pathlib import Path

import pytest

from childvault.keys import Identity, WrongPassphrase
from childvault.vault import Vault
from tests.conftest import PASSPHRASES, World, add_children
from tests.test_cli import js, run


def test_passphrase_change_keeps_data_readable_and_retires_the_old_one(
    world: World, tmp_path: Path
) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 1)
        req = v.request_access(ids, ["name"], "case_management", "家访")
    with world.open("officer1") as v:
        token = v.approve(req).token
    new = tmp_path / "new"
    new.write_text("worker1-new-passphrase\n")
    r = run(world, "worker1", "--json", "passphrase", "change", "--passphrase-file", str(new))
    assert r.exit_code == 0, r.output
    assert js(r)["user"] == "worker1"
    path = world.home / "identities" / "worker1.id"
    with pytest.raises(WrongPassphrase):
        Identity.load(path, PASSPHRASES["worker1"])
    # The old passphrase no longer opens the vault; the new one does, and reads.
    r = run(world, "worker1", "list")
    assert r.exit_code == 3 and "wrong passphrase" in r.stderr
    r = run(world, "worker1", "list", env={"CHILDVAULT_PASSPHRASE": "worker1-new-passphrase"})
    assert r.exit_code == 0, r.output
    reopened = Identity.load(path, "worker1-new-passphrase")
    assert reopened.public == world.ids["worker1"].public
    assert reopened.anchor == world.ids["worker1"].anchor
    with Vault.open(world.home, identity=reopened, clock=world.clock) as v:
        assert v.read_with_grant(token)[ids[0]]["name"] == "测试儿童0"


def test_passphrase_change_needs_the_old_one_and_changes_nothing_otherwise(
    world: World, tmp_path: Path
) -> None:
    path = world.home / "identities" / "worker1.id"
    before = path.read_bytes()
    new = tmp_path / "new"
    new.write_text("worker1-new-passphrase\n")
    r = run(
        world,
        "worker1",
        "passphrase",
        "change",
        "--passphrase-file",
        str(new),
        env={"CHILDVAULT_PASSPHRASE": "a-wrong-guess"},
    )
    assert r.exit_code == 3 and path.read_bytes() == before
    short = tmp_path / "short"
    short.write_text("short\n")
    r = run(world, "worker1", "passphrase", "change", "--passphrase-file", str(short))
    assert r.exit_code == 2 and path.read_bytes() == before
