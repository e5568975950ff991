"""An officer with a valid identity, calling the server's RPCs directly.

Officers may decide, issue grants, make release keys and sign checkpoints
(``ROLE_WRITES``); the attacks here use those writes outside the approval the
library performs (``Vault.approve``: policy checks, the logged decision, the
witnessed checkpoint). Refused attacks are regressions; accepted ones are
findings (``/work/briefs/findings-A.md``), kept as strict xfails. A grant and
its release key are stored only with the caller's logged approval of a pending
request in the same transaction, under the rules the server can decide (A-4,
A-5); a checkpoint only over the log's own root (A-6).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from childvault.vault import _audit, _note
from childvault.vault._audit import Event
from childvault.vault._backend import GrantRow, RequestRow
from childvault.vault._config import Config, Home
from childvault.vault._merkle import root_of
from childvault.vault._session import log_origin, signer_name
from childvault.vault._time import iso
from tests.attack import _wire
from tests.attack._wire import batch, call, log_rows, ok, read, refused, request_row, rpc
from tests.server._vaultserver import VaultServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served."""
    yield from _wire.served_fixture(tmp_path_factory)


def _approval(
    vs: VaultServer, officer: str, req: RequestRow, row: GrantRow
) -> list[dict[str, Any]]:
    """The writes of an approval as the library makes them (decision, grant, release
    key, the matching ``request.approve`` entry), for a raw batch by ``officer``."""
    now = iso(datetime.now(UTC))
    entry = _wire.approve_event(officer, req, row)
    return [
        call("access", "decide", req.id, status="approved", by=officer, at=now, reason=None),
        call("access", "add_grant", row),
        call("release", "new", row.id),
        call("audit", "append", log_rows(vs, vs.identity(officer), entry)),
    ]


def _witness_notes(vs: VaultServer) -> list[str]:
    """The checkpoint notes in the served home's witness file."""
    home = Home(vs.home)
    return _audit.read_witness(Config.load(home).witness_path(home))


def test_an_officer_cannot_redeem_a_grant_issued_to_someone_else(served: VaultServer) -> None:
    vs = served
    grant_id, token = _wire.approved(vs, "worker1")
    with vs.connect("worker1") as staff:
        staff.read_with_grant(token)  # a logged use: a release is now due, to worker1
    for officer in ("officer1", "officer2"):
        r = batch(vs, officer, call("release", "redeem", grant_id))
        refused(r, 403, "release_refused")
        assert "issued to worker1" in r.json()["error"]
        assert _wire.refusal_logged(vs, officer, "release_refused")
    # A second release key for the same grant (to know it) is refused too: a key
    # is made only in the transaction that adds the grant.
    refused(batch(vs, "officer2", call("release", "new", grant_id)), 409, "unverified")


def test_an_officer_cannot_issue_a_grant_in_another_officers_name(served: VaultServer) -> None:
    vs = served
    req = _wire.pending(vs, "worker1")
    row = _wire.grant_row(req, "officer2", "worker1")
    refused(batch(vs, "officer1", call("access", "add_grant", row)), 403, "binding")
    r = batch(
        vs,
        "officer1",
        call(
            "access",
            "decide",
            req,
            status="approved",
            by="officer2",
            at=iso(datetime.now(UTC)),
            reason=None,
        ),
    )
    refused(r, 403, "binding")
    assert read(vs, "access", "grant", row.id) is None
    assert read(vs, "access", "request", req).status == "pending"


def test_an_officer_cannot_log_an_approval_in_another_officers_name(served: VaultServer) -> None:
    vs = served
    req = _wire.pending(vs, "worker1")
    before = read(vs, "audit", "head")
    rows = log_rows(vs, vs.identity("officer1"), Event("officer2", "request.approve", request=req))
    refused(batch(vs, "officer1", call("audit", "append", rows)), 403, "binding")
    assert read(vs, "audit", "head") == before


