"""Issue 12: a revoked grant stays revoked whatever its ``grants`` row says. The
revocation is an officer's signed, chained ``grant.revoke`` entry; an insider who
clears ``revoked_at`` by SQL gets a logged refusal (exit 4), not a read."""

from __future__ import annotations

import pytest

from childvault.keys import ApprovalInvalid, IntegrityError
from childvault.vault import _audit
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
