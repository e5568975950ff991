"""Issue 12: a revoked grant stays revoked whatever its ``grants`` row says. The
revocation is an officer's signed, chained ``grant.revoke`` entry; an insider who
clears ``revoked_at`` by SQL gets a logged refusal (exit 4), not a read."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from childvault.keys import ApprovalInvalid, IntegrityError
from childvault.vault import _audit
from childvault.vault._svc_access_reads import spent_uses
from childvault.vault._time import iso
from tests._insider import Insider
from tests.conftest import World, add_children
from tests.insider._helpers import refusals, request


def _reads(world: World, grant: str) -> list[str]:
    """The outcomes of the logged reads with ``grant``."""
    with world.open("admin") as v:
        entries = [
            _audit.decode_entry(e) for e in v._session.db.audit.entries_by_action(("grant.read",))
        ]
    return [str(e["outcome"]) for e in entries if e.get("grant") == grant]


def test_a_revocation_cleared_by_sql_is_refused(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 1)
    req = request(world, ids)
    with world.open("officer1") as v:
        approval = v.approve(req)
        v.revoke(approval.grant_id)
    with world.open("worker1") as v, pytest.raises(ApprovalInvalid):
        v.read_with_grant(approval.token)
    with Insider(world, "worker2") as insider:
        insider.update(
            "grants", {"revoked_at": None, "revoked_by": None}, {"id": approval.grant_id}
        )
        assert insider.rows("grants", ["revoked_at"], where={"id": approval.grant_id}) == [(None,)]
    with world.open("worker1") as v, pytest.raises(IntegrityError, match="revoked in the log"):
        v.read_with_grant(approval.token)
    assert [e["actor"] for e in refusals(world, "grant.read")] == ["worker1"]
    # No read got through: the first attempt was denied, nothing was logged ok.
    assert "ok" not in _reads(world, approval.grant_id)


def test_a_revocation_logged_by_staff_counts_for_nothing(world: World) -> None:
    """Only an officer's entry revokes: staff logging a ``grant.revoke`` in their
    own name (any user may append entries) does not stop the requester's read."""
    with world.open("worker1") as v:
        ids = add_children(v, 1)
    req = request(world, ids)
    with world.open("officer1") as v:
        approval = v.approve(req)
    with world.open("worker2") as v:
        v._session.log(
            [_audit.Event("worker2", "grant.revoke", request=req, grant=approval.grant_id)],
            v._session.now(),
        )
    with world.open("worker1") as v:
        assert v.read_with_grant(approval.token)[ids[0]]["name"] == "测试儿童0"


def test_a_use_counter_reset_by_sql_is_refused(world: World) -> None:
    """The uses a grant has left come from the requester's logged reads, not the
    ``grants.uses`` counter any user may reset by SQL (was a limit SECURITY.md
    admitted, pinned by reliability/test_insider_limits.py)."""
    with world.open("worker1") as v:
        ids = add_children(v, 1)
    req = request(world, ids)
    with world.open("officer1") as v:
        approval = v.approve(req, uses=2)
    with world.open("worker1") as v:
        for _ in range(2):
            assert v.read_with_grant(approval.token)[ids[0]]["name"] == "测试儿童0"
        with pytest.raises(ApprovalInvalid):
            v.read_with_grant(approval.token)
    with Insider(world, "worker1") as insider:
        insider.update("grants", {"uses": 0}, where={"id": approval.grant_id})
    with world.open("worker1") as v, pytest.raises(IntegrityError, match="spent in the log"):
        v.read_with_grant(approval.token)
    assert [e["actor"] for e in refusals(world, "grant.read")] == ["worker1"]
    # Refused before a use was taken: no third read was logged ok.
    assert _reads(world, approval.grant_id) == ["ok", "ok", "denied"]


def test_a_partly_reset_counter_allows_only_the_uses_the_log_leaves(world: World) -> None:
    """Resetting the counter after one read of two leaves one read, not two."""
    with world.open("worker1") as v:
        ids = add_children(v, 1)
    req = request(world, ids)
    with world.open("officer1") as v:
        approval = v.approve(req, uses=2)
    with world.open("worker1") as v:
        v.read_with_grant(approval.token)
    with Insider(world, "worker1") as insider:
        insider.update("grants", {"uses": 0}, where={"id": approval.grant_id})
    with world.open("worker1") as v:
        assert v.read_with_grant(approval.token)[ids[0]]["name"] == "测试儿童0"
        with pytest.raises(IntegrityError, match="spent in the log"):
            v.read_with_grant(approval.token)
    assert _reads(world, approval.grant_id) == ["ok", "ok"]


_GRANT = "a" * 32


def _entries(*reads: tuple[str, str, str | None]) -> list[dict[str, object]]:
    """``grant.read`` entries of ``_GRANT`` as the log stores them, numbered from 1:
    each ``(actor, outcome, reason)``."""
    out = []
    for seq, (actor, outcome, reason) in enumerate(reads, start=1):
        event = _audit.Event(
            actor,
            "grant.read",
            outcome,
            grant=_GRANT,
            detail={} if reason is None else {"reason": reason},
        )
        raw = _audit.encode_entry(seq, iso(datetime(2026, 12, 1, tzinfo=UTC)), event, b"\0" * 32)
        out.append(json.loads(raw))
    return out


def test_spent_uses_counts_exactly_what_took_a_use() -> None:
    """Refused attempts take none; a read that failed after logging keeps its use;
    the two give-backs (witness, key provider) each return one earlier use."""
    log = _entries(
        ("worker1", "denied", "uses exhausted or revoked"),
        ("worker1", "ok", None),
        ("worker1", "error", "key provider: ProviderUnavailable"),
        ("worker1", "ok", None),
        ("worker1", "error", "witness not written"),
        ("worker1", "ok", None),
        ("worker1", "error", "cached grant keys are malformed"),
        ("worker1", "ok", None),
    )
    assert spent_uses(log, _GRANT, "worker1", verified=len(log) + 1) == 2
    # Someone else's entries naming the grant (anyone may log them) count for nothing.
    assert spent_uses(log, _GRANT, "worker2", verified=len(log) + 1) == 0
    assert spent_uses(log, "b" * 32, "worker1", verified=len(log) + 1) == 0


def test_spent_uses_gives_back_no_use_that_was_not_taken() -> None:
    """A give-back before any read, or beyond the verified log, returns nothing."""
    early = _entries(
        ("worker1", "error", "witness not written"),
        ("worker1", "ok", None),
    )
    assert spent_uses(early, _GRANT, "worker1", verified=3) == 1
    late = _entries(
        ("worker1", "ok", None),
        ("worker1", "error", "key provider: AccessDenied"),
    )
    assert spent_uses(late, _GRANT, "worker1", verified=3) == 0
    assert spent_uses(late, _GRANT, "worker1", verified=2) == 1
