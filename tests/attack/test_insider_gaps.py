"""Review of session 7's server checks (round 2, session 9): the gaps between what a
check tests and what the later code uses, found with correctly signed requests of a
modified client (``_wire``) against a real ``childvault serve`` process.

Each test is named after the gap it reproduced; since its fix it is a regression
(docs/server.md "Approvals and checkpoints: what the server checks").
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

import pytest
import requests

from childvault.keys import AccessDenied
from childvault.vault import Basis, _audit
from childvault.vault._audit import DetailValue, Event
from childvault.vault._backend import NewRecord, RecordRow, request_basis_key
from childvault.vault._merkle import leaf_hash
from childvault.vault._time import iso
from tests.attack import _wire
from tests.attack._wire import call, log_rows, post, read, refused
from tests.attack.test_officer_rpc import _approval
from tests.server._vaultserver import VaultServer, synthetic_csv


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


def _in(
    vs: VaultServer, user: str, txn: str, repo: str, method: str, *a: object, **kw: object
) -> requests.Response:
    """One call inside ``txn``."""
    return post(vs, user, "/v1/rpc", {"txn": txn, **call(repo, method, *a, **kw)})


def _commit(vs: VaultServer, user: str, txn: str) -> requests.Response:
    """Commit ``txn``."""
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
    # worker2's entry is theirs, signed and linked, but an officer's action: the
    # server refuses it (review RV2-2); the checks below stand without it.
    refused(_wire.rpc(vs, "worker2", "audit", "append", rows), 403, "role")
    with vs.connect("officer1") as officer, pytest.raises(AccessDenied, match="two officers"):
        officer.approve(req)
    # An officer's client that skips its own check: the server decides the rule too.
    row = _wire.grant_row(req, "officer1", "worker1")
    r = _wire.batch(vs, "officer1", *_approval(vs, "officer1", info, row))
    refused(r, 403, "policy")
    assert "two officers" in r.json()["error"]
    assert read(vs, "access", "request", req).status == "pending"
    assert read(vs, "access", "grant", row.id) is None
    # officer2's co-signature is the second officer's: the same approval passes.
    with vs.connect("officer2") as other:
        other.cosign(req)
    row = _wire.grant_row(req, "officer1", "worker1")
    _wire.ok(_wire.batch(vs, "officer1", *_approval(vs, "officer1", info, row)))
    assert read(vs, "access", "request", req).status == "approved"


def test_a_failed_insert_of_an_existing_record_does_not_open_its_index(
    served: VaultServer,
) -> None:
    """``records.insert`` naming another's record fails (the id exists), but the
    transaction stays open: the record must not then count as inserted by it,
    or its blind-index tags are the caller's to plant (search and duplicate
    detection would find the victim's record for a name of the caller's choice)."""
    vs = served
    rid = _wire.record_ids(vs)[0]
    now = iso(datetime.now(UTC))
    row = RecordRow(rid, "child", 1, now, "worker2", now, {}, "2099-01-01", {})
    tag = secrets.token_bytes(32)
    with _open(vs, "worker2") as txn:
        r = _in(vs, "worker2", txn, "records", "insert", [NewRecord(row, [], b"x" * 64)])
        assert r.status_code == 409, r.text
        r = _in(vs, "worker2", txn, "records", "add_index_tags", [("name", tag, rid)])
        refused(r, 403, "binding")
        _commit(vs, "worker2", txn)
    assert read(vs, "records", "find_by_tag", "name", tag) == []


def test_a_failed_add_of_an_existing_request_does_not_open_its_basis_index(
    served: VaultServer,
) -> None:
    """``access.add_request`` naming another's request id fails, but must not let
    the caller write that request's basis index in the same transaction."""
    vs = served
    ids = _wire.record_ids(vs)[:1]
    with vs.connect("worker1") as staff:
        req = staff.request_access(ids, ["name"], "case_management", "home visit")
    mine = _wire.request_row("worker2")
    squat = type(mine)(**{**mine.__dict__, "id": req})
    key = request_basis_key(req)
    value = json.dumps({"basis": "vital_interests"}, sort_keys=True)
    with _open(vs, "worker2") as txn:
        assert _in(vs, "worker2", txn, "access", "add_request", squat).status_code == 409
        refused(_in(vs, "worker2", txn, "meta", "set", key, value), 403, "binding")
        _commit(vs, "worker2", txn)
    assert read(vs, "meta", "get", key) is None
    assert read(vs, "access", "request", req).requester == "worker1"


