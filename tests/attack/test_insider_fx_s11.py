"""Insider findings left open by session 11's reviews (issues 12, 15, 18).

Each test is named after the bug it reproduces and runs against real parts: a
``childvault serve`` process for the wire, SQLCipher (and PostgreSQL where the
replay is the store's) for the log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from childvault.keys import UsageError
from childvault.vault import Basis, Vault
from childvault.vault._audit import Event
from tests.attack import _wire
from tests.attack._wire import batch, call, log_rows, read, refused
from tests.conftest import World, add_children
from tests.server._vaultserver import VaultServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served."""
    yield from _wire.served_fixture(tmp_path_factory)


# FX-4: an integer past 64 bits reached SQLite as an OverflowError (a 500), after
# any earlier call of its batch had run. The body is refused as it is parsed.


@pytest.mark.parametrize("start", [10**30, -(10**30), 2**63], ids=repr)
def test_fx4_huge_int_page_start_is_a_400_not_a_500(served: VaultServer, start: int) -> None:
    before = len(served.refusals())
    refused(_wire.rpc(served, "worker2", "audit", "page", start), 400, "malformed")
    assert [r["reason"] for r in served.refusals()[before:]] == ["malformed"]


def test_fx4_huge_int_in_a_batch_stores_nothing(served: VaultServer) -> None:
    size = read(served, "audit", "head")[0]
    rows = log_rows(served, served.identity("worker2"), Event("worker2", "record.list"))
    r = batch(
        served,
        "worker2",
        call("audit", "append", rows),
        call("audit", "page", 10**30),
    )
    refused(r, 400, "malformed")
    assert read(served, "audit", "head")[0] == size


def test_fx4_64_bit_ints_are_still_answered(served: VaultServer) -> None:
    """The bound is SQLite's own: its largest integer is read as before (no rows)."""
    r = _wire.rpc(served, "worker2", "audit", "page", 2**63 - 1)
    assert _wire.ok(r) == []


# FX-3: U+0000 from an API caller reached encode_entry, whose ValueError is no
# ChildVaultError (a refusal meant to be logged, e.g. trust.refuse, was not). It is
# refused first, naming the argument; nothing is logged or stored.

_LEGAL = dict(recipient="court", provision="s.110", assessment="P")


@pytest.mark.parametrize(
    ("who", "name", "act"),
    [
        (
            "worker1",
            "reason",
            lambda v, ids: v.request_access(ids, ["name"], "care_planning", "a\x00b"),
        ),
        (
            "worker1",
            "fields",
            lambda v, ids: v.request_access(ids, ["name\x00"], "care_planning", "r"),
        ),
        (
            "worker1",
            "basis.provision",
            lambda v, ids: v.request_access(
                ids,
                ["name"],
                "legal_protection",
                "r",
                basis=Basis("legal_obligation", **{**_LEGAL, "provision": "s.\x00110"}),
            ),
        ),
        ("admin", "value", lambda v, ids: v.set_setting("institution", "Home\x00")),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_fx3_nul_from_a_caller_is_a_usage_error_naming_it(
    world: World, who: str, name: str, act: Callable[[Vault, list[str]], object]
) -> None:
    with world.open("officer1") as v:
        ids = add_children(v, 1)
    with world.open(who) as v:
        size = v._session.db.audit.head()[0]
        with pytest.raises(UsageError, match=repr(name)):
            act(v, ids)
        assert v._session.db.audit.head()[0] == size
