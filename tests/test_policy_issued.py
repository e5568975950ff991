"""The approval rules a server decides from a stored grant row (findings A-4, A-5):
``_policy.issued_grant_refusal`` and ``basis_fields``, tested directly (no vault)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from childvault.vault._backend import GrantRow, RecordRow, RequestRow
from childvault.vault._policy import (
    CONTACT_FIELDS,
    RecordState,
    basis_fields,
    issued_grant_refusal,
)
from childvault.vault._time import iso

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
R1, R2 = "1" * 32, "2" * 32
#: The schema's purpose lists for case management (record type -> fields).
ALLOWED = {"child": ("name", "guardian_phone")}


def _row(rid: str) -> RecordRow:
    consent = {"purposes": ["case_management"], "notice_version": "2026-1"}
    return RecordRow(rid, "child", 1, "t", "worker1", "t", consent, "2027-01-01", {})


def _request(**changes: Any) -> RequestRow:
    req = RequestRow(
        "a" * 32, "worker1", (R1, R2), ("name",), "case_management", "r", "t", "approved"
    )
    return dataclasses.replace(req, **changes)


def _grant(issued: datetime = NOW, ttl: timedelta = timedelta(hours=1), uses: int = 1) -> GrantRow:
    return GrantRow(
        "b" * 32, "a" * 32, "officer1", "worker1", iso(issued), iso(issued + ttl), uses, 0,
        None, None, None,
    )  # fmt: skip


def _reason(req: RequestRow | None = None, grant: GrantRow | None = None, **kw: Any) -> str | None:
    grant = grant or _grant()
    args: dict[str, Any] = {
        "issued": datetime.fromisoformat(grant.issued_at),
        "expires": datetime.fromisoformat(grant.expires_at),
        "now": NOW,
        "max_ttl": timedelta(hours=8),
        "max_uses": 10,
        "max_records": 50,
        "records": [RecordState(r, _row(r), True) for r in (R1, R2)],
        "allowed": ALLOWED,
        "basis": "consent",
        "cosigners": (),
    }
    args.update(kw)
    refusal = issued_grant_refusal(req or _request(), grant, **args)
    return None if refusal is None else refusal.reason


def test_an_approval_within_the_rules_passes() -> None:
    assert _reason() is None
    # Issued a while ago (a slow approval): its TTL only ends sooner.
    assert _reason(grant=_grant(issued=NOW - timedelta(minutes=30))) is None
    assert _reason(grant=_grant(ttl=timedelta(hours=8), uses=10)) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"req": _request(requester="officer1")}, "own request"),
        ({"grant": _grant(issued=NOW + timedelta(hours=1))}, "issued"),
        ({"grant": _grant(ttl=timedelta(hours=8, seconds=1))}, "ttl"),
        ({"grant": _grant(ttl=timedelta(0))}, "ttl"),
        ({"grant": _grant(uses=11)}, "uses"),
        ({"grant": _grant(uses=0)}, "uses"),
        ({"max_records": 1}, "cap"),
        ({"records": [RecordState(R1, None, False)]}, "deleted"),
        ({"records": [RecordState(R1, _row(R1), False)]}, "deleted"),
        ({"req": _request(fields=("name", "id_number"))}, "purpose fields"),
        ({"basis": "legal_obligation"}, "cosign"),
        ({"basis": "legal_obligation", "cosigners": ("worker1",)}, "cosign"),
    ],
)
def test_each_rule_refuses(changes: dict[str, Any], reason: str) -> None:
    assert _reason(**changes) == reason


def test_a_second_officer_satisfies_a_legal_obligation() -> None:
    assert _reason(basis="legal_obligation", cosigners=("officer2",)) is None


def test_the_basis_decides_the_fields() -> None:
    assert basis_fields("consent", ALLOWED) == ALLOWED
    assert basis_fields("legal_obligation", ALLOWED) == ALLOWED
    assert basis_fields("subject_access", ALLOWED) is None
    assert basis_fields("breach_notification", ALLOWED) == {"child": CONTACT_FIELDS}
    # A subject-access request may release any field of the subject's record.
    req = _request(fields=("name", "id_number"))
    assert _reason(req, allowed=basis_fields("subject_access", ALLOWED)) is None
