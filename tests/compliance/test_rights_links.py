"""Finishing the linked answer closes a rights request (P-19, P-20, M-17; formerly
known gap 5 of docs/compliance.md).

A deletion or a subject report linked to the request (``--rights-request``) is
the whole answer: the request closes as ``done`` in the same log write. A
correction changes one field while a request may name several: the request
stays open, answered (no longer overdue), until an officer closes it. An
unanswered request past its deadline is still overdue and ``doctor`` lists it.
"""

from __future__ import annotations

from datetime import date

from childvault.vault import Vault
from tests.conftest import World, add_children

RECEIVED = date(2026, 11, 24)


def _overdue_in_doctor(v: Vault) -> str:
    return {name: message for name, _, message in v.health()}.get("rights requests", "")


def test_a_linked_deletion_or_subject_report_closes_the_request(world: World) -> None:
    with world.open("worker1") as v:
        a, b = add_children(v, 2)
        own = v.request_access([b], ["name"], "case_management", "本人查询")
    with world.open("officer1") as v:
        erase = v.rights_open(
            "delete", a, requester="guardian", received=RECEIVED, identity_checked=True
        )
        access = v.rights_open(
            "access", b, requester="child", received=RECEIVED, identity_checked=True
        )
        token = v.approve(own).token
        v.delete(a, "本人申请删除", rights_request=erase.id)
    with world.open("worker1") as v:
        # Staff make the report with the approved token: that is the answer.
        v.subject_report(b, token, rights_request=access.id)
    world.clock.advance(days=30)  # both deadlines have passed
    with world.open("officer1") as v:
        rows = {r.id: r for r in v.rights_list()}
        assert not _overdue_in_doctor(v)
    for request, answer in ((erase, "record.delete"), (access, "report.subject")):
        row = rows[request.id]
        assert (row.status, row.outcome, row.overdue) == ("closed", "done", False)
        assert [link.action for link in row.links] == [answer]
        assert row.closed_at == row.links[0].at
    with world.open("admin") as v:
        closing = [
            e["entry"] for e in v.audit_entries(record=a) if e["entry"]["action"] == "rights.close"
        ]
    # The closing names the answer and is signed by whoever gave it.
    assert [(c["actor"], c["detail"]["answer"]) for c in closing] == [("officer1", "record.delete")]


def test_a_linked_correction_stops_the_overdue_mark_and_the_officer_closes(
    world: World,
) -> None:
    with world.open("worker1") as v:
        rid, other = add_children(v, 2)
    with world.open("officer1") as v:
        fix = v.rights_open(
            "correct", rid, requester="guardian", received=RECEIVED, identity_checked=True
        )
        late = v.rights_open(
            "object", other, requester="guardian", received=RECEIVED, identity_checked=True
        )
        v.correct(rid, "school", "第二实验小学", rights_request=fix.id)
        # A second field of the same request can still be linked.
        v.correct(rid, "health", "良好，已复查", rights_request=fix.id)
    world.clock.advance(days=30)
    with world.open("officer1") as v:
        rows = {r.id: r for r in v.rights_list()}
        assert (rows[fix.id].status, rows[fix.id].overdue) == ("open", False)
        assert [link.action for link in rows[fix.id].links] == ["record.correct"] * 2
        # The unanswered request is overdue, and doctor still says so.
        assert rows[late.id].overdue
        message = _overdue_in_doctor(v)
        assert late.id in message and fix.id not in message
        closed = v.rights_close(fix.id, "done")
        assert (closed.status, closed.outcome) == ("closed", "done")
