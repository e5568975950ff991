"""``POST /v1/rpc/batch`` refuses exactly what single ``/v1/rpc`` calls refuse.

A batch carries several backend calls (and may open and commit its
transaction): each call is authorised, bound to the caller and, for log
entries, verified as a single call is; a batch holding one call the server
refuses stores nothing. The batches here are signed by hand, as a client
that skips its own checks would send them.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from childvault.keys import AccessDenied, Identity
from childvault.vault import _audit
from childvault.vault._audit import Event
from childvault.vault._backend import RequestRow
from childvault.vault._httpsig import HTTPSignatureAuth
from childvault.vault._merkle import leaf_hash
from childvault.vault._remote._codec import decode, encode
from childvault.vault._time import iso
from tests.server._vaultserver import VaultServer, make_vault


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The test vault, served (no records needed: requests and log entries are written)."""
    vs = make_vault(tmp_path_factory.mktemp("vault"), ("officer1", "worker1", "worker2"))
    vs.start()
    try:
        yield vs
    finally:
        vs.stop()


def _call(repo: str, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"repo": repo, "method": method, "args": encode(list(args)), "kwargs": encode(kwargs)}


def _prepared(vs: VaultServer, user: str, path: str, doc: dict[str, Any]) -> Any:
    return requests.Request(
        "POST",
        vs.url + path,
        data=json.dumps(doc).encode(),
        headers={"Content-Type": "application/json"},
        auth=HTTPSignatureAuth(vs.identity(user)),
    ).prepare()


def _post(vs: VaultServer, user: str, path: str, doc: dict[str, Any]) -> requests.Response:
    with requests.Session() as http:
        return http.send(_prepared(vs, user, path, doc), timeout=60)


def _batch(vs: VaultServer, user: str, *calls: dict[str, Any], **doc: Any) -> requests.Response:
    """One signed batch by ``user``: by default it opens and commits its transaction."""
    body = {"begin": True, "commit": True, **doc, "calls": list(calls)}
    return _post(vs, user, "/v1/rpc/batch", body)


def _read(vs: VaultServer, repo: str, method: str, *args: Any) -> Any:
    r = _post(vs, "officer1", "/v1/rpc", {"txn": None, **_call(repo, method, *args)})
    assert r.status_code == 200, r.text
    return decode(r.json()["result"])


def _request(requester: str) -> RequestRow:
    return RequestRow(
        id=secrets.token_hex(16),
        requester=requester,
        records=("0" * 32,),
        fields=("name",),
        purpose="case_management",
        reason="batch test",
        created_at=iso(datetime.now(UTC)),
        status="pending",
    )


def _log_rows(
    vs: VaultServer, actor: str, signer: Identity, n: int = 1
) -> list[tuple[int, bytes, bytes, bytes]]:
    """``n`` log rows in ``actor``'s name after the current head, signed by ``signer``."""
    seq, prev = _read(vs, "audit", "head")
    rows = []
    for _ in range(n):
        # An action any user may log (a checkpoint is an officer's or an admin's).
        entry = _audit.encode_entry(seq, iso(datetime.now(UTC)), Event(actor, "record.list"), prev)
        digest = leaf_hash(entry)
        rows.append((seq, entry, digest, signer.sign(_audit.entry_message(digest))))
        seq, prev = seq + 1, digest
    return rows


def _refused(r: requests.Response, status: int, reason: str) -> None:
    assert (r.status_code, r.json().get("reason")) == (status, reason), r.text


def test_an_honest_batch_opens_runs_and_commits_in_one_request(served: VaultServer) -> None:
    vs = served
    req = _request("worker1")
    before = _read(vs, "audit", "head")
    r = _batch(
        vs,
        "worker1",
        _call("access", "add_request", req),
        _call("audit", "append", _log_rows(vs, "worker1", vs.identity("worker1"))),
        _call("access", "request", req.id),
    )
    assert r.status_code == 200, r.text
    txn, results = decode(r.json()["result"])
    assert txn is None  # committed
    assert results[0] is None and results[1] is None
    assert results[2] == req  # a later call of the batch sees the earlier writes
    assert _read(vs, "access", "request", req.id) == req
    assert _read(vs, "audit", "head")[0] == before[0] + 1


