"""Issue 12, ``keys renew``: new key pairs, signed by the old key, the new key
and an admin. An identity file copied before the renewal opens nothing new:
not the key slot, not the vault, not a grant approved afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from childvault.keys import AccessDenied, ChildVaultError, Identity, KeySlots, UsageError
from childvault.vault import Vault
from tests.conftest import World, add_children
from tests.test_cli import js, run

RENEWED = "renewed-passphrase-1"


def _vault_id(world: World) -> str:
    return str(json.loads((world.home / "config.json").read_text())["vault_id"])


def _renew(world: World, who: str) -> Identity:
    with world.open(who) as v:
        v.request_key_renewal(RENEWED)
    with world.open("admin") as v:
        v.approve_key_renewal(who)
    return Identity.load(world.home / "identities" / f"{who}.id", RENEWED)


def test_an_identity_copied_before_renewal_opens_nothing_new(world: World) -> None:
    old = world.ids["worker1"]
    slots_before = (world.home / "keyslots.json").read_bytes()
    new = _renew(world, "worker1")
    assert new.public != old.public and new.anchor == old.anchor
    # The old identity no longer opens its key slot, nor the vault.
    with pytest.raises(ChildVaultError):
        KeySlots(world.home / "keyslots.json").open(old, _vault_id(world))
    with pytest.raises(ChildVaultError):
        Vault.open(world.home, identity=old, clock=world.clock)
    # With the slot file copied before: the database opens, the session does not.
    current = (world.home / "keyslots.json").read_bytes()
    (world.home / "keyslots.json").write_bytes(slots_before)
    with pytest.raises(AccessDenied, match="does not match"):
        Vault.open(world.home, identity=old, clock=world.clock)
    (world.home / "keyslots.json").write_bytes(current)
    # The new identity works; a grant approved now is sealed to the new key only.
    with Vault.open(world.home, identity=new, clock=world.clock) as v:
        ids = add_children(v, 1)
        req = v.request_access(ids, ["name"], "case_management", "家访")
    with world.open("officer1") as v:
        token = v.approve(req).token
    with Vault.open(world.home, identity=new, clock=world.clock) as v:
        assert v.read_with_grant(token)[ids[0]]["name"] == "测试儿童0"


def test_a_renewed_custodian_holder_still_approves_and_the_log_verifies(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 1)
        req = v.request_access(ids, ["name"], "case_management", "家访")
    new = _renew(world, "officer2")
    with Vault.open(world.home, identity=new, clock=world.clock) as v:
        v.approve(req)
    with world.open("admin") as v:
        v.verify_audit()
        state = v._session.trust()
        assert state is not None
        assert state.user("officer2").sign_key == new.public.signing_key


def test_renewal_needs_a_pending_request_and_an_admin(world: World, tmp_path: Path) -> None:
    with world.open("admin") as v, pytest.raises(UsageError, match="no pending"):
        v.approve_key_renewal("worker1")
    new = tmp_path / "new"
    new.write_text(RENEWED + "\n")
    r = run(world, "worker1", "--json", "keys", "renew", "--passphrase-file", str(new))
    assert r.exit_code == 0, r.output
    assert Path(js(r)["identity"]).exists()
    # Until approved, the current identity is the one in use.
    r = run(world, "worker1", "list")
    assert r.exit_code == 0, r.output
    r = run(world, "officer1", "keys", "renew", "--approve", "worker1")
    assert r.exit_code == 3
    r = run(world, "admin", "--json", "keys", "renew", "--approve", "worker1")
    assert r.exit_code == 0, r.output
    r = run(world, "worker1", "list", env={"CHILDVAULT_PASSPHRASE": RENEWED})
    assert r.exit_code == 0, r.output
    # Approving again: the pending statement is no longer signed by the current key.
    with world.open("admin") as v, pytest.raises(UsageError, match="stale or done"):
        v.approve_key_renewal("worker1")
