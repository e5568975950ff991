"""The fourteenth birthday (M-12; issue 15 finding 2).

A guardian's consent given at 13 stayed valid after the child turned 14, with
no warning. Now the consent records the day the child turns 14; from that day
approvals and reads refuse the record until the child's own consent is
recorded, and ``doctor`` lists the records due within 30 days.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from childvault.keys import AccessDenied, ApprovalInvalid
from childvault.vault import Consent
from childvault.vault._consent import fourteenth_birthday
from childvault.vault._validators import make_id_number
from tests.conftest import World, child_values, consent

DOB = date(2012, 12, 10)  # 13 on the test clock's first day (2026-11-24), 14 on 2026-12-10


def _add_thirteen_year_old(world: World) -> str:
    values = child_values(0, date_of_birth=DOB.isoformat())
    values["id_number"] = make_id_number("110105", DOB, 102)
    values["sex"] = "female"
    with world.open("worker1") as v:
        return v.add_record("child", values, consent(consented_at=date(2026, 11, 24)))


def _request(world: World, rid: str) -> str:
    with world.open("worker1") as v:
        return v.request_access([rid], ["name"], "case_management", "家访")


def test_guardian_consent_records_the_fourteenth_birthday(world: World) -> None:
    rid = _add_thirteen_year_old(world)
    with world.open("officer1") as v:
        assert v.consent_of(rid).child_consent_due == date(2026, 12, 10)
    # A child's own consent and a leap-day birth.
    child = consent(by="child", guardian_informed=True, consented_at=date(2026, 11, 24))
    assert fourteenth_birthday(child, date(2010, 1, 1)) is None
    assert fourteenth_birthday(consent(consented_at=date(2020, 1, 1)), date(2008, 2, 29)) == date(
        2022, 3, 1
    )


def test_approval_refused_after_the_fourteenth_birthday_until_the_child_consents(
    world: World,
) -> None:
    """Finding 2: the guardian's consent given at 13 no longer suffices from the birthday."""
    rid = _add_thirteen_year_old(world)
    with world.open("officer1") as v:
        approval = v.approve(_request(world, rid))
        health = {name: message for name, _, message in v.health()}
    # doctor lists the record due within 30 days, by id only.
    assert rid in health["turning 14"] and "2026-12-10" in health["turning 14"]

    # 2026-12-09 16:30 UTC is already 2026-12-10 in Beijing: the legal date counts.
    world.clock.set(datetime(2026, 12, 9, 16, 30, tzinfo=UTC))
    req = _request(world, rid)
    with world.open("officer2") as v, pytest.raises(AccessDenied, match="turned 14"):
        v.approve(req)
    with world.open("worker1") as v, pytest.raises(ApprovalInvalid):
        v.read_with_grant(approval.token)
    with world.open("admin") as v:
        denied = [
            e["entry"]["detail"]
            for e in v.audit_entries()
            if e["entry"]["action"] == "request.approve" and e["entry"]["outcome"] == "denied"
        ]
    assert denied[-1] == {"reason": "turned 14"}

    # The child's own consent, with the guardian informed, lifts the refusal.
    with world.open("officer1") as v:
        old = v.consent_of(rid)
        v.update_consent(
            rid,
            Consent(
                by="child",
                consented_at=date(2026, 12, 10),
                notice_version="2026-1",
                purposes=old.purposes,
                retain_until=old.retain_until,
                guardian_informed=True,
            ),
        )
        assert v.consent_of(rid).child_consent_due is None
    with world.open("officer2") as v:
        assert v.approve(_request(world, rid)).grant_id
