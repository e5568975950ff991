"""A staff member's direct RPCs that reach everyone: holding the one writer, and
squatting the statement rows of log entries not yet written.

Its own served vault, with a short transaction lifetime (``serve --txn-max``)
so that holding the writer past it takes seconds. Held transaction first,
squat last (findings A-7 and A-8, refused since session 8).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from childvault.vault._audit import Event
from tests.attack import _wire
from tests.attack._wire import call, ok, post, read, refused
from tests.server._vaultserver import VaultServer, make_vault, synthetic_csv

#: The served vault's transaction lifetime (``serve --txn-max``; 60 s by default).
TXN_MAX = 5.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served with a
    transaction lifetime of :data:`TXN_MAX` seconds."""
    root = tmp_path_factory.mktemp("attack")
    vs = make_vault(root, _wire.PEOPLE)
    vs.start(extra=["--txn-max", str(TXN_MAX)])
    try:
        with vs.connect("worker1") as staff:
            staff.import_file(synthetic_csv(root / "rows.csv", 4))
        yield vs
    finally:
        vs.stop()


def _head(vs: VaultServer, txn: str) -> requests.Response:
    """A cheap read inside ``txn`` (what keeps a transaction from being idle)."""
    return post(vs, "worker2", "/v1/rpc", {"txn": txn, **call("audit", "head")})


def test_a_transaction_cannot_hold_the_vault_for_ever(served: VaultServer) -> None:
    vs = served
    txn = ok(post(vs, "worker2", "/v1/txn/begin", {}))
    try:
        # Kept busy, never idle, until it is older than its lifetime.
        until = time.monotonic() + TXN_MAX + 1
        while time.monotonic() < until:
            ok(_head(vs, txn))
            time.sleep(0.5)
        # Someone waits: the old transaction is rolled back and they get in.
        r = post(vs, "worker1", "/v1/txn/begin", {})
        assert r.status_code == 200, r.text
        post(vs, "worker1", "/v1/txn/rollback", {"txn": ok(r)})
        # The holder's next call finds its transaction gone.
        refused(_head(vs, txn), 409, "no_transaction")
        assert "txn_lifetime" in vs.log_path.read_text(encoding="utf-8")
    finally:
        post(vs, "worker2", "/v1/txn/rollback", {"txn": txn})


def test_a_waiter_gets_in_when_the_holders_lifetime_ends(served: VaultServer) -> None:
    """A request that starts waiting before the holder's lifetime ends is let in
    when it ends (well before the idle timeout of 30 s and its own 10 s wait)."""
    vs = served
    txn = ok(post(vs, "worker2", "/v1/txn/begin", {}))
    try:
        r = post(vs, "worker1", "/v1/txn/begin", {})
        assert r.status_code == 200, r.text
        post(vs, "worker1", "/v1/txn/rollback", {"txn": ok(r)})
        refused(_head(vs, txn), 409, "no_transaction")
    finally:
        post(vs, "worker2", "/v1/txn/rollback", {"txn": txn})


def test_a_statement_only_beside_its_own_entry(served: VaultServer) -> None:
    """``statements.add`` stores an envelope only at an entry appended earlier in the
    same transaction whose detail names exactly that envelope."""
    vs = served
    size, _ = read(vs, "audit", "head")
    envelope = b'{"not": "a statement"}'
    # At an entry of an earlier transaction.
    r = _wire.batch(vs, "worker2", call("statements", "add", size - 1, envelope))
    refused(r, 403, "binding")
    # Beside the caller's own entry that names another envelope, or none.
    for detail in ({"statement": hashlib.sha256(b"other").hexdigest()}, {}):
        rows = _wire.log_rows(
            vs, vs.identity("worker2"), Event("worker2", "record.list", detail=detail)
        )
        r = _wire.batch(
            vs,
            "worker2",
            call("audit", "append", rows),
            call("statements", "add", size, envelope),
        )
        refused(r, 403, "binding")
    # Before the entry that names it (the entry must come first).
    rows = _wire.log_rows(
        vs,
        vs.identity("worker2"),
        Event(
            "worker2",
            "record.list",
            detail={"statement": hashlib.sha256(envelope).hexdigest()},
        ),
    )
    r = _wire.batch(
        vs, "worker2", call("statements", "add", size, envelope), call("audit", "append", rows)
    )
    refused(r, 403, "binding")
    assert read(vs, "audit", "head")[0] == size
    assert read(vs, "statements", "get", size) is None
    assert _wire.refusal_logged(vs, "worker2", "binding")


def test_statement_rows_cannot_be_squatted_ahead_of_the_log(
    served: VaultServer, tmp_path: Path
) -> None:
    vs = served
    size, _ = read(vs, "audit", "head")
    squat = [call("statements", "add", seq, b"squatted") for seq in range(size, size + 50)]
    r = _wire.batch(vs, "worker2", *squat)
    refused(r, 403, "binding")
    # The honest import that follows (its records' statements sit beside its entries).
    with vs.connect("worker1") as staff:
        staff.import_file(synthetic_csv(tmp_path / "one.csv", 1, 7), allow_duplicates=True)
    assert read(vs, "audit", "head")[0] > size
