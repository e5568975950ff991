"""The rights-request and incident registers (issue 15 finding 4)."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta

import pytest

from childvault.keys import UsageError
from childvault.vault import Incident, RightsRequest
from tests.conftest import World, add_children


def test_rights_register_deadline_overdue_and_close(world: World) -> None:
    """Finding 4: 查询/更正/删除/异议 received, identity checked, deadline, outcome."""
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
    with world.open("officer1") as v:
        row = v.rights_open(
            "correct", rid, requester="guardian", received=date(2026, 11, 20), identity_checked=True
        )
        assert row.deadline == date(2026, 12, 5) and row.status == "open"
        assert not row.overdue
    world.clock.advance(days=12)  # 2026-12-06: past the 15 days
    with world.open("officer1") as v:
        (listed,) = v.rights_list()
        assert listed.overdue and listed.id == row.id
        health = {name: message for name, _, message in v.health()}
        assert row.id in health["rights requests"]
        # Issue 15: a correction request closes as done only with a linked correction.
        with pytest.raises(UsageError, match="none is linked"):
            v.rights_close(row.id, "done")
        v.correct(rid, "school", "第二实验小学", rights_request=row.id)
        closed = v.rights_close(row.id, "done")
        assert closed.status == "closed" and closed.outcome == "done"
        assert [link.action for link in closed.links] == ["record.correct"]
        with pytest.raises(UsageError, match="already closed"):
            v.rights_close(row.id, "done")
    with world.open("admin") as v:
        actions = [e["entry"]["action"] for e in v.audit_entries(record=rid)]
    # The register is the log: both steps are entries about the record.
    assert {"rights.open", "rights.link", "rights.close"} <= set(actions)


def test_incident_register_records_notifications_and_refuses_an_unreported_close(
    world: World,
) -> None:
    """Finding 4: discovered when, type, affected records, notifications, report."""
    with world.open("worker1") as v:
        ids = add_children(v, 2)
    with world.open("officer1") as v:
        inc = v.incident_open("loss", world.clock.now - timedelta(hours=2))
        v.incident_add_records(inc.id, ids)
        v.incident_notify(inc.id, "guardians")
        with pytest.raises(UsageError, match="authorities"):
            v.incident_close(inc.id)
        v.incident_notify(inc.id, "authority")
        done = v.incident_close(inc.id)
    assert done.status == "closed" and list(done.records) == ids
    assert set(done.notified) == {"guardians", "authority"} and done.kind == "loss"


def test_register_results_are_frozen_dataclasses_with_unchanged_json(world: World) -> None:
    """Item 8: typed results; their JSON is the register row the CLI prints."""
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
    with world.open("officer1") as v:
        row = v.rights_open(
            "access", rid, requester="child", received=date(2026, 11, 24), identity_checked=True
        )
        inc = v.incident_open("leak", world.clock.now)
    assert isinstance(row, RightsRequest) and isinstance(inc, Incident)
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.status = "closed"  # type: ignore[misc]
    assert RightsRequest.from_json(row.to_json()) == row
    assert Incident.from_json(inc.to_json()) == inc
    assert row.to_json()["received"] == "2026-11-24" and inc.to_json()["records"] == []


def test_rights_links_check_the_request_and_refusals_need_a_reason(world: World) -> None:
    """Item 6: delete and report subject annotate the linked request; wrong links change nothing."""
    with world.open("worker1") as v:
        a, b = add_children(v, 2)
    with world.open("officer1") as v:
        access = v.rights_open(
            "access", a, requester="guardian", received=date(2026, 11, 24), identity_checked=True
        )
        erase = v.rights_open(
            "delete", a, requester="guardian", received=date(2026, 11, 24), identity_checked=True
        )
        unchecked = v.rights_open(
            "delete", b, requester="child", received=date(2026, 11, 24), identity_checked=False
        )
        with pytest.raises(UsageError, match="does not answer it"):
            v.delete(a, "本人申请删除", rights_request=access.id)
        with pytest.raises(UsageError, match="another record"):
            v.delete(b, "本人申请删除", rights_request=erase.id)
        with pytest.raises(UsageError, match="without checking"):
            v.delete(b, "本人申请删除", rights_request=unchecked.id)
        assert v.record_info(b).id == b  # nothing was deleted
        with pytest.raises(UsageError, match="--reason"):
            v.rights_close(unchecked.id, "refused")
        refused = v.rights_close(unchecked.id, "refused", reason="身份无法核实")
        assert refused.reason == "身份无法核实"
        v.delete(a, "本人申请删除", rights_request=erase.id)
        (linked,) = [r for r in v.rights_list() if r.id == erase.id]
    assert [link.action for link in linked.links] == ["record.delete"]
