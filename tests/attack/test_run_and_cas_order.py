"""Runs, generations and the order of an approval's or a read's calls, at the
server (review RV11 of session 9's one signature per run and session 10's
approve and read in two round trips).

Each attack is a correctly signed request by a signed-in user that skips its
library: a staff member's run holding an officer's action unsigned inside it;
a run signature over a later first entry; a batch naming a generation the
server has not reached; an approval's release key asked before its grant row;
a redemption queued before the read entry it needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from childvault.vault import _audit
from tests.attack import _wire
from tests.attack._wire import batch, call, log_rows, read, refused
from tests.server._vaultserver import VaultServer
from tests.server.test_run_signatures import _rows


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served."""
    yield from _wire.served_fixture(tmp_path_factory)


def _append(vs: VaultServer, user: str, rows: list[Any]) -> requests.Response:
    return batch(vs, user, call("audit", "append", rows))


def test_an_officers_action_unsigned_inside_a_staff_run_is_refused(served: VaultServer) -> None:
    """``incident.open`` is an officer's (ROLE_ACTIONS) and not signed alone: inside
    a run it carries no signature of its own, and is still judged by its role."""
    vs = served
    w1 = vs.identity("worker1")
    before = read(vs, "audit", "head")
    rows = _rows(vs, "worker1", ["record.list", "incident.open", "record.list"], w1)
    assert [r[3] is None for r in rows] == [True, True, False]
    refused(_append(vs, "worker1", rows), 403, "role")
    assert read(vs, "audit", "head") == before
    # The same run without the officer's action is taken: the refusal was the role.
    rows = _rows(vs, "worker1", ["record.list"] * 3, w1)
    assert _append(vs, "worker1", rows).status_code == 200
    assert read(vs, "audit", "head")[0] == before[0] + 3


def test_a_run_signature_over_a_later_first_entry_is_refused(served: VaultServer) -> None:
    """Signed over the run's second entry as its first: the first entry would be
    stored unsigned, covered by nothing its author signed."""
    vs = served
    w1 = vs.identity("worker1")
    rows = _rows(vs, "worker1", ["record.list"] * 3, w1)
    last = rows[-1]
    shorter = w1.sign(_audit.run_message(rows[1][0], last[2]))
    before = read(vs, "audit", "head")
    refused(_append(vs, "worker1", [*rows[:2], (*last[:3], shorter)]), 403, "unverified")
    assert read(vs, "audit", "head") == before


def test_a_generation_the_server_has_not_reached_runs_nothing(served: VaultServer) -> None:
    vs = served
    req = _wire.pending(vs)
    calls, row = _wire.approval(vs, "officer1", req)
    answer = _wire.post(vs, "officer1", "/v1/rpc", {"txn": None, **call("audit", "head")})
    gen = answer.json()["gen"]
    before = read(vs, "audit", "head")
    for future in (gen + 1, -gen):
        refused(batch(vs, "officer1", *calls, gen=future), 409, "stale")
    # Not a whole number: malformed (JSON true is no generation either), nor one
    # past 64 bits (refused as the body is parsed, review FX-4).
    for wrong in (float(gen), True, str(gen), gen + 2**64):
        refused(batch(vs, "officer1", *calls, gen=wrong), 400, "malformed")
    _wire.undecided(vs, req, row.id, before)


def test_a_release_key_asked_before_its_grant_row_is_refused(served: VaultServer) -> None:
    vs = served
    req = _wire.pending(vs)
    calls, row = _wire.approval(vs, "officer1", req)
    add_grant, new_key, decide, append = calls
    before = read(vs, "audit", "head")
    refused(batch(vs, "officer1", new_key, add_grant, decide, append), 409, "unverified")
    _wire.undecided(vs, req, row.id, before)
    # In the library's order the same calls stand.
    _wire.approve(vs, "officer1", req)


def test_a_redemption_queued_before_its_read_entry_releases_nothing(
    served: VaultServer,
) -> None:
    """The read's use, its redemption, then its entry: the redemption sees no logged
    use, answers None and changes nothing; the use and its entry commit. The
    logged use is then redeemed once by the plain call, and only once."""
    vs = served
    grant_id, _token = _wire.approved(vs, "worker1")
    rows = log_rows(vs, vs.identity("worker1"), _wire.read_event(vs, "worker1", grant_id))
    r = batch(
        vs,
        "worker1",
        call("access", "use_grant_cas", grant_id),
        call("release", "redeem_at_commit", grant_id),
        call("audit", "append", rows),
    )
    assert _wire.ok(r)[1] == [None, None, None]
    assert read(vs, "access", "grant", grant_id).uses == 1
    key = _wire.ok(batch(vs, "worker1", call("release", "redeem", grant_id)))[1][0]
    assert isinstance(key, bytes) and len(key) == 32
    refused(batch(vs, "worker1", call("release", "redeem", grant_id)), 403, "release_refused")
