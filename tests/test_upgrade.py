"""Issue 12, ``childvault upgrade``: a vault made by the previous release (no
anchor in any identity file, no signed statements, no entry signatures) is
refused by every other command until an admin upgrades it; then each user
takes the anchor and signs their own registration, the admin countersigns,
the first officer states the custodian key, and everything verifies.

The earlier release's vault is constructed with today's code and then
brought to that release's form: identities without anchors from the start
(so nothing is signed after `init`), and the founding statement, the saved
trust states and the entry signatures dropped, the log re-chained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rfc8785

from childvault.keys import ConfigError, Identity, IntegrityError
from childvault.testing import FakeClock
from childvault.vault import Vault
from childvault.vault._merkle import leaf_hash
from tests._insider import Insider
from tests.conftest import PASSPHRASES, ROLES, World, add_children
from tests.test_cli import js, run


def _legacy_world(tmp_path: Path) -> tuple[World, list[str]]:
    clock = FakeClock()
    home = tmp_path / "home"
    Vault.init(
        home,
        institution="旧版福利院",
        admin="admin",
        admin_passphrase=PASSPHRASES["admin"],
        clock=clock,
    ).close()
    # Built as today's vault (an upgraded vault refuses identities without an
    # anchor), then made into an earlier one: anchors, statements and the
    # entries' statement fields removed below.
    with Vault.open(home, identity=_load(home, "admin"), clock=clock) as v:
        for name, roles in ROLES.items():
            v.add_user(name, roles, PASSPHRASES[name])
    with Vault.open(home, identity=_load(home, "officer1"), clock=clock) as v:
        v.share_custodian("officer2")
    with Vault.open(home, identity=_load(home, "worker1"), clock=clock) as v:
        records = add_children(v, 2)
    ids = {}
    for name in PASSPHRASES:
        identity = _load(home, name)
        identity.anchor = None
        identity.save(home / "identities" / f"{name}.id", PASSPHRASES[name])
        ids[name] = identity
    with Insider(home, ids["admin"]) as insider:
        insider.delete("statements")
        insider.delete("trust_states")
        prev: str | None = None
        for seq, entry in insider.rows("audit", ["seq", "entry"], order_by="seq"):
            obj = json.loads(entry)
            if isinstance(obj.get("detail"), dict):
                obj["detail"].pop("statement", None)
                obj["detail"].pop("pending_statement", None)
                # The earlier release had no record statements either.
                obj["detail"].pop("record_statement", None)
            obj["prev"] = prev
            new = rfc8785.dumps(obj)
            digest = leaf_hash(new)
            insider.update("audit", {"entry": new, "hash": digest, "sig": None}, where={"seq": seq})
            prev = digest.hex()
    return World(home, ids, clock), records


def _load(home: Path, name: str) -> Identity:
    return Identity.load(home / "identities" / f"{name}.id", PASSPHRASES[name])


def _reload(world: World) -> None:
    world.ids = {
        name: Identity.load(world.home / "identities" / f"{name}.id", secret)
        for name, secret in PASSPHRASES.items()
    }


def test_an_earlier_vault_is_refused_until_upgraded_then_verifies(tmp_path: Path) -> None:
    world, records = _legacy_world(tmp_path)
    with pytest.raises(ConfigError, match="childvault upgrade"):
        world.open("worker1")
    r = run(world, "worker1", "list")
    assert r.exit_code == 1 and "childvault upgrade" in r.stderr
    # Only an admin starts it.
    r = run(world, "worker1", "upgrade", "--fingerprint", "x")
    assert r.exit_code == 3, r.output
    r = run(world, "admin", "--json", "upgrade")
    assert r.exit_code == 0, r.output
    doc = js(r)
    assert doc["steps"] == ["anchored"]
    assert doc["pending"] == ["officer1", "officer2", "worker1", "worker2"]
    fingerprint = doc["fingerprint"]
    _reload(world)
    assert world.ids["admin"].anchor is not None
    # Each user confirms the fingerprint and signs their own registration.
    for who in ("worker1", "officer1", "officer2"):
        r = run(world, who, "--json", "upgrade", "--fingerprint", fingerprint)
        assert r.exit_code == 0, r.output
        assert js(r)["steps"] == ["anchor adopted", "registration requested"]
    r = run(world, "admin", "--json", "upgrade")
    assert r.exit_code == 0, r.output
    assert js(r)["steps"] == ["registrations countersigned: officer1, worker1"]
    # The first officer states the custodian key; officer2 is countersigned at keys share.
    r = run(world, "officer1", "--json", "upgrade")
    assert r.exit_code == 0, r.output
    # ...and signs the records the log names no statement for (what the
    # database holds at the upgrade is what is trusted from then on).
    assert js(r)["steps"] == ["custodian stated: officer1", "records stated: 2"]
    r = run(world, "officer1", "keys", "share", "officer2")
    assert r.exit_code == 0, r.output
    _reload(world)
    with world.open("worker1") as v:
        fresh = add_children(v, 1)
        req = v.request_access([*records, *fresh], ["name"], "case_management", "升级后")
    with world.open("officer2") as v:
        token = v.approve(req).token
    with world.open("worker1") as v:
        values = v.read_with_grant(token)
    assert {values[r]["name"] for r in records} == {"测试儿童0", "测试儿童1"}
    with world.open("admin") as v:
        v.verify_audit()
        state = v._session.trust()
        assert state is not None
        assert {n for n in state.users if state.is_active(n)} == {
            "admin",
            "officer1",
            "officer2",
            "worker1",
        }
        assert state.active_holders(1) == {"officer1", "officer2"}
    # worker2 has not run it yet: still opens (to run it), but is refused
    # everything that would trust the rows instead of verifying them.
    with world.open("worker2") as v:
        assert v.user == "worker2"
        with pytest.raises(IntegrityError, match="childvault upgrade"):
            v.read_with_grant(token)
    r = run(world, "worker2", "list")
    assert r.exit_code == 4 and "childvault upgrade" in r.stderr, r.output


def test_a_wrong_fingerprint_changes_nothing(tmp_path: Path) -> None:
    world, _ = _legacy_world(tmp_path)
    assert run(world, "admin", "upgrade").exit_code == 0
    path = world.home / "identities" / "worker1.id"
    before = path.read_bytes()
    r = run(world, "worker1", "upgrade", "--fingerprint", "0000 0000")
    assert r.exit_code == 2 and "not confirmed" in r.stderr
    assert path.read_bytes() == before


def test_an_edited_users_row_stops_the_upgrade(tmp_path: Path) -> None:
    world, _ = _legacy_world(tmp_path)
    with Insider(world, "worker1") as insider:
        insider.update("users", {"roles": "officer,staff"}, where={"name": "worker1"})
    r = run(world, "admin", "upgrade")
    assert r.exit_code == 4 and "users table was edited" in r.stderr
    with pytest.raises(ConfigError, match="childvault upgrade"):
        world.open("admin")
