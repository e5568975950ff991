"""Decommissioning needs an officer's co-signature and first writes the guardian
contact list, sealed to that officer (P-23; issue 15 finding 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from childvault.keys import AccessDenied, DecryptionFailed, Identity
from tests.conftest import World, add_children, child_values


def test_one_admin_alone_cannot_decommission(world: World) -> None:
    """Finding 6: decommission could be run by one admin alone."""
    with world.open("worker1") as v:
        add_children(v, 2)
    with world.open("admin") as v, pytest.raises(AccessDenied, match="co-signature"):
        v.decommission(confirm=True)
    with world.open("worker1") as v:
        assert len(list(v.list_records())) == 2  # nothing was shredded


def test_cosign_writes_the_contact_list_only_the_officer_can_open(
    world: World, tmp_path: Path
) -> None:
    """Finding 6: the guardian contact list is written first, encrypted to the officer."""
    with world.open("worker1") as v:
        ids = add_children(v, 2)
    out = tmp_path / "contacts.sealed"
    with world.open("officer1") as v:
        done = v.cosign_decommission(out)
    assert done.records == 2 and out.stat().st_mode & 0o777 == 0o600
    raw = out.read_bytes()
    assert child_values(0)["guardian_phone"].encode() not in raw  # sealed, not clear
    doc = json.loads(world.ids["officer1"].unseal(raw))
    got = {c["record_id"]: c for c in doc["contacts"]}
    assert set(got) == set(ids)
    assert {c["guardian_phone"] for c in got.values()} == {
        child_values(i)["guardian_phone"] for i in range(2)
    }
    with pytest.raises(DecryptionFailed):  # another officer cannot open it
        world.ids["officer2"].unseal(raw)
    with world.open("admin") as v:
        assert v.decommission(confirm=True).records_shredded == 2


_BOSS_PW = "correct horse battery staple 42!"


def _add_officer_admin(world: World) -> None:
    """One person holding both officer and admin, with the custodian key shared."""
    with world.open("admin") as v:
        v.add_user("boss", ["officer", "admin"], _BOSS_PW)
    world.ids["boss"] = Identity.load(world.home / "identities" / "boss.id", _BOSS_PW)
    with world.open("officer1") as v:
        v.share_custodian("boss")


def _denials(world: World, reason: str) -> list[dict[str, object]]:
    with world.open("admin") as v:
        return [
            e
            for e in (row["entry"] for row in v.audit_entries())
            if e.get("action") == "vault.decommission"
            and e.get("outcome") == "denied"
            and (e.get("detail") or {}).get("reason") == reason
        ]


def test_officer_who_is_also_admin_cannot_cosign_their_own_decommission(
    world: World, tmp_path: Path
) -> None:
    """Audit probe: a user holding officer and admin co-signed and decommissioned alone."""
    _add_officer_admin(world)
    with world.open("worker1") as v:
        add_children(v, 2)
    with world.open("boss") as v:
        v.cosign_decommission(tmp_path / "own.sealed")
        with pytest.raises(AccessDenied, match="another officer"):
            v.decommission(confirm=True)
    assert len(_denials(world, "self_cosign")) == 1
    with world.open("worker1") as v:
        assert len(list(v.list_records())) == 2  # nothing was shredded
    # A second person's co-signature is what it takes: then the same admin may.
    with world.open("officer1") as v:
        v.cosign_decommission(tmp_path / "other.sealed")
    with world.open("boss") as v:
        assert v.decommission(confirm=True).records_shredded == 2


def test_records_added_after_the_cosign_make_it_stale(world: World, tmp_path: Path) -> None:
    """Audit probe: records added after a co-signature were shredded without being
    in its guardian contact list; now the co-signature no longer counts."""
    with world.open("worker1") as v:
        first = add_children(v, 1)
    out = tmp_path / "c.sealed"
    with world.open("officer1") as v:
        v.cosign_decommission(out)
    world.clock.advance(days=200)
    with world.open("worker1") as v:
        later = add_children(v, 2)
    with world.open("admin") as v, pytest.raises(AccessDenied, match="co-signs again"):
        v.decommission(confirm=True)
    assert len(_denials(world, "stale_cosign")) == 1
    with world.open("worker1") as v:
        assert len(list(v.list_records())) == 3  # nothing was shredded, collection goes on
        add_children(v, 1)
    with world.open("officer1") as v:
        v.cosign_decommission(out)
    doc = json.loads(world.ids["officer1"].unseal(out.read_bytes()))
    assert set(first + later) <= {c["record_id"] for c in doc["contacts"]}
    with world.open("admin") as v:
        assert v.decommission(confirm=True).records_shredded == len(doc["contacts"]) == 4


def test_a_record_corrected_after_the_cosign_makes_it_stale(world: World, tmp_path: Path) -> None:
    """A corrected guardian phone after the co-signature: the list would be out of date."""
    with world.open("worker1") as v:
        ids = add_children(v, 1)
    with world.open("officer1") as v:
        v.cosign_decommission(tmp_path / "c.sealed")
        v.correct(ids[0], "guardian_phone", "13900000000")
    with world.open("admin") as v, pytest.raises(AccessDenied, match="co-signs again"):
        v.decommission(confirm=True)
