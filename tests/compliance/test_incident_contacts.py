"""The guardian contact list of an incident in one command (issue 15, P-21).

``report incident`` told officers to file a contact-field request by hand.
Now ``incident contacts`` files the ``breach_notification`` requests, another
officer approves, and the same command writes the list sealed to the officer.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from childvault.keys import UsageError
from tests.conftest import World, add_children, child_values


def test_contact_list_is_requested_approved_by_another_officer_and_sealed(
    world: World, tmp_path: Path
) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 2)
    with world.open("officer1") as v:
        other = v.request_access(ids, ["name"], "case_management", "家访")
        inc = v.incident_open("leak", world.clock.now)
        v.incident_add_records(inc.id, ids)
        filed = v.incident_contacts(inc.id)
    assert filed["records"] == 2 and len(filed["requests"]) == 1
    with world.open("officer2") as v:
        token = v.approve(filed["requests"][0]).token
        stray = v.approve(other).token
    out = tmp_path / "contacts.sealed"
    with world.open("officer1") as v:
        with pytest.raises(UsageError, match="not a breach notification"):
            v.incident_contacts(inc.id, tokens=[stray], out=tmp_path / "x")
        done = v.incident_contacts(inc.id, tokens=[token], out=out)
        opened = v.open_incident_contacts(out)
    assert done["records"] == 2 and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "电话" not in out.read_bytes().decode("latin-1")  # sealed, not plaintext
    rows = {r["record_id"]: r for r in opened["contacts"]}
    assert set(rows) == set(ids)
    assert rows[ids[0]]["guardian_phone"] == child_values(0)["guardian_phone"]
    assert all(
        set(r) <= {"record_id", "name", "guardian_name", "guardian_phone"} for r in rows.values()
    )
    # Sealed to officer1 only.
    with world.open("officer2") as v, pytest.raises(UsageError, match="not a contact list"):
        v.open_incident_contacts(out)
    with world.open("admin") as v:
        logged = [
            e["entry"] for e in v.audit_entries() if e["entry"]["action"] == "incident.contacts"
        ]
    assert logged[-1]["detail"]["count"] == 2 and logged[-1]["detail"]["sha256"] == done["sha256"]
