"""Decommissioning needs an officer's co-signature and first writes the guardian
contact list, sealed to that officer (P-23; issue 15 finding 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from childvault.keys import AccessDenied, DecryptionFailed
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
