"""Review of session 7's server checks (round 2, session 9): the gaps between what a
check tests and what the later code uses, found with correctly signed requests of a
modified client (``_wire``) against a real ``childvault serve`` process.

Each test is named after the gap it reproduced; since its fix it is a regression
(docs/server.md "Approvals and checkpoints: what the server checks").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from childvault.keys import AccessDenied
from childvault.vault import Basis
from childvault.vault._audit import Event
from tests.attack import _wire
from tests.attack._wire import call, log_rows, post, read, refused
from tests.attack.test_officer_rpc import _approval, _grant_row
from tests.server._vaultserver import VaultServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served."""
    yield from _wire.served_fixture(tmp_path_factory)


@contextlib.contextmanager
def _open(vs: VaultServer, user: str) -> Iterator[str]:
    """A transaction of ``user``'s, opened by a batch of one read; rolled back at the
    end if still open (a failed assertion must not hold the vault for the others)."""
    r = _wire.batch(vs, user, call("records", "count"), commit=False)
    assert r.status_code == 200, r.text
    txn = str(r.json()["result"][0])
    try:
        yield txn
    finally:
        post(vs, user, "/v1/txn/rollback", {"txn": txn})


def _in(vs: VaultServer, user: str, txn: str, repo: str, method: str, *a: object, **kw: object):  # type: ignore[no-untyped-def]
    """One call inside ``txn``."""
    return post(vs, user, "/v1/rpc", {"txn": txn, **call(repo, method, *a, **kw)})


def _commit(vs: VaultServer, user: str, txn: str):  # type: ignore[no-untyped-def]
    return post(vs, user, "/v1/txn/commit", {"txn": txn})


def test_a_staff_cosignature_does_not_stand_for_a_second_officer(served: VaultServer) -> None:
    """A legal-obligation disclosure needs two officers (P-18): a ``request.cosign``
    entry signed by a staff member (any role may append entries in their own
    name) must not count as the second officer's, neither for the approving
    officer's client nor for the server's own check of the grant."""
    vs = served
    ids = _wire.record_ids(vs)[:1]
    legal = Basis("legal_obligation", recipient="court", provision="s.110", assessment="P")
    with vs.connect("worker1") as staff:
        req = staff.request_access(ids, ["name"], "legal_protection", "court order", basis=legal)
    info = read(vs, "access", "request", req)
    rows = log_rows(
        vs,
        vs.identity("worker2"),
        Event(
            "worker2",
            "request.cosign",
            records=info.records,
            fields=info.fields,
            purpose=info.purpose,
            request=req,
        ),
    )
    # worker2's entry is theirs, signed and linked: the log takes it.
    assert _wire.ok(_wire.rpc(vs, "worker2", "audit", "append", rows)) is None
    with vs.connect("officer1") as officer, pytest.raises(AccessDenied, match="two officers"):
        officer.approve(req)
    # An officer's client that skips its own check: the server decides the rule too.
    row = _grant_row(req, "officer1", "worker1")
    r = _wire.batch(vs, "officer1", *_approval(vs, "officer1", info, row))
    refused(r, 403, "policy")
    assert "two officers" in r.json()["error"]
    assert read(vs, "access", "request", req).status == "pending"
    assert read(vs, "access", "grant", row.id) is None
    # officer2's co-signature is the second officer's: the same approval passes.
    with vs.connect("officer2") as other:
        other.cosign(req)
    row = _grant_row(req, "officer1", "worker1")
    _wire.ok(_wire.batch(vs, "officer1", *_approval(vs, "officer1", info, row)))
    assert read(vs, "access", "request", req).status == "approved"
