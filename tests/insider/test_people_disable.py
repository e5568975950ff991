"""Issue 12, ``user disable``: a disabled user can neither log in nor use a
grant they already hold, even with a key-slot file copied before the
disabling; only an admin can disable."""

from __future__ import annotations

import json

from childvault.keys import KeySlots
from childvault.vault import _audit
from tests.conftest import World, add_children
from tests.test_cli import js, run


def test_cli_disable_refuses_login_and_the_users_grant(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 1)
        req = v.request_access(ids, ["name"], "case_management", "家访")
    with world.open("officer1") as v:
        token = v.approve(req).token
    slots_copy = (world.home / "keyslots.json").read_bytes()

    r = run(world, "admin", "--json", "user", "disable", "worker1", "--reason", "离职")
    assert r.exit_code == 0, r.output
    doc = js(r)
    assert doc["user"] == "worker1" and len(doc["revoked_grants"]) == 1
    assert doc["rotation_required"] is False
    with world.open("admin") as v:
        entries = list(v._session.db.audit.entries_by_action(("user.disable",)))
    detail = _audit.decode_entry(entries[-1])["detail"]
    assert detail["reason"] == "离职" and "statement" in detail

    # Login: the key slot is gone.
    r = run(world, "worker1", "list")
    assert r.exit_code != 0 and "no key slot" in r.stderr
    # The insider restores the slot file they copied: the grant is still refused.
    (world.home / "keyslots.json").write_bytes(slots_copy)
    r = run(world, "worker1", "--json", "read", ids[0], "--grant", token)
    assert r.exit_code == 3, r.output
    assert "disabled" in json.dumps(js(r), ensure_ascii=False)


def test_cli_disable_is_for_admins_and_names_the_rotation(world: World) -> None:
    r = run(world, "officer1", "user", "disable", "worker1", "--reason", "x")
    assert r.exit_code == 3
    assert "worker1" in KeySlots(world.home / "keyslots.json").users()
    r = run(world, "admin", "user", "disable", "officer2", "--reason", "调岗")
    assert r.exit_code == 0, r.output
    assert "keys rotate" in r.stdout
    r = run(world, "admin", "user", "disable", "officer2", "--reason", "again")
    assert r.exit_code == 2 and "not an active user" in r.stderr
