"""The ``_cas`` forms of ``access.use_grant`` and ``access.decide`` (round 2, session 9).

The client queues them with its commit (approve and read in fewer round trips,
docs/server.md); the server answers None or fails the request where the plain
call answers False. What the server accepts is otherwise the plain call's:
these are the old attacks, sent with the new method names, and each still
fails (role, binding, the logged read at commit, the approval's parts together).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from childvault.keys import ApprovalInvalid
from childvault.vault._time import iso
from tests.attack import _wire
from tests.attack._wire import batch, call, log_rows, read, refused
from tests.server._vaultserver import VaultServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served."""
    yield from _wire.served_fixture(tmp_path_factory)


def test_staff_may_not_decide_through_the_cas_form(served: VaultServer) -> None:
    vs = served
    req = _wire.pending(vs)
    now = iso(datetime.now(UTC))
    r = batch(
        vs, "worker2", call("access", "decide_cas", req, status="denied", by="worker2", at=now)
    )
    refused(r, 403, "role")
    assert read(vs, "access", "request", req).status == "pending"


def test_a_cas_decision_is_bound_and_needs_the_rest_of_the_approval(served: VaultServer) -> None:
    vs = served
    req = _wire.pending(vs)
    before = read(vs, "audit", "head")
    # In another officer's name: refused before anything runs.
    calls, row = _wire.approval(vs, "officer1", req, by="officer2")
    refused(batch(vs, "officer1", *calls), 403, "binding")
    # Without its grant row and release key: refused at commit, nothing stored.
    calls, row = _wire.approval(vs, "officer1", req)
    refused(batch(vs, "officer1", calls[2], calls[3]), 409, "unverified")
    _wire.undecided(vs, req, row.id, before)
    # The honest approval's writes pass (the attacks above could have too).
    _wire.approve(vs, "officer1", req)
    # Decided now: a second approval of it fails as a whole (the decision's False).
    calls, again = _wire.approval(vs, "officer2", req)
    head = read(vs, "audit", "head")
    refused(batch(vs, "officer2", *calls), 409, "stale")
    assert read(vs, "access", "grant", again.id) is None
    assert read(vs, "audit", "head") == head


def test_a_cas_use_is_the_requesters_and_needs_its_logged_read(served: VaultServer) -> None:
    vs = served
    grant_id, token = _wire.approved(vs, "worker1")
    rows = log_rows(vs, vs.identity("worker1"), _wire.read_event(vs, "worker1", grant_id))
    # Another staff member uses worker1's grant: refused before anything runs.
    refused(batch(vs, "worker2", call("access", "use_grant_cas", grant_id)), 403, "binding")
    # The requester, without the read entry: refused at commit, the use not spent.
    refused(batch(vs, "worker1", call("access", "use_grant_cas", grant_id)), 409, "unverified")
    # ... and not released either: the redemption committed with it is rolled back too.
    r = batch(
        vs,
        "worker1",
        call("access", "use_grant_cas", grant_id),
        call("release", "redeem_at_commit", grant_id),
    )
    refused(r, 409, "unverified")
    assert read(vs, "access", "grant", grant_id).uses == 0
    # With its read entry: the use and the release in one request.
    r = batch(
        vs,
        "worker1",
        call("access", "use_grant_cas", grant_id),
        call("audit", "append", rows),
        call("release", "redeem_at_commit", grant_id),
    )
    result = _wire.ok(r)
    assert result[1][0] is None and isinstance(result[1][2], bytes)
    assert read(vs, "access", "grant", grant_id).uses == 1
    # Spent: the cas form fails the whole request, its read entry is not stored.
    head = read(vs, "audit", "head")
    rows = log_rows(vs, vs.identity("worker1"), _wire.read_event(vs, "worker1", grant_id))
    r = batch(
        vs,
        "worker1",
        call("access", "use_grant_cas", grant_id),
        call("audit", "append", rows),
        call("release", "redeem_at_commit", grant_id),
    )
    refused(r, 409, "stale")
    assert read(vs, "audit", "head") == head
    assert read(vs, "access", "grant", grant_id).uses == 1
    # The library's read then logs its denial with the plain call, as ever.
    with vs.connect("worker1") as staff, pytest.raises(ApprovalInvalid):
        staff.read_with_grant(token)
    assert read(vs, "audit", "head")[0] == head[0] + 1


def test_a_batch_begun_on_an_old_generation_runs_nothing(served: VaultServer) -> None:
    """``gen`` only adds a refusal: a batch begun on a generation the server has
    committed past runs none of its calls; on the current one it runs as without."""
    vs = served
    req = _wire.pending(vs)
    calls, row = _wire.approval(vs, "officer1", req)
    answer = _wire.post(vs, "officer1", "/v1/rpc", {"txn": None, **call("audit", "head")})
    assert answer.status_code == 200, answer.text
    gen = answer.json()["gen"]
    _wire.pending(vs)  # someone commits
    before = read(vs, "audit", "head")
    refused(batch(vs, "officer1", *calls, gen=gen), 409, "stale")
    _wire.undecided(vs, req, row.id, before)
    # Not a number, or without begin: malformed.
    refused(batch(vs, "officer1", *calls, gen="1"), 400, "malformed")
    refused(batch(vs, "officer1", call("audit", "head"), begin=False, gen=gen), 400, "malformed")
    # On the generation of the latest answer: the approval stands.
    answer = _wire.post(vs, "officer1", "/v1/rpc", {"txn": None, **call("audit", "head")})
    _wire.approve(vs, "officer1", req, gen=answer.json()["gen"])