def test_a_refused_read_entry_does_not_cover_a_use(served: VaultServer) -> None:
    """A ``grant.read`` row refused for its signature (or its actor) must not count
    as the logged read of a use consumed later in the same transaction: the
    use would be committed with no read in the log."""
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1")
    forged = log_rows(vs, vs.identity("worker2"), Event("worker1", "grant.read", grant=grant_id))
    with _open(vs, "worker1") as txn:
        refused(_in(vs, "worker1", txn, "audit", "append", forged), 403, "unverified")
        assert _wire.ok(_in(vs, "worker1", txn, "access", "use_grant", grant_id)) is True
        refused(_commit(vs, "worker1", txn), 409, "unverified")
    assert read(vs, "access", "grant", grant_id).uses == 0


def test_a_read_entry_that_names_nothing_releases_nothing(served: VaultServer) -> None:
    """The release key opens every record of the grant, and counts the requester's
    logged reads: a ``grant.read`` entry naming no record, no field, or another
    request must not count as one (the incident report, built on the entries'
    records, would show no read at all)."""
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1", uses=3)
    g = read(vs, "access", "grant", grant_id)
    req = read(vs, "access", "request", g.request_id)
    me = vs.identity("worker1")
    hollow = [
        Event("worker1", "grant.read", grant=grant_id),
        Event(
            "worker1",
            "grant.read",
            records=["ef" * 16],
            fields=req.fields,
            purpose=req.purpose,
            request=req.id,
            grant=grant_id,
        ),
        Event(
            "worker1",
            "grant.read",
            records=req.records,
            fields=["photo"],
            purpose=req.purpose,
            request=req.id,
            grant=grant_id,
        ),
    ]
    for event in hollow:
        r = _wire.batch(
            vs,
            "worker1",
            call("access", "use_grant", grant_id),
            call("audit", "append", log_rows(vs, me, event)),
            call("release", "redeem", grant_id),
        )
        refused(r, 403, "release_refused")
    assert read(vs, "access", "grant", grant_id).uses == 0
    # The read entry the library writes releases the key.
    honest = _wire.read_event(vs, "worker1", grant_id)
    r = _wire.batch(
        vs,
        "worker1",
        call("access", "use_grant", grant_id),
        call("audit", "append", log_rows(vs, me, honest)),
        call("release", "redeem", grant_id),
    )
    assert isinstance(_wire.ok(r)[1][2], bytes)


def test_a_read_entry_without_its_recipient_releases_nothing(served: VaultServer) -> None:
    """A legal-obligation read hands data to another organisation: its entry carries
    the recipient, provision and assessment of the request (the transfers
    register, P-17). One that leaves them out counts for no release."""
    vs = served
    ids = _wire.record_ids(vs)[:1]
    legal = Basis("legal_obligation", recipient="court", provision="s.110", assessment="P")
    with vs.connect("worker1") as staff:
        req_id = staff.request_access(ids, ["name"], "legal_protection", "court", basis=legal)
    with vs.connect("officer2") as other:
        other.cosign(req_id)
    with vs.connect("officer1") as officer:
        grant_id = officer.approve(req_id, uses=2).grant_id
    req = read(vs, "access", "request", req_id)
    me = vs.identity("worker1")

    def read_entry(detail: Mapping[str, DetailValue]) -> Event:
        return Event(
            "worker1",
            "grant.read",
            records=req.records,
            fields=req.fields,
            purpose=req.purpose,
            request=req.id,
            grant=grant_id,
            detail=detail,
        )

    def redeem(event: Event) -> requests.Response:
        return _wire.batch(
            vs,
            "worker1",
            call("access", "use_grant", grant_id),
            call("audit", "append", log_rows(vs, me, event)),
            call("release", "redeem", grant_id),
        )

    refused(redeem(read_entry({})), 403, "release_refused")
    refused(
        redeem(read_entry({**legal.detail(), "recipient": "elsewhere"})), 403, "release_refused"
    )
    assert isinstance(_wire.ok(redeem(read_entry(legal.detail())))[1][2], bytes)
    # The read is in the transfers register.
    with vs.connect("officer2") as other:
        assert [t.recipient for t in other.transfers() if t.request == req_id] == ["court"]


