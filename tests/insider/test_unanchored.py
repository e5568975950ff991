"""Issue 12, attack 1 through an identity without an anchor: in an upgraded vault a
user who has not run `childvault upgrade` yet can verify nothing, so every operation
that would seal key material or trust stored rows refuses them (exit 4, logged)
instead of falling back to the rows an insider can edit."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from childvault.keys import IntegrityError, KeySlots
from tests._insider import Insider
from tests.conftest import World
from tests.insider._helpers import refusals
from tests.test_cli import js, run
from tests.test_upgrade import _legacy_world, _reload


def _custodian_entries(world: World, who: str) -> list[str]:
    """The custodian entries in ``who``'s own key slot (what would open record keys)."""
    vault_id = json.loads((world.home / "config.json").read_text())["vault_id"]
    secrets = KeySlots(world.home / "keyslots.json").open(world.ids[who], vault_id)
    return sorted(k for k in secrets if k.startswith("custodian/"))


def _half_upgraded(tmp_path: Path) -> tuple[World, list[str]]:
    """An upgraded vault where officer2 (a custodian holder since before the upgrade)
    and worker2 have not run `childvault upgrade`: their identities hold no anchor."""
    world, records = _legacy_world(tmp_path)
    r = run(world, "admin", "--json", "upgrade")
    assert r.exit_code == 0, r.output
    fingerprint = js(r)["fingerprint"]
    _reload(world)
    for who in ("worker1", "officer1"):
        r = run(world, who, "--json", "upgrade", "--fingerprint", fingerprint)
        assert r.exit_code == 0, r.output
    assert run(world, "admin", "--json", "upgrade").exit_code == 0
    r = run(world, "officer1", "--json", "upgrade")
    assert r.exit_code == 0, r.output
    _reload(world)
    assert world.ids["officer2"].anchor is None and world.ids["worker2"].anchor is None
    assert _custodian_entries(world, "officer2") == ["custodian/1"]
    return world, records


def test_an_officer_without_an_anchor_does_not_rotate_to_an_inserted_holder(
    tmp_path: Path,
) -> None:
    world, _ = _half_upgraded(tmp_path)
    with Insider(world, "worker2") as insider:
        insider.insert("custodian_holders", {"generation": 1, "officer": "worker2"})
    with world.open("officer2") as v, pytest.raises(IntegrityError, match="childvault upgrade"):
        v.rotate_keys()
    r = run(world, "officer2", "keys", "rotate")
    assert r.exit_code == 4 and "childvault upgrade" in r.stderr, r.output
    # Nothing was sealed to the insider, and the generation did not move.
    assert _custodian_entries(world, "worker2") == []
    assert _custodian_entries(world, "officer1") == ["custodian/1"]
    assert [e["actor"] for e in refusals(world, "keys.rotate")] == ["officer2", "officer2"]


def test_without_an_anchor_nothing_that_trusts_rows_runs(tmp_path: Path) -> None:
    """Approve, share and read by an identity without an anchor are refused and
    logged; the anchored users of the same vault go on working."""
    world, records = _half_upgraded(tmp_path)
    with world.open("worker1") as v:
        req = v.request_access(records, ["name"], "case_management", "家访")
    with world.open("officer2") as v, pytest.raises(IntegrityError, match="childvault upgrade"):
        v.approve(req)
    with world.open("officer2") as v, pytest.raises(IntegrityError, match="childvault upgrade"):
        v.share_custodian("officer1")
    with world.open("officer1") as v:
        token = v.approve(req).token
    with world.open("worker2") as v, pytest.raises(IntegrityError, match="childvault upgrade"):
        v.read_with_grant(token)
    with world.open("worker1") as v:
        values = v.read_with_grant(token)
    assert {values[r]["name"] for r in records} == {"测试儿童0", "测试儿童1"}
    actors = {(e["actor"], e["detail"]["on"]) for e in refusals(world, "trust")} | {  # type: ignore[index]
        (e["actor"], e["detail"]["on"])  # type: ignore[index]
        for on in ("access.approve", "custodian.share", "access.read")
        for e in refusals(world, on)
    }
    assert {a for a, _ in actors} == {"officer2", "worker2"}


def test_deleting_the_upgrade_flag_does_not_reopen_the_fallback(tmp_path: Path) -> None:
    """Regression (session 13's leftover): whether a vault is upgraded rested on the
    ``meta`` flag and the statement at seq 1, rows any user can delete. An upgraded
    earlier vault's founding statement sits at the upgrade's entry, so deleting the
    flag made it look earlier (everyone refused, and the admin's `upgrade` would found
    it again); the log's `vault.upgrade` entry now decides, and the identity without an
    anchor stays refused."""
    world, _ = _half_upgraded(tmp_path)
    with Insider(world, "worker2") as insider:
        assert insider.delete("meta", where={"key": "trust_upgraded"}) == 1
        insider.insert("custodian_holders", {"generation": 1, "officer": "worker2"})
    r = run(world, "officer2", "keys", "rotate")
    assert r.exit_code == 4 and "childvault upgrade" in r.stderr, r.output
    assert _custodian_entries(world, "worker2") == []
    assert [e["actor"] for e in refusals(world, "keys.rotate")] == ["officer2"]
    # The anchored users go on working, and the admin's `upgrade` does not found the
    # vault a second time.
    r = run(world, "admin", "--json", "upgrade")
    assert r.exit_code == 0 and "anchored" not in js(r)["steps"], r.output
    with world.open("officer1") as v:
        assert v.verify_audit().entries > 0  # raises if anything disagrees


def test_a_new_vault_refuses_a_stripped_identity_without_its_rows(world: World) -> None:
    """A vault made since issue 12 is founded at entry 1: an identity stripped of its
    anchor is refused even after an insider deletes the founding statement's row."""
    # A copy: the world's identities are the session template's, shared by every test.
    stripped = copy.copy(world.ids["officer2"])
    stripped.anchor = None
    world.ids = {**world.ids, "officer2": stripped}
    with Insider(world, "worker2") as insider:
        insider.delete("statements", where={"seq": 1})
        insider.delete("meta", where={"key": "trust_upgraded"})
        insider.insert("custodian_holders", {"generation": 1, "officer": "worker2"})
    with world.open("officer2") as v, pytest.raises(IntegrityError, match="childvault upgrade"):
        v.rotate_keys()
    assert _custodian_entries(world, "worker2") == []
