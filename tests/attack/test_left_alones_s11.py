"""Insider left-alones of earlier sessions (issues 12, 15), fixed in session 11.

Each test is named after the bug and fails without its fix. The insider is a
staff member with their own database key and identity (the embedded mode,
``tests.conftest.World``): they may append a log entry of any action in their
own name, signed by their own key.

A subject-access request (查询/复制) closed as answered by a subject report
(``rights.link`` / ``rights.close`` naming ``report.subject``, which any user
may log: whoever holds a grant makes the report) counted whether or not a
report was ever made. It now counts only with the report in the signed log:
a ``report.subject`` entry about the record after the request was opened,
made by the grant's requester after their read with the grant an officer
approved, by the closer or an officer.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from childvault.keys import AccessDenied
from childvault.vault import _tokens
from childvault.vault._audit import Event
from childvault.vault._svc_rights import RightsService
from tests.conftest import World, add_children

RECEIVED = date(2026, 11, 24)


def _log(world: World, who: str, *events: Event) -> None:
    with world.open(who) as v:
        v._session.log(list(events), datetime.now(UTC))


def _answered(who: str, rights: str, record: str, grant: str | None) -> list[Event]:
    """What ``link`` logs for a subject report, in ``who``'s name."""
    detail = {"rights": rights, "answer": "report.subject"}
    return [
        Event(who, "rights.link", records=[record], grant=grant, detail=detail),
        Event(
            who,
            "rights.close",
            records=[record],
            grant=grant,
            detail={**detail, "outcome": "done"},
        ),
    ]


def _jti(world: World, token: str) -> str:
    """The grant id of an approval token (verified with the approving officer's key)."""
    return _tokens.verify(token, world.ids["officer1"].public.signing_key).jti


def _status(world: World, rights: str) -> tuple[str, tuple[str, ...]]:
    with world.open("officer1") as v:
        (row,) = [r for r in v.rights_list() if r.id == rights]
        return row.status, tuple(link.action for link in row.links)


def _access_request(world: World) -> tuple[str, str, str]:
    """A record, an open access request on it, and a grant worker1 holds for it
    (approved, not yet used): (record, rights id, approval token)."""
    with world.open("worker1") as v:
        (record,) = add_children(v, 1)
        req = v.request_access([record], ["name"], "case_management", "本人查询")
    with world.open("officer1") as v:
        rights = v.rights_open(
            "access", record, requester="child", received=RECEIVED, identity_checked=True
        )
        token = v.approve(req).token
    return record, rights.id, token


def test_rights_close_as_answered_by_report_subject_without_a_report(world: World) -> None:
    """A staff member closes an access request as answered by a subject report that
    never happened (no grant named, then another's grant named): it stays open."""
    record, rights, token = _access_request(world)
    _log(world, "worker2", *_answered("worker2", rights, record, None))
    assert _status(world, rights) == ("open", ())
    # worker1's grant exists, approved by an officer, but no report was made with it.
    _log(world, "worker2", *_answered("worker2", rights, record, _jti(world, token)))
    assert _status(world, rights) == ("open", ())


def test_rights_close_on_a_forged_report_with_anothers_grant(world: World) -> None:
    """worker2 logs, in their own name, the read and the report worker1's grant would
    give, then closes the request on them: the grant is not theirs (the signed
    request is worker1's), so nothing is answered. worker1's real report does."""
    record, rights, token = _access_request(world)
    grant = _jti(world, token)
    forged = [
        Event("worker2", "grant.read", records=[record], fields=["name"], grant=grant),
        Event("worker2", "report.subject", records=[record], grant=grant),
        *_answered("worker2", rights, record, grant),
    ]
    _log(world, "worker2", *forged)
    assert _status(world, rights) == ("open", ())
    with world.open("worker1") as v:
        v.subject_report(record, token, rights_request=rights)
    assert _status(world, rights) == ("closed", ("report.subject",))


def test_rights_link_refuses_a_subject_report_that_is_not_in_the_log(world: World) -> None:
    """At close time: linking a subject report that was never made is refused with
    the reason, and the refusal is logged; the request stays open."""
    record, rights, token = _access_request(world)
    with world.open("worker1") as v:
        service = RightsService(v._session)
        with pytest.raises(AccessDenied, match="no subject report"):
            service.link(rights, "report.subject", record, grant=_jti(world, token))
        with pytest.raises(AccessDenied, match="names no grant"):
            service.link(rights, "report.subject", record)
    with world.open("officer1") as v:
        denied = [
            e["entry"]
            for e in v.audit_entries(record=record)
            if (e["entry"]["action"], e["entry"]["outcome"]) == ("rights.link", "denied")
        ]
    assert [(d["actor"], d["detail"]["rights"]) for d in denied] == [("worker1", rights)] * 2
    assert _status(world, rights) == ("open", ())


def test_a_subject_report_made_before_the_request_answers_nothing(world: World) -> None:
    """The report must follow the request: one made earlier with the same grant
    (its reads left) does not answer a request opened afterwards."""
    with world.open("worker1") as v:
        (record,) = add_children(v, 1)
        req = v.request_access([record], ["name"], "case_management", "本人查询")
    with world.open("officer1") as v:
        token = v.approve(req, uses=2).token
    with world.open("worker1") as v:
        v.subject_report(record, token)
    with world.open("officer1") as v:
        rights = v.rights_open(
            "access", record, requester="child", received=RECEIVED, identity_checked=True
        ).id
    _log(world, "worker1", *_answered("worker1", rights, record, _jti(world, token)))
    assert _status(world, rights) == ("open", ())
    with world.open("worker1") as v:
        v.subject_report(record, token, rights_request=rights)
    assert _status(world, rights) == ("closed", ("report.subject",))