def test_a_staff_members_revocation_entry_revokes_nothing(served: VaultServer) -> None:
    """Only an officer revokes a grant. A ``grant.revoke`` entry signed by a staff
    member (any user may append entries in their own name) must not deny the
    grant's requester the release of their logged use."""
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1")
    g = read(vs, "access", "grant", grant_id)
    planted = Event("worker2", "grant.revoke", request=g.request_id, grant=grant_id)
    # An officer's action: the server refuses it since review RV2-2.
    refused(
        _wire.rpc(vs, "worker2", "audit", "append", log_rows(vs, vs.identity("worker2"), planted)),
        403,
        "role",
    )
    r = _wire.batch(
        vs,
        "worker1",
        call("access", "use_grant", grant_id),
        call(
            "audit",
            "append",
            log_rows(vs, vs.identity("worker1"), _wire.read_event(vs, "worker1", grant_id)),
        ),
        call("release", "redeem", grant_id),
    )
    assert isinstance(_wire.ok(r)[1][2], bytes)


def test_a_staff_members_decommission_entry_does_not_end_collection(
    served: VaultServer,
) -> None:
    """Decommissioning is an admin's (with an officer's co-signature): a logged
    ``vault.decommission`` start ends collection for good. One signed by a staff
    member must not stop every user of the vault from adding records."""
    vs = served
    planted = Event("worker2", "vault.decommission", detail={"phase": "start"})
    rows = log_rows(vs, vs.identity("worker2"), planted)
    # An admin's action: the server refuses it since review RV2-2.
    refused(_wire.rpc(vs, "worker2", "audit", "append", rows), 403, "role")
    before = len(_wire.record_ids(vs))
    with vs.connect("worker1") as staff:
        staff.import_file(synthetic_csv(vs.root / "after-planted-decommission.csv", 1, offset=150))
    assert len(_wire.record_ids(vs)) == before + 1


def test_a_log_entry_with_a_member_written_twice_is_refused(served: VaultServer) -> None:
    """SQLite's index columns read a member written twice as its first value, Python
    (and every check of the server and the clients) as its last: a read entry
    whose detail says ``"recipient": null`` and then the recipient counted for a
    release while the transfers register (the recipient index) never saw it.
    Entries are taken in the library's canonical form only."""
    vs = served
    ids = _wire.record_ids(vs)[:1]
    legal = Basis("legal_obligation", recipient="court", provision="s.110", assessment="P")
    with vs.connect("worker1") as staff:
        req_id = staff.request_access(ids, ["name"], "legal_protection", "court", basis=legal)
    with vs.connect("officer2") as other:
        other.cosign(req_id)
    with vs.connect("officer1") as officer:
        grant_id = officer.approve(req_id).grant_id
    event = dataclasses.replace(_wire.read_event(vs, "worker1", grant_id), detail=legal.detail())
    seq, prev = read(vs, "audit", "head")
    entry = _audit.encode_entry(seq, iso(datetime.now(UTC)), event, prev)
    twice = entry.replace(b'"detail":{', b'"detail":{"recipient":null,', 1)
    assert twice != entry and json.loads(twice)["detail"]["recipient"] == "court"
    digest = leaf_hash(twice)
    row = (seq, twice, digest, vs.identity("worker1").sign(_audit.entry_message(digest)))
    r = _wire.batch(
        vs,
        "worker1",
        call("access", "use_grant", grant_id),
        call("audit", "append", [row]),
        call("release", "redeem", grant_id),
    )
    refused(r, 409, "unverified")
    assert read(vs, "audit", "head")[0] == seq