def test_a_staff_batch_with_one_forbidden_call_stores_nothing(served: VaultServer) -> None:
    vs = served
    req = _request("worker1")
    r = _batch(
        vs,
        "worker1",
        _call("access", "add_request", req),
        _call("access", "decide", req.id, status="approved", by="worker1", at="x", reason=None),
    )
    _refused(r, 403, "role")
    assert _read(vs, "access", "request", req.id) is None
    assert any(f["reason"] == "role" and f["claimed_user"] == "worker1" for f in vs.refusals())


def test_a_batch_binding_another_user_stores_nothing(served: VaultServer) -> None:
    vs = served
    mine, theirs = _request("worker1"), _request("worker2")
    r = _batch(
        vs,
        "worker1",
        _call("access", "add_request", mine),
        _call("access", "add_request", theirs),
    )
    _refused(r, 403, "binding")
    assert _read(vs, "access", "request", mine.id) is None
    assert _read(vs, "access", "request", theirs.id) is None


def test_a_batch_whose_log_entry_has_a_wrong_signature_stores_nothing(
    served: VaultServer,
) -> None:
    vs = served
    before = _read(vs, "audit", "head")
    req = _request("worker1")
    # In worker1's name but signed with worker2's key.
    forged = _log_rows(vs, "worker1", vs.identity("worker2"))
    r = _batch(vs, "worker1", _call("access", "add_request", req), _call("audit", "append", forged))
    _refused(r, 403, "unverified")
    # In another's name (signed by the caller).
    other = _log_rows(vs, "officer1", vs.identity("worker1"))
    r = _batch(vs, "worker1", _call("access", "add_request", req), _call("audit", "append", other))
    _refused(r, 403, "binding")
    # A second, honest entry does not carry a forged one through.
    rows = _log_rows(vs, "worker1", vs.identity("worker1"), 2)
    seq, entry, digest, _ = rows[1]
    rows[1] = (seq, entry, digest, vs.identity("worker2").sign(_audit.entry_message(digest)))
    r = _batch(
        vs, "worker1", _call("audit", "append", rows[:1]), _call("audit", "append", rows[1:])
    )
    _refused(r, 403, "unverified")
    assert _read(vs, "audit", "head") == before
    assert _read(vs, "access", "request", req.id) is None


def test_a_replayed_batch_is_refused_and_runs_once(served: VaultServer) -> None:
    vs = served
    req = _request("worker1")
    prepared = _prepared(
        vs,
        "worker1",
        "/v1/rpc/batch",
        {"begin": True, "commit": True, "calls": [_call("access", "add_request", req)]},
    )
    with requests.Session() as http:
        first = http.send(prepared, timeout=60)
        again = http.send(prepared, timeout=60)
    assert first.status_code == 200, first.text
    _refused(again, 401, "replay")
    assert _read(vs, "access", "request", req.id) == req


def test_an_unknown_or_malformed_call_stores_nothing(served: VaultServer) -> None:
    vs = served
    req = _request("worker1")
    add = _call("access", "add_request", req)
    _refused(_batch(vs, "worker1", add, _call("records", "drop_everything")), 400, "unknown_method")
    bad = {**_call("access", "request", req.id), "args": [{"$d": "Identity", "v": {}}]}
    _refused(_batch(vs, "worker1", add, bad), 400, "malformed")
    _refused(_batch(vs, "worker1", add, begin=True, txn="0" * 32), 400, "malformed")
    _refused(_batch(vs, "worker1", add, begin=False), 400, "malformed")
    _refused(_batch(vs, "worker1", add, commit="yes"), 400, "malformed")
    _refused(_batch(vs, "worker1", add, txn="0" * 32, begin=False), 409, "no_transaction")
    assert _read(vs, "access", "request", req.id) is None


def test_a_failed_call_rolls_back_the_batch_that_commits(served: VaultServer) -> None:
    """A call that fails as it runs (a log row not linked to the head) undoes the
    batch's earlier writes and leaves the vault free for the next client."""
    vs = served
    req = _request("worker1")
    rows = _log_rows(vs, "worker1", vs.identity("worker1"))
    seq, entry, digest, sig = rows[0]
    r = _batch(
        vs,
        "worker1",
        _call("access", "add_request", req),
        _call("audit", "append", [(seq + 5, entry, digest, sig)]),
    )
    _refused(r, 409, "unverified")
    assert _read(vs, "access", "request", req.id) is None
    # Nothing holds the vault: another client's batch runs at once.
    other = _request("worker2")
    assert _batch(vs, "worker2", _call("access", "add_request", other)).status_code == 200


