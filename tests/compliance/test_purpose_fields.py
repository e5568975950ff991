"""Purpose decides fields (P-11, P-14; issue 15 finding 1).

A ``statistics``-only consent let a requester read the name, the guardian's
phone and the case notes under the purpose ``statistics``. The schema now
lists, per purpose, the fields it may ever release, and requests, approvals
and reads each enforce the list.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from childvault.keys import UsageError
from childvault.vault import Schema
from childvault.vault._backend import GrantRow, RecordRow, RequestRow
from childvault.vault._policy import (
    ApprovalLimits,
    RecordState,
    approval_refusal,
    grant_refusal,
)
from childvault.vault._tokens import GrantClaims
from tests.conftest import World, add_children

DAY = date(2026, 11, 24)


def _row(purposes: tuple[str, ...] = ("statistics",)) -> RecordRow:
    consent = {"purposes": list(purposes), "notice_version": "2026-1", "by": "guardian"}
    return RecordRow("a" * 32, "child", 1, "", "", "", consent, "2032-01-01", {})


def _allowed(purpose: str) -> dict[str, tuple[str, ...]]:
    return {n: t.fields_for(purpose) for n, t in Schema.default().types.items()}


def test_default_schema_statistics_releases_no_field() -> None:
    child = Schema.default().record_type("child")
    assert child.fields_for("statistics") == ()
    # Every other purpose has a list, and none releases everything except case work.
    for purpose in Schema.default().purposes:
        assert set(child.fields_for(purpose)) <= set(child.fields)
    assert "case_notes" not in child.fields_for("education_support")
    assert "health" not in child.fields_for("social_assistance")
    assert "photo" not in child.fields_for("legal_protection")


def test_statistics_consent_cannot_request_names_or_phones(world: World) -> None:
    """Finding 1: refused at the request, naming the purpose."""
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1, purposes=("statistics",))
        with pytest.raises(UsageError, match="may not release"):
            v.request_access([rid], ["name", "guardian_phone", "case_notes"], "statistics", "x")
        with pytest.raises(UsageError, match="case_notes"):
            v.request_access([rid], ["name", "case_notes"], "education_support", "助学")


def test_approval_refuses_fields_outside_the_purpose() -> None:
    """An approval re-checks the list (a request filed under another schema version)."""
    req = RequestRow("b" * 32, "worker1", ("a" * 32,), ("name",), "statistics", "r", "", "pending")
    limits = ApprovalLimits(
        max_ttl=timedelta(hours=8),
        max_uses=5,
        max_records=50,
        notice_version="2026-1",
    )
    refusal = approval_refusal(
        req,
        "officer1",
        ttl=limits.max_ttl,
        uses=1,
        limits=limits,
        records=[RecordState("a" * 32, _row(), True)],
        day=DAY,
        allowed=_allowed("statistics"),
    )
    assert refusal is not None and refusal.reason == "purpose fields"
    ok = approval_refusal(
        replace(req, purpose="case_management"),
        "officer1",
        ttl=limits.max_ttl,
        uses=1,
        limits=limits,
        records=[RecordState("a" * 32, _row(("case_management",)), True)],
        day=DAY,
        allowed=_allowed("case_management"),
    )
    assert ok is None


def test_read_refuses_fields_outside_the_purpose() -> None:
    """A read re-checks the list against the token's purpose and fields."""
    moment = datetime(2026, 11, 24, 9, tzinfo=UTC)
    rid = "a" * 32
    claims = GrantClaims(
        jti="c" * 32,
        req="b" * 32,
        iss="officer1",
        sub="worker1",
        vault="v",
        rec=(rid,),
        fld=("name",),
        pur="statistics",
        iat=moment,
        nbf=moment,
        exp=moment + timedelta(hours=1),
        uses=1,
        keys=b"",
    )
    grant = GrantRow(claims.jti, claims.req, "officer1", "worker1", "", "", 1, 0, None, None, None)
    req = RequestRow(claims.req, "worker1", (rid,), ("name",), "statistics", "r", "", "approved")
    refusal = grant_refusal(
        claims,
        grant,
        req,
        [RecordState(rid, _row(), True)],
        day=DAY,
        allowed=_allowed("statistics"),
    )
    assert refusal is not None and "may not release name" in refusal.message


def test_schema_purpose_fields_must_list_every_purpose() -> None:
    src = Schema.default().source.decode()
    broken = src.replace("statistics = []\n", "")
    with pytest.raises(UsageError, match="must list every purpose"):
        Schema.loads(broken.encode())
    with pytest.raises(UsageError, match="not a field"):
        Schema.loads(src.replace("statistics = []", 'statistics = ["nope"]').encode())
