"""A requester against the server: spent grants, a raced one-use grant, captured requests.

The honest path is the library client (``Vault.connect``); the attacks are
``_wire`` requests, signed correctly, sent as a modified client or a
network attacker holding a captured request would send them.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import requests

from childvault.keys import ApprovalInvalid, ChildVaultError
from tests.attack import _wire
from tests.attack._wire import batch, call, log_rows, read, refused, send
from tests.server._vaultserver import VaultServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served."""
    yield from _wire.served_fixture(tmp_path_factory)


def _logged_use(vs: VaultServer, grant_id: str) -> None:
    """worker1 consumes one use of ``grant_id`` with its read entry (as a client does
    before redeeming), without redeeming."""
    rows = log_rows(vs, vs.identity("worker1"), _wire.read_event(vs, "worker1", grant_id))
    r = batch(vs, "worker1", call("access", "use_grant", grant_id), call("audit", "append", rows))
    assert _wire.ok(r) == [None, [True, None]]


def test_a_raced_one_use_grant_reads_once(served: VaultServer) -> None:
    """Two clients of the requester read a one-use grant at the same moment."""
    vs = served
    grant_id, token = _wire.approved(vs, "worker1")
    start = threading.Barrier(2, timeout=60)

    def reader(_: int) -> Any:
        with vs.connect("worker1") as staff:
            start.wait()
            try:
                return staff.read_with_grant(token)
            except ChildVaultError as exc:
                return exc

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(reader, range(2)))
    read_ok = [r for r in results if isinstance(r, dict)]
    assert len(read_ok) == 1, results
    assert [type(r) for r in results if not isinstance(r, dict)] == [ApprovalInvalid]
    assert read(vs, "access", "grant", grant_id).uses == 1
    # Spent: the release is refused however it is asked for.
    refused(batch(vs, "worker1", call("release", "redeem", grant_id)), 403, "release_refused")


def test_two_raced_redemptions_of_one_logged_use_release_once(served: VaultServer) -> None:
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1")
    _logged_use(vs, grant_id)
    bodies = [
        _wire.prepared(
            vs,
            "worker1",
            "/v1/rpc/batch",
            {"begin": True, "commit": True, "calls": [call("release", "redeem", grant_id)]},
        )
        for _ in range(2)
    ]
    start = threading.Barrier(2, timeout=60)

    def go(p: requests.PreparedRequest) -> requests.Response:
        start.wait()
        return send(p)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(go, bodies))
    assert sorted(r.status_code for r in answers) == [200, 403], [r.text for r in answers]
    assert [r.json()["reason"] for r in answers if r.status_code == 403] == ["release_refused"]


def test_a_revoked_or_used_up_grant_releases_nothing(served: VaultServer) -> None:
    vs = served
    grant_id, token = _wire.approved(vs, "worker1", uses=2)
    with vs.connect("worker1") as staff:
        staff.read_with_grant(token)
    with vs.connect("officer1") as officer:
        officer.revoke(grant_id)
    # A use consumed after the revocation is refused by the database row ...
    rows = log_rows(vs, vs.identity("worker1"), _wire.read_event(vs, "worker1", grant_id))
    r = batch(vs, "worker1", call("access", "use_grant", grant_id), call("audit", "append", rows))
    assert _wire.ok(r) == [None, [False, None]]
    # ... and a release of the one use left is refused by the server.
    r = batch(vs, "worker1", call("release", "redeem", grant_id))
    refused(r, 403, "release_refused")
    assert "revoked" in r.json()["error"]
    # Used up: one use, read and released; the next release is refused.
    grant_id, token = _wire.approved(vs, "worker1", uses=1)
    with vs.connect("worker1") as staff:
        staff.read_with_grant(token)
    r = batch(vs, "worker1", call("release", "redeem", grant_id))
    refused(r, 403, "release_refused")
    assert "no logged use left" in r.json()["error"]


def test_an_expired_grant_releases_nothing(served: VaultServer) -> None:
    vs = served
    ids = _wire.record_ids(vs)[:1]
    with vs.connect("worker1") as staff:
        req = staff.request_access(ids, ["name"], "case_management", "home visit")
    with vs.connect("officer1") as officer:
        approval = officer.approve(req, ttl=timedelta(seconds=1))
    grant = read(vs, "access", "grant", approval.grant_id)
    # Wait until the server's own clock is past the grant's expiry (bounded).
    deadline = time.monotonic() + 30
    while time.time() <= _wire.epoch(grant.expires_at) + 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    with vs.connect("worker1") as staff, pytest.raises(ApprovalInvalid):
        staff.read_with_grant(approval.token)
    # A modified client consumes a use anyway (the row has no expiry check) ...
    _logged_use(vs, approval.grant_id)
    # ... and the release, which decides, refuses it.
    r = batch(vs, "worker1", call("release", "redeem", approval.grant_id))
    refused(r, 403, "release_refused")
    assert "expired" in r.json()["error"]


def _sig_input(p: requests.PreparedRequest) -> str:
    return str(p.headers["Signature-Input"])


def test_a_captured_request_cannot_be_moved_or_renewed(served: VaultServer) -> None:
    """A network attacker (or the requester) holding one signed request: replayed,
    sent to another route, given a query, or given a fresh nonce under the same
    signature: all refused, and the captured call ran once."""
    vs = served
    req = _wire.request_row("worker1")
    doc = {"begin": True, "commit": True, "calls": [call("access", "add_request", req)]}
    captured = _wire.prepared(vs, "worker1", "/v1/rpc/batch", doc)
    assert send(captured.copy()).status_code == 200
    refused(send(captured.copy()), 401, "replay")
    # Another route under the same signature (the body a valid batch there too).
    moved = captured.copy()
    moved.url = vs.url + "/v1/rpc"
    refused(send(moved), 401, "invalid_signature")
    # A query the signature does not cover.
    queried = captured.copy()
    queried.url = vs.url + "/v1/rpc/batch?txn=1"
    assert send(queried).status_code == 401
    # A new nonce under the old signature.
    renewed = captured.copy()
    renewed.headers["Signature-Input"] = re.sub(
        r'nonce="[^"]+"', 'nonce="' + "f" * 32 + '"', _sig_input(captured)
    )
    assert renewed.headers["Signature-Input"] != _sig_input(captured)
    refused(send(renewed), 401, "invalid_signature")
    # The same signed body under a fresh signature of another user.
    other = _wire.prepared(vs, "worker2", "/v1/rpc/batch", doc)
    other.headers["Signature"] = captured.headers["Signature"]
    refused(send(other), 401, "invalid_signature")
    assert read(vs, "access", "request", req.id) == req
    assert _wire.refusal_logged(vs, "worker1", "invalid_signature")
