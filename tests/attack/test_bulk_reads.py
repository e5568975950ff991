"""Review RV2-1 (round 2, session 9): reads whose answer grows with the vault's use,
counted in a request's budget (finding A-12) as if bounded, or not at all.

Each test sends correctly signed requests of a modified client (``_wire``) to a real
``childvault serve`` process (docs/server.md "Limits").
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from childvault.server._vault import MAX_BATCH_ENTRIES, MAX_BATCH_ROWS, SCAN_COST
from tests.attack import _wire
from tests.attack._wire import call, refused
from tests.server._vaultserver import VaultServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served."""
    yield from _wire.served_fixture(tmp_path_factory)


@pytest.mark.parametrize(
    "actions",
    [
        ("grant.read",),
        ("record.create", "user.add"),
        ("request.create",),
        ("server.refuse",),
        ("record.list",),
    ],
)
def test_a_scan_of_the_logs_bulk_actions_is_refused(
    served: VaultServer, actions: tuple[str, ...]
) -> None:
    """``audit.entries_by_action`` naming an action logged per record, read or
    request answers a share of the whole log, built in memory on the database
    thread, yet counted as one scan: twenty fitted in one batch. The library
    never scans those actions (it finds them through their indexes), so a
    remote caller may not either."""
    refused(
        _wire.rpc(served, "worker1", "audit", "entries_by_action", list(actions)), 400, "malformed"
    )
    many = [call("audit", "entries_by_action", list(actions))] * 2
    refused(_wire.batch(served, "officer1", *many, commit=False), 400, "malformed")


def test_the_librarys_scans_still_answer(served: VaultServer) -> None:
    """The actions the library does scan (users, settings, decommission ...) answer."""
    r = _wire.rpc(served, "worker1", "audit", "entries_by_action", ["user.add", "setting.set"])
    assert len(_wire.ok(r)) >= 4
    with served.connect("worker1") as staff:
        assert staff.list_settings()


@pytest.mark.parametrize(
    ("repo", "method", "args"),
    [
        ("checkpoints", "all", ()),
        ("audit", "entries_with_recipient", (["grant.read"],)),
        ("access", "live_grants_of", ("worker1",)),
    ],
)
def test_a_batch_of_uncounted_scans_is_refused(
    served: VaultServer, repo: str, method: str, args: tuple[object, ...]
) -> None:
    """A scan its arguments do not bound counts :data:`SCAN_COST` like the others:
    a batch of more than the budget's worth of them is refused before any runs."""
    n = max(MAX_BATCH_ENTRIES, MAX_BATCH_ROWS) // SCAN_COST + 1
    r = _wire.batch(served, "officer1", *[call(repo, method, *args)] * n, commit=False)
    refused(r, 400, "malformed")
    # One of them is an ordinary read.
    _wire.ok(_wire.batch(served, "officer1", call(repo, method, *args)))