def test_the_library_client_batches_a_transaction(served: VaultServer, tmp_path: Path) -> None:
    """Through Vault.connect: writes of a transaction reach the server together, and a
    refused one (a log entry in another's name) leaves nothing behind."""
    vs = served
    with vs.connect("worker1") as staff:
        db = staff._session.db
        before = db.audit.head()
        req = _request("worker1")
        with db.transaction():
            db.access.add_request(req)
            # An action any user may log (a checkpoint is an officer's or an admin's).
            _audit.append(db.audit, [Event("worker1", "record.list")], staff.now())
            assert db.access.request(req.id) == req  # sent with the queued writes
        assert db.audit.head()[0] == before[0] + 1
        refused = _request("worker1")
        db.audit.signer = None
        with pytest.raises(AccessDenied, match="another's name"), db.transaction():
            db.access.add_request(refused)
            _audit.append(db.audit, [Event("officer1", "audit.checkpoint")], staff.now())
        assert db.access.request(refused.id) is None
        assert db.audit.head()[0] == before[0] + 1


def test_reads_alone_run_together_and_writes_need_a_transaction(served: VaultServer) -> None:
    vs = served
    req = _request("worker1")
    reads = (_call("audit", "head"), _call("access", "request", req.id))
    r = _batch(vs, "worker1", *reads, begin=False, commit=False)
    assert r.status_code == 200, r.text
    txn, results = decode(r.json()["result"])
    assert txn is None and results[1] is None
    assert results[0] == _read(vs, "audit", "head")
    add = _call("access", "add_request", req)
    _refused(_batch(vs, "worker1", *reads, add, begin=False, commit=False), 400, "malformed")
    _refused(_batch(vs, "worker1", *reads, begin=False, commit=True), 400, "malformed")
    assert _read(vs, "access", "request", req.id) is None


def test_a_client_reads_again_after_its_own_or_anothers_commit(served: VaultServer) -> None:
    """Reads outside a transaction may be answered from memory, but never across a
    write of this client, nor once an answer shows the server committed since."""
    vs = served
    # An officer: staff read only their own requests (finding A-11), and the read
    # here is of another's, committed by them.
    with vs.connect("officer1") as one:
        db = one._session.db
        mine, theirs = _request("officer1"), _request("worker2")
        assert db.access.request(mine.id) is None
        with db.transaction():
            db.access.add_request(mine)
        assert db.access.request(mine.id) == mine
        assert db.access.request(theirs.id) is None
        # Another client commits; the next answer this client gets names a newer
        # generation, and what it read before is read again.
        assert _batch(vs, "worker2", _call("access", "add_request", theirs)).status_code == 200
        db.records.count()
        assert db.access.request(theirs.id) == theirs


def test_deeply_nested_body_or_entry_is_malformed_not_internal(served: VaultServer) -> None:
    """Regression (session 11 review): JSON nested past Python's recursion limit raised
    RecursionError, which no handler named: the server answered 500 "internal error"
    instead of the 400 any other unreadable body gets."""
    vs = served
    depth = 100_000
    nested = b'{"calls":' + b"[" * depth + b"]" * depth + b"}"
    prepared = requests.Request(
        "POST",
        vs.url + "/v1/rpc/batch",
        data=nested,
        headers={"Content-Type": "application/json"},
        auth=HTTPSignatureAuth(vs.identity("worker1")),
    ).prepare()
    with requests.Session() as http:
        _refused(http.send(prepared, timeout=60), 400, "malformed")
    # A log entry whose own bytes nest too deeply (signed, well-formed around it).
    seq, prev = _read(vs, "audit", "head")
    entry = b"[" * depth + b"]" * depth
    digest = leaf_hash(entry)
    row = (seq, entry, digest, vs.identity("worker1").sign(_audit.entry_message(digest)))
    r = _batch(vs, "worker1", _call("audit", "append", [row]))
    assert r.status_code == 400, r.text
    assert tuple(_read(vs, "audit", "head")) == (seq, prev)
    # Nothing holds the vault afterwards.
    req = _request("worker2")
    assert _batch(vs, "worker2", _call("access", "add_request", req)).status_code == 200