def test_a_grant_needs_a_logged_approval(served: VaultServer) -> None:
    vs = served
    req = _wire.pending(vs, "worker1")
    row = _wire.grant_row(req, "officer1", "worker1")
    before = read(vs, "audit", "head")
    # No access.decide, no request.approve entry, no checkpoint: a grant and its
    # release key, nothing in the log.
    r = batch(vs, "officer1", call("access", "add_grant", row), call("release", "new", row.id))
    assert read(vs, "audit", "head")[0] == before[0]
    refused(r, 409, "unverified")
    assert _wire.refusal_logged(vs, "officer1", "unverified")
    _wire.undecided(vs, req, row.id, before)


def test_a_release_key_needs_its_grant_in_the_same_transaction(served: VaultServer) -> None:
    vs = served
    req = _wire.pending(vs, "worker1")
    row = _wire.grant_row(req, "officer1", "worker1")
    before = read(vs, "audit", "head")
    r = batch(vs, "officer1", call("release", "new", row.id))
    refused(r, 409, "unverified")
    assert "grant this transaction adds" in r.json()["error"]
    # The grant row of an honest approval, then a key for it in a later transaction.
    grant_id, _ = _wire.approved(vs, "worker1")
    refused(batch(vs, "officer1", call("release", "new", grant_id)), 409, "unverified")
    _wire.undecided(vs, req, row.id, read(vs, "audit", "head"))
    assert read(vs, "audit", "head")[0] > before[0]


@pytest.mark.parametrize("left_out", ["decide", "add_grant", "append"])
def test_each_part_of_an_approval_needs_the_others(served: VaultServer, left_out: str) -> None:
    """The decision, the grant row (with its release key) and the logged approval
    are stored together or not at all."""
    vs = served
    req = _wire.pending(vs, "worker1")
    row = _wire.grant_row(req, "officer1", "worker1")
    before = read(vs, "audit", "head")
    calls = _approval(vs, "officer1", read(vs, "access", "request", req), row)
    if left_out == "add_grant":
        calls = [calls[0], calls[3]]
    else:
        calls = [c for c in calls if c["method"] != left_out]
    refused(batch(vs, "officer1", *calls), 409, "unverified")
    _wire.undecided(vs, req, row.id, before)


def test_an_approval_entry_must_name_the_request_and_grant_as_stored(
    served: VaultServer,
) -> None:
    vs = served
    req = _wire.pending(vs, "worker1")
    row = _wire.grant_row(req, "officer1", "worker1")
    before = read(vs, "audit", "head")
    # The entry names other fields than the request the grant is stored for.
    calls = _approval(vs, "officer1", read(vs, "access", "request", req), row)
    entry = Event(
        "officer1",
        "request.approve",
        records=read(vs, "access", "request", req).records,
        fields=("name", "guardian_phone"),
        purpose="case_management",
        request=req,
        grant=row.id,
        detail={"expires": row.expires_at, "uses": row.max_uses},
    )
    calls[3] = call("audit", "append", log_rows(vs, vs.identity("officer1"), entry))
    refused(batch(vs, "officer1", *calls), 409, "unverified")
    _wire.undecided(vs, req, row.id, before)
    # A grant to someone else than the requester, logged faithfully otherwise.
    row = _wire.grant_row(req, "officer1", "worker2")
    calls = _approval(vs, "officer1", read(vs, "access", "request", req), row)
    refused(batch(vs, "officer1", *calls), 409, "unverified")
    _wire.undecided(vs, req, row.id, before)


def test_an_officer_cannot_approve_their_own_request(served: VaultServer) -> None:
    vs = served
    req = _wire.pending(vs, "officer1")
    row = _wire.grant_row(req, "officer1", "officer1")
    before = read(vs, "audit", "head")
    r = batch(vs, "officer1", *_approval(vs, "officer1", read(vs, "access", "request", req), row))
    refused(r, 403, "policy")
    assert _wire.refusal_logged(vs, "officer1", "policy")
    _wire.undecided(vs, req, row.id, before)


