"""Insider findings left open by session 11's reviews (issues 12, 15, 18).

Each test is named after the bug it reproduces and runs against real parts: a
``childvault serve`` process for the wire, SQLCipher (and PostgreSQL where the
replay is the store's) for the log.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from childvault.keys import IntegrityError, UsageError
from childvault.server._release_keys import Terms, logged_terms
from childvault.vault import Basis, Vault, _audit
from childvault.vault._audit import Event
from childvault.vault._merkle import leaf_hash
from childvault.vault._time import iso
from tests._insider import Insider
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
_LEGAL_BASIS = Basis("legal_obligation", **_LEGAL)


@pytest.mark.parametrize(
    ("who", "name", "act"),
    [
        (
            "worker1",
            "reason",
            lambda v, ids: v.request_access(ids, ["name"], "case_management", "a\x00b"),
        ),
        (
            "worker1",
            "fields",
            lambda v, ids: v.request_access(ids, ["name\x00"], "case_management", "r"),
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


# FX-2: readers that took the first logged entry of an action without asking who
# wrote it. Any user may log any action in their own name (signed by their own
# key, so the replay passes it); only the entry of the one who may write it counts.


def _consent_request(world: World, who: str = "worker1") -> str:
    with world.open("officer1") as v:
        ids = add_children(v, 1)
    with world.open(who) as v:
        return v.request_access(ids, ["name"], "case_management", "visit")


def _log(world: World, who: str, event: Event) -> None:
    with world.open(who) as v:
        v._session.log([event], v.now())


def test_fx2_basis_of_is_the_requesters_entry_not_the_first(world: World) -> None:
    """worker2 files a legal-obligation request, then moves its row into worker1's
    name with plain SQL: the only ``request.create`` naming it is worker2's, which
    no longer gives the basis of a request the row says is worker1's."""
    with world.open("officer1") as v:
        ids = add_children(v, 1)
    with world.open("worker2") as v:
        req = v.request_access(ids, ["name"], "legal_protection", "court", basis=_LEGAL_BASIS)
    with world.open("officer1") as v:
        assert v._access.basis_of(req, "worker2").recipient == "court"  # the check can pass
    with Insider(world, "worker2") as insider:
        assert insider.update("requests", {"requester": "worker1"}, {"id": req}) == 1
    with world.open("officer2") as v:
        size = v._session.db.audit.head()[0]
        with pytest.raises(IntegrityError, match="differs from its log entry"):
            v.cosign(req)
        # Refused and logged (trust.refuse), not co-signed.
        logged = v._session.db.audit.entries_by_action(("trust.refuse", "request.cosign"))
        assert [json.loads(e)["action"] for e in logged if json.loads(e)["seq"] >= size] == [
            "trust.refuse"
        ]


def test_fx2_a_staff_approval_logged_first_does_not_block_the_officers(world: World) -> None:
    """A staff member's signed ``request.approve`` naming a grant, logged before the
    officer's, was taken as the approval and refused: the grant's release blocked."""
    req = _consent_request(world)
    with world.open("worker1") as v:
        info = v._session.db.access.request(req)
    assert info is not None
    grant_id = secrets.token_hex(16)
    expires = iso(datetime.now(UTC) + timedelta(hours=1))

    def approval(who: str) -> Event:
        return Event(
            who,
            "request.approve",
            records=info.records,
            fields=info.fields,
            purpose=info.purpose,
            request=req,
            grant=grant_id,
            detail={"expires": expires, "uses": 1},
        )

    _log(world, "worker2", approval("worker2"))
    assert _terms(world, grant_id) == "approved by someone who was not an officer"
    _log(world, "officer1", approval("officer1"))
    terms = _terms(world, grant_id)
    assert isinstance(terms, Terms), terms
    assert (terms.officer, terms.requester, terms.max_uses) == ("officer1", "worker1", 1)


def _terms(world: World, grant_id: str) -> Terms | str:
    """What a server reads from the log about ``grant_id`` (its verified state)."""
    with world.open("officer2") as v:
        state = v._session.trust()
        assert state is not None
        return logged_terms(v._session.db, lambda _seq: state, grant_id)


# RV11-3: an entry in the name of someone the log never registered passed every
# verification (the replay checked signatures of registered names only). An
# insider logs an unsigned entry as "offic\u0435r1" (a Cyrillic "е": it shows as
# "officer1") or as a valid name no one has.


def _append_unsigned(world: World, who: str, actor: str) -> int:
    """``who`` (an insider with their database key) appends an unsigned entry in
    ``actor``'s name at the head of the log; returns its seq."""
    with world.open(who) as v:
        db = v._session.db
        with db.transaction():
            seq, prev = db.audit.head()
            entry = _audit.encode_entry(
                seq, iso(world.clock.now), Event(actor, "record.list"), prev
            )
            db.audit.append([(seq, entry, leaf_hash(entry), None)])
    return seq


@pytest.mark.parametrize("actor", ["offic\u0435r1", "officer9", "Officer1"])
def test_rv11_3_an_entry_of_a_non_user_fails_verification(
    any_world: World,
    actor: str,
) -> None:
    world = any_world
    with world.open("officer2") as v:
        v.verify_audit(full=True)  # the log verifies before
    seq = _append_unsigned(world, "worker1", actor)
    match = f"log entry {seq} is in the name of .*no registration"
    with world.open("officer2") as v, pytest.raises(IntegrityError, match=match):
        v.verify_audit(full=True)
    # Every operation's embedded replay refuses it too (here: enrolling a user).
    with world.open("admin") as v, pytest.raises(IntegrityError, match=match):
        v.add_user("staff9", ["staff"], "staff9-passphrase-x")


def test_rv11_3_a_pending_registrations_own_entries_still_verify(world: World) -> None:
    """The legitimate unregistered writer after the founding registration: an officer
    an admin registered pending (no officer countersigned yet) logs in their name."""
    with world.open("admin") as v:
        state = v._session.trust()
        assert state is not None and "officer3" not in state.users
        v.add_user("officer3", ["officer"], "officer3-passphrase-x")
        state = v._session.trust()
        assert state is not None and "officer3" in state.unverified
    _append_unsigned(world, "worker1", "officer3")
    with world.open("officer2") as v:
        v.verify_audit(full=True)
