"""A read's release key sent with the commit of its logged use (``release.redeem_at_commit``).

The library client sends the redemption with the commit of the use and its
``grant.read`` entry, one request (docs/server.md "Release after logging").
The server runs every check of ``release.redeem`` there; a refusal answers
None (the use and its entry still commit, and the client asks ``redeem``
alone, which refuses and logs as before). These are the old attacks on the
release, sent the new way by a modified client: none gets a key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from childvault.keys import AccessDenied, ApprovalInvalid
from childvault.server._vault import SERVER_ONLY
from childvault.vault._remote._codec import decode
from tests._insider import Insider
from tests.attack import _wire
from tests.attack._wire import batch, call, log_rows, ok, post, read, refused
from tests.server._vaultserver import VaultServer, count_requests


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served."""
    yield from _wire.served_fixture(tmp_path_factory)


def done(r: requests.Response) -> list[object]:
    """The results of a committed batch."""
    txn, results = ok(r)
    assert txn is None
    return list(results)


def _use(vs: VaultServer, user: str, grant_id: str) -> list[dict[str, object]]:
    """The calls of ``user``'s logged use of ``grant_id`` (use, then its read entry)."""
    # The entry the library logs (it names what was read: review RV9-3).
    rows = log_rows(vs, vs.identity(user), _wire.read_event(vs, user, grant_id))
    return [call("access", "use_grant", grant_id), call("audit", "append", rows)]


def test_the_key_comes_only_with_the_commit_of_a_logged_use(served: VaultServer) -> None:
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1", uses=2)
    # No use logged in the request: nothing released (and nothing refused).
    assert done(batch(vs, "worker1", call("release", "redeem_at_commit", grant_id))) == [None]
    # Before the use in the same batch: not yet logged, nothing released.
    early = done(
        batch(
            vs,
            "worker1",
            call("release", "redeem_at_commit", grant_id),
            *_use(vs, "worker1", grant_id),
        )
    )
    assert early == [None, True, None]
    # That use is logged now: redeem alone releases it, once.
    assert isinstance(done(batch(vs, "worker1", call("release", "redeem", grant_id)))[0], bytes)
    # After the second use in the same committing batch: its key, once.
    answer = done(
        batch(
            vs,
            "worker1",
            *_use(vs, "worker1", grant_id),
            call("release", "redeem_at_commit", grant_id),
        )
    )
    assert answer[:2] == [True, None]
    assert isinstance(answer[2], bytes) and len(answer[2]) == 32
    # Both uses released: nothing more, however it is asked for.
    refused(batch(vs, "worker1", call("release", "redeem", grant_id)), 403, "release_refused")
    assert done(batch(vs, "worker1", call("release", "redeem_at_commit", grant_id))) == [None]


def test_no_key_in_a_request_that_does_not_commit(served: VaultServer) -> None:
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1")
    # Reads alone, outside a transaction: a write is refused before anything runs.
    r = batch(
        vs,
        "worker1",
        call("release", "redeem_at_commit", grant_id),
        begin=False,
        commit=False,
        txn=None,
    )
    refused(r, 400, "malformed")
    # Inside a transaction that this request does not commit: no key, even after the use.
    r = batch(
        vs,
        "worker1",
        *_use(vs, "worker1", grant_id),
        call("release", "redeem_at_commit", grant_id),
        commit=False,
    )
    assert r.status_code == 200, r.text
    txn, results = decode(r.json()["result"])
    assert results[-1] is None
    assert post(vs, "worker1", "/v1/txn/rollback", {"txn": txn}).status_code == 200
    # Rolled back: the use is still there, and released with its logged commit.
    answer = done(
        batch(
            vs,
            "worker1",
            *_use(vs, "worker1", grant_id),
            call("release", "redeem_at_commit", grant_id),
        )
    )
    assert isinstance(answer[2], bytes)


def test_another_user_and_a_refused_commit_release_nothing(served: VaultServer) -> None:
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1")
    # Another staff member logs a "use" of worker1's grant and asks for its key.
    rows = log_rows(vs, vs.identity("worker2"), _wire.read_event(vs, "worker2", grant_id))
    r = batch(
        vs, "worker2", call("audit", "append", rows), call("release", "redeem_at_commit", grant_id)
    )
    assert done(r) == [None, None]
    # The requester's use with a read entry whose signature is not theirs: the
    # commit is refused, so the key computed before it never leaves the server.
    rows = log_rows(vs, vs.identity("worker2"), _wire.read_event(vs, "worker1", grant_id))
    r = batch(
        vs,
        "worker1",
        call("access", "use_grant", grant_id),
        call("audit", "append", rows),
        call("release", "redeem_at_commit", grant_id),
    )
    assert r.status_code != 200 and "result" not in r.json(), r.text
    # Nothing of it stored: the one use is still there, and released after its logged read.
    assert read(vs, "access", "grant", grant_id).uses == 0
    answer = done(
        batch(
            vs,
            "worker1",
            *_use(vs, "worker1", grant_id),
            call("release", "redeem_at_commit", grant_id),
        )
    )
    assert isinstance(answer[2], bytes)


def test_a_refused_release_is_asked_alone_and_logged(served: VaultServer) -> None:
    """The honest client: a release refused at the commit (here its release key row
    deleted by an insider) is asked again alone, refused, and the read fails with
    its use given back and logged, as when redeem was always asked alone."""
    vs = served
    grant_id, token = _wire.approved(vs, "worker1")
    with Insider(vs.home, vs.identity("officer2")) as insider:
        assert insider.delete("meta", where={"key": SERVER_ONLY + "release/" + grant_id}) == 1
    with vs.connect("worker1") as staff:
        sent = count_requests(staff)
        with pytest.raises((AccessDenied, ApprovalInvalid)):
            staff.read_with_grant(token)
    calls = [c for _, request in sent for c in request]
    assert calls.count("release.redeem_at_commit") == 1 and calls.count("release.redeem") == 1
    # The use was given back, and the failure logged after the read entry.
    assert read(vs, "access", "grant", grant_id).uses == 0
    logged = [
        json.loads(entry)
        for entry in read(vs, "audit", "entries_by_ref", ["grant.read"], grant=grant_id)
    ]
    assert [e["outcome"] for e in logged] == ["ok", "error"]
