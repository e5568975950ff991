"""A staff member's direct RPCs that reach everyone: holding the one writer, and
squatting the statement rows of log entries not yet written.

Its own served vault: when an attack here succeeds (a finding), the vault is
left unusable for whatever runs after it. Held transaction first, squat last.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from childvault.keys import ChildVaultError
from tests.attack import _wire
from tests.attack._wire import call, ok, post, read
from tests.server._vaultserver import VaultServer, synthetic_csv

#: The server's idle timeout for a transaction (``_vault.DEFAULT_TXN_IDLE``).
TXN_IDLE = 30.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served."""
    yield from _wire.served_fixture(tmp_path_factory)


@pytest.mark.xfail(
    strict=True,
    reason="finding A-7: a transaction kept busy with cheap reads holds the one writer "
    "for ever (only idle time is bounded)",
)
def test_a_transaction_cannot_hold_the_vault_for_ever(served: VaultServer) -> None:
    vs = served
    txn = ok(post(vs, "worker2", "/v1/txn/begin", {}))
    try:
        # Keep it busy, never idle for long, for more than twice the idle timeout.
        until = time.monotonic() + 2 * TXN_IDLE + 5
        while time.monotonic() < until:
            r = post(vs, "worker2", "/v1/rpc", {"txn": txn, **call("audit", "head")})
            if r.status_code == 409 and r.json()["reason"] == "no_transaction":
                break  # the server ended it: what a bounded lifetime does
            ok(r)
            time.sleep(3)
        # Everyone else is shut out meanwhile: begin waits, then 503 busy.
        r = post(vs, "worker1", "/v1/txn/begin", {})
        assert r.status_code == 200, r.text
        post(vs, "worker1", "/v1/txn/rollback", {"txn": ok(r)})
    finally:
        post(vs, "worker2", "/v1/txn/rollback", {"txn": txn})


@pytest.mark.xfail(
    strict=True,
    reason="finding A-8: statements.add stores an envelope at a sequence number no entry "
    "names (no log entry, no replay at commit): the next writers' entries collide",
)
def test_statement_rows_cannot_be_squatted_ahead_of_the_log(
    served: VaultServer, tmp_path: Path
) -> None:
    vs = served
    size, _ = read(vs, "audit", "head")
    squat = [call("statements", "add", seq, b"squatted") for seq in range(size, size + 50)]
    r = _wire.batch(vs, "worker2", *squat)
    # The honest import that follows (its records' statements sit beside its entries).
    try:
        with vs.connect("worker1") as staff:
            staff.import_file(synthetic_csv(tmp_path / "one.csv", 1, 7), allow_duplicates=True)
        imported = None
    except ChildVaultError as exc:
        imported = exc
    assert imported is None, f"an honest import after the squat failed: {imported}"
    _wire.refused_somehow(r, 403, 409)