@pytest.mark.parametrize(
    ("ttl", "uses"),
    [
        (timedelta(days=29), 1),  # the TTL cap is 8 h by default
        (timedelta(hours=1), 11),  # the uses cap is 10 by default
        (timedelta(hours=-1), 1),
    ],
)
def test_an_approval_is_held_to_the_vaults_caps(
    served: VaultServer, ttl: timedelta, uses: int
) -> None:
    vs = served
    req = _wire.pending(vs, "worker1")
    row = _wire.grant_row(req, "officer1", "worker1", ttl=ttl, uses=uses)
    before = read(vs, "audit", "head")
    r = batch(vs, "officer1", *_approval(vs, "officer1", read(vs, "access", "request", req), row))
    refused(r, 403, "policy")
    _wire.undecided(vs, req, row.id, before)


def test_an_approval_releases_only_the_fields_its_purpose_may(served: VaultServer) -> None:
    """A request row put in raw (no request.create entry: the consent basis) for a
    purpose the schema releases no field for."""
    vs = served
    req = request_row("worker1", tuple(_wire.record_ids(vs)[:1]))
    req = dataclasses.replace(req, purpose="statistics")
    ok(rpc(vs, "worker1", "access", "add_request", req))
    row = _wire.grant_row(req.id, "officer1", "worker1")
    before = read(vs, "audit", "head")
    r = batch(
        vs, "officer1", *_approval(vs, "officer1", read(vs, "access", "request", req.id), row)
    )
    refused(r, 403, "policy")
    assert "statistics" in r.json()["error"]
    _wire.undecided(vs, req.id, row.id, before)


def test_the_honest_approval_writes_pass(served: VaultServer) -> None:
    """The same writes in a raw batch, for a request the rules allow: stored."""
    vs = served
    req = _wire.pending(vs, "worker1")
    row = _wire.grant_row(req, "officer1", "worker1", uses=2)
    ok(batch(vs, "officer1", *_approval(vs, "officer1", read(vs, "access", "request", req), row)))
    assert read(vs, "access", "grant", row.id).max_uses == 2
    assert read(vs, "access", "request", req).status == "approved"


def test_a_checkpoint_must_be_its_notes(served: VaultServer) -> None:
    """The size and root stored beside a note are the note's."""
    vs = served
    size, _ = read(vs, "audit", "head")
    leaves = [row[2] for row in read(vs, "audit", "page", 0)]
    with vs.connect("officer1") as officer:
        vault_id = officer.vault_id
    ident = vs.identity("officer1")
    cp = _note.Checkpoint(log_origin(vault_id), size, root_of(leaves))
    note = _note.sign_note(
        cp.body(), signer_name(vault_id, "officer1"), ident.sign, ident.public.signing_key
    )
    now = iso(datetime.now(UTC))
    stored = len(read(vs, "checkpoints", "all"))
    for args in ((size, b"\x00" * 32), (size - 1, cp.root)):
        r = batch(vs, "officer1", call("checkpoints", "add", *args, note, "officer1", now, b""))
        refused(r, 409, "unverified")
    assert len(read(vs, "checkpoints", "all")) == stored
    # The note's own size and root: the log's, stored.
    ok(batch(vs, "officer1", call("checkpoints", "add", size, cp.root, note, "officer1", now, b"")))
    assert len(read(vs, "checkpoints", "all")) == stored + 1


def test_a_checkpoint_that_hides_an_entry_is_refused(served: VaultServer) -> None:
    """Runs last in this module: when accepted, the vault no longer verifies."""
    vs = served
    size, _ = read(vs, "audit", "head")
    leaves = [row[2] for row in read(vs, "audit", "page", 0)]
    assert len(leaves) == size
    # The tree of the log with one entry (an approval, say) replaced.
    hidden = list(leaves)
    hidden[size // 2] = b"\x00" * 32
    fake_root = root_of(hidden)
    with vs.connect("officer1") as officer:
        vault_id = officer.vault_id
    ident = vs.identity("officer1")
    cp = _note.Checkpoint(log_origin(vault_id), size, fake_root)
    note = _note.sign_note(
        cp.body(), signer_name(vault_id, "officer1"), ident.sign, ident.public.signing_key
    )
    now = iso(datetime.now(UTC))
    r = batch(
        vs,
        "officer1",
        call("checkpoints", "add_at_head", size, fake_root, note, "officer1", now, b""),
    )
    refused(r, 409, "unverified")
    assert all(c.root != fake_root for c in read(vs, "checkpoints", "all"))
    assert note not in _witness_notes(vs)
