"""The rights-request and incident registers (issue 15 finding 4)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from childvault.keys import UsageError
from tests.conftest import World, add_children


def test_rights_register_deadline_overdue_and_close(world: World) -> None:
    """Finding 4: 查询/更正/删除/异议 received, identity checked, deadline, outcome."""
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
    with world.open("officer1") as v:
        row = v.rights_open(
            "correct", rid, requester="guardian", received=date(2026, 11, 20), identity_checked=True
        )
        assert row["deadline"] == "2026-12-05" and row["status"] == "open"
        assert not row["overdue"]
    world.clock.advance(days=12)  # 2026-12-06: past the 15 days
    with world.open("officer1") as v:
        (listed,) = v.rights_list()
        assert listed["overdue"] and listed["id"] == row["id"]
        health = {name: message for name, _, message in v.health()}
        assert row["id"] in health["rights requests"]
        closed = v.rights_close(row["id"], "done")
        assert closed["status"] == "closed" and closed["outcome"] == "done"
        with pytest.raises(UsageError, match="already closed"):
            v.rights_close(row["id"], "done")
    with world.open("admin") as v:
        actions = [e["entry"]["action"] for e in v.audit_entries(record=rid)]
    # The register is the log: both steps are entries about the record.
    assert "rights.open" in actions and "rights.close" in actions


def test_incident_register_records_notifications_and_refuses_an_unreported_close(
    world: World,
) -> None:
    """Finding 4: discovered when, type, affected records, notifications, report."""
    with world.open("worker1") as v:
        ids = add_children(v, 2)
    with world.open("officer1") as v:
        inc = v.incident_open("loss", world.clock.now - timedelta(hours=2))
        v.incident_add_records(inc["id"], ids)
        v.incident_notify(inc["id"], "guardians")
        with pytest.raises(UsageError, match="authorities"):
            v.incident_close(inc["id"])
        v.incident_notify(inc["id"], "authority")
        done = v.incident_close(inc["id"])
    assert done["status"] == "closed" and done["records"] == ids
    assert set(done["notified"]) == {"guardians", "authority"} and done["kind"] == "loss"
