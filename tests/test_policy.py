"""The access rules of childvault.vault._policy, tested directly: pure functions, no vault."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from childvault.vault._backend import GrantRow, RecordRow, RequestRow, UserRow
from childvault.vault._policy import (
    ApprovalLimits,
    RecordState,
    Refusal,
    approval_refusal,
    grant_refusal,
    role_refusal,
    token_refusal,
)
from childvault.vault._tokens import GrantClaims

DAY = date(2026, 11, 24)
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
R1, R2 = "1" * 32, "2" * 32
LIMITS = ApprovalLimits(timedelta(hours=8), 10, 50, "2026-1")


def _row(rid: str = R1, **consent: Any) -> RecordRow:
    doc = {"purposes": ["case_management"], "notice_version": "2026-1", **consent}
    return RecordRow(rid, "child", 1, "t", "worker1", "t", doc, "2027-01-01", {})


def _request(**changes: Any) -> RequestRow:
    req = RequestRow(
        "a" * 32,
        "worker1",
        (R1, R2),
        ("name",),
        "case_management",
        "home visit",
        "t",
        "pending",
        None,
        None,
        None,
    )
    return dataclasses.replace(req, **changes)


def _live(*ids: str) -> list[RecordState]:
    return [RecordState(rid, _row(rid), True) for rid in ids]


def _approve(req: RequestRow | None = None, **kw: Any) -> Refusal | None:
    args: dict[str, Any] = {
        "ttl": timedelta(hours=1),
        "uses": 1,
        "limits": LIMITS,
        "records": _live(R1, R2),
        "day": DAY,
    }
    args.update(kw)
    return approval_refusal(req or _request(), "officer1", **args)


def test_role_rule() -> None:
    assert role_refusal({"staff"}, ("staff", "officer"), "w", "writing records") is None
    refusal = role_refusal({"admin", "staff"}, ("officer",), "w", "approving requests")
    assert refusal == Refusal(
        "role", "approving requests needs the role officer; 'w' has admin, staff"
    )


@given(st.sets(st.sampled_from(["staff", "officer", "admin"])), st.sampled_from(["a", "b"]))
def test_role_rule_refuses_exactly_without_a_shared_role(roles: set[str], actor: str) -> None:
    allowed = ("officer", "admin")
    refused = role_refusal(roles, allowed, actor, "x") is not None
    assert refused == (not roles & set(allowed))


def test_a_valid_approval_passes() -> None:
    assert _approve() is None


def test_approval_rules_in_order() -> None:
    own = _approve(_request(requester="officer1"))
    assert own is not None and (own.reason, own.kind) == ("own request", "denied")
    for ttl in (timedelta(0), timedelta(hours=9)):
        refusal = _approve(ttl=ttl)
        assert refusal is not None and (refusal.reason, refusal.kind) == ("ttl", "usage")
    for uses in (0, 11):
        refusal = _approve(uses=uses)
        assert refusal is not None and (refusal.reason, refusal.kind) == ("uses", "usage")
    cap = _approve(limits=dataclasses.replace(LIMITS, max_records=1))
    assert cap is not None and cap.reason == "cap"
    assert cap.message == "more than 1 records in one approval"
    # The own-request rule wins over every later one.
    both = _approve(_request(requester="officer1"), ttl=timedelta(0), uses=0)
    assert both is not None and both.reason == "own request"


def test_approval_record_rules() -> None:
    deleted = [RecordState(R1, _row(), False), *_live(R2)]
    assert _reason(_approve(records=deleted)) == "deleted"
    assert _reason(_approve(records=[RecordState(R1, None, True)])) == "deleted"
    old = [RecordState(R1, dataclasses.replace(_row(), retain_until="2026-11-23"), True)]
    assert _reason(_approve(records=old)) == "retention"
    last_day = [RecordState(R1, dataclasses.replace(_row(), retain_until="2026-11-24"), True)]
    assert _approve(records=last_day) is None
    other = [RecordState(R1, _row(purposes=["statistics"]), True)]
    assert _reason(_approve(records=other)) == "purpose"
    stale = [RecordState(R1, _row(notice_version="2025-1"), True)]
    refusal = _approve(records=stale)
    assert _reason(refusal) == "notice" and refusal is not None
    assert "'2025-1'" in refusal.message and "'2026-1'" in refusal.message
    # The first record that breaks a rule is named.
    two = [RecordState(R1, _row(purposes=[]), True), RecordState(R2, None, False)]
    refusal = _approve(records=two)
    assert _reason(refusal) == "purpose" and refusal is not None and R1 in refusal.message


def _reason(refusal: Refusal | None) -> str | None:
    return None if refusal is None else refusal.reason


def _claims(**changes: Any) -> GrantClaims:
    claims = GrantClaims(
        jti="g" * 32,
        req="a" * 32,
        iss="officer1",
        sub="worker1",
        vault="v" * 32,
        rec=(R1, R2),
        fld=("name",),
        pur="case_management",
        iat=NOW,
        nbf=NOW,
        exp=NOW + timedelta(hours=1),
        uses=2,
        keys=b"",
    )
    return dataclasses.replace(claims, **changes)


OFFICER = UserRow("officer1", ("officer",), b"e", b"s", "t", "admin")


def _token(claims: GrantClaims | None = None, **kw: Any) -> str | None:
    args: dict[str, Any] = {
        "vault_id": "v" * 32,
        "reader": "worker1",
        "moment": NOW + timedelta(minutes=1),
        "records": None,
        "fields": None,
    }
    signer = kw.pop("signer", OFFICER)
    args.update(kw)
    refusal = token_refusal(claims or _claims(), signer, **args)
    if refusal is not None:
        assert refusal.reason == refusal.message  # a read tells what the log records
    return _reason(refusal)


def test_token_rules() -> None:
    assert _token() is None
    staff = dataclasses.replace(OFFICER, roles=("staff",))
    assert _token(signer=staff) == "signed by officer1, who is not an officer"
    assert _token(_claims(iss="officer2")) == "issuer claim does not match the signing key"
    assert _token(_claims(vault="w" * 32)) == "token from another vault"
    assert _token(reader="worker2") == "token issued to worker1, not worker2"
    assert _token(moment=NOW - timedelta(seconds=1)) == "token not yet valid"
    assert _token(_claims(iat=NOW + timedelta(minutes=7))) == "token not yet valid"
    assert _token(moment=NOW + timedelta(hours=1)) == "token expired"
    assert _token(records=["3" * 32]) == "record outside the grant's scope"
    assert _token(records=[R2]) is None
    assert _token(fields=["address"]) == "field outside the grant's scope"


@given(st.integers(min_value=-3600, max_value=7200))
def test_token_window_is_half_open(offset: int) -> None:
    moment = NOW + timedelta(seconds=offset)
    ok = _token(moment=moment) is None
    assert ok == (NOW <= moment < NOW + timedelta(hours=1))


def _grant(**changes: Any) -> GrantRow:
    grant = GrantRow("g" * 32, "a" * 32, "officer1", "worker1", "t", "t", 2, 0, None, None, None)
    return dataclasses.replace(grant, **changes)


def _state(**kw: Any) -> str | None:
    claims = kw.pop("claims", _claims())
    args: dict[str, Any] = {
        "grant": _grant(),
        "req": _request(status="approved"),
        "records": _live(R1, R2),
    }
    args.update(kw)
    return _reason(grant_refusal(claims, args["grant"], args["req"], args["records"], day=DAY))


def test_grant_rules() -> None:
    assert _state() is None
    assert _state(grant=None) == "grant unknown to this vault"
    assert _state(grant=_grant(officer="officer2")) == "token does not match the recorded grant"
    assert _state(grant=_grant(revoked_at="t")) == "grant revoked"
    assert _state(grant=_grant(uses=2)) == "uses exhausted"
    assert _state(claims=_claims(uses=3), grant=_grant(max_uses=3, uses=0)) is None
    assert _state(claims=_claims(uses=1)) == "uses exhausted"
    for req in (None, _request(), _request(status="approved", fields=("name", "address"))):
        assert _state(req=req) == "token does not match the approved request"
    assert _state(records=[RecordState(R1, None, False)]) == f"record {R1} was deleted"
    narrowed = [RecordState(R1, _row(purposes=["statistics"]), True)]
    assert _state(records=narrowed) == f"record {R1} no longer has consent for case_management"
    old = [RecordState(R1, dataclasses.replace(_row(), retain_until="2026-11-23"), True)]
    assert _state(records=old) == f"record {R1} is past its retention date"
