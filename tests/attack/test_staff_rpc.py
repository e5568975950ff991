"""A staff member with a valid identity, calling the server's RPCs directly.

The client is ``_wire``: correctly signed requests whose bodies skip every
check of the library (docs/server.md "How it works"; the allowlist and
bindings of ``childvault/server/_vault.py``). What the server refuses here is
kept as a regression; what it accepts and should not is a finding in
``/work/briefs/findings-A.md``, kept as a strict xfail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from childvault.keys import DecryptionFailed
from childvault.vault._audit import Event
from childvault.vault._backend import GrantRow, UserRow, request_basis_key
from childvault.vault._httpsig import HTTPSignatureAuth
from childvault.vault._remote._codec import decode
from childvault.vault._remote._methods import METHODS
from tests.attack import _wire
from tests.attack._wire import batch, call, log_rows, read, refused, rpc
from tests.conftest import child_values
from tests.server._vaultserver import VaultServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served."""
    yield from _wire.served_fixture(tmp_path_factory)


G = "ab" * 16  # a well-formed grant id
R = "cd" * 16  # a well-formed record / request id

#: Writes a staff member must never make, each with arguments an honest client
#: of a higher role would send (the role check must come first, whatever they are).
FORBIDDEN: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = [
    ("access", "decide", (R,), {"status": "approved", "by": "worker2", "at": "x", "reason": None}),
    (
        "access",
        "add_grant",
        (GrantRow(G, R, "worker2", "worker2", "x", "x", 5, 0, None, None, None),),
        {},
    ),
    ("access", "revoke_grant", (G,), {"at": "x", "by": "worker2"}),
    ("release", "new", (G,), {}),
    ("checkpoints", "add", (1, b"\0" * 32, "note", "worker2"), {}),
    ("checkpoints", "add_at_head", (1, b"\0" * 32, "note", "worker2"), {}),
    ("meta", "set", ("max_uses", "1000"), {}),
    ("meta", "delete", ("max_uses",), {}),
    ("users", "add", (UserRow("eve", ("admin",), b"\0" * 32, b"\0" * 32, "x", "worker2"),), {}),
    ("records", "update", (R,), {}),
    ("records", "put_field", (R, "name", 2, b"x"), {}),
    ("records", "delete", (R,), {"by": "worker2", "at": "x", "reason": "x"}),
    ("records", "mark_key_destroyed", (R,), {}),
    ("records", "replace_keyblob", (R, b"x"), {}),
    ("records", "put_keyblob_if_version", (R, b"x", 1), {}),
    ("records", "drop_index_tags", (R, "name"), {}),
    ("custodians", "add", (2, b"\0" * 32, "active"), {}),
    ("custodians", "set_state", (1, "retired"), {}),
    ("custodians", "add_holder", (1, "worker2", b"x"), {}),
    ("custodians", "delete", (1,), {}),
    ("slots", "put", ("officer1", "AAAA"), {}),
]


@pytest.mark.parametrize(
    ("repo", "method", "args", "kwargs"), FORBIDDEN, ids=[f"{r}.{m}" for r, m, _, _ in FORBIDDEN]
)
def test_a_write_outside_the_staff_allowlist_is_refused(
    served: VaultServer, repo: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    vs = served
    before = read(vs, "audit", "head")
    # Alone, in its own transaction ...
    refused(rpc(vs, "worker2", repo, method, *args, **kwargs), 403, "role")
    # ... and behind an allowed write in one batch: the batch runs nothing.
    req = _wire.request_row("worker2")
    r = batch(
        vs, "worker2", call("access", "add_request", req), call(repo, method, *args, **kwargs)
    )
    refused(r, 403, "role")
    assert read(vs, "access", "request", req.id) is None
    assert read(vs, "audit", "head") == before
    assert _wire.refusal_logged(vs, "worker2", "role")


def test_the_servers_own_settings_are_out_of_reach(served: VaultServer) -> None:
    """Release keys live under ``server/``: no role reads, overwrites or deletes them,
    by any spelling of the call the wire allows."""
    vs = served
    grant_id, _ = _wire.approved(vs)
    where = f"server/release/{grant_id}"
    for user in ("worker1", "worker2", "officer1"):
        refused(rpc(vs, user, "meta", "get", where), 403, "server_only")
        refused(rpc(vs, user, "meta", "get", key=where), 403, "server_only")
        # Inside a read-only batch, next to an allowed read.
        r = batch(
            vs,
            user,
            call("records", "count"),
            call("meta", "get", where),
            begin=False,
            commit=False,
        )
        refused(r, 403, "server_only")
    # An officer may write settings, but not the server's: resetting the
    # redemption counter or planting a release key of their choosing.
    refused(rpc(vs, "officer1", "meta", "set", where, "{}"), 403, "server_only")
    refused(rpc(vs, "officer1", "meta", "delete", where), 403, "server_only")
    # The key as bytes is another key in the database: it finds nothing.
    assert _wire.ok(rpc(vs, "worker1", "meta", "get", where.encode())) is None
    assert _wire.refusal_logged(vs, "worker2", "server_only")


def test_rows_that_name_who_acted_must_name_the_caller(served: VaultServer) -> None:
    vs = served
    # A request filed in another staff member's name.
    req = _wire.request_row("worker1")
    refused(rpc(vs, "worker2", "access", "add_request", req), 403, "binding")
    assert read(vs, "access", "request", req.id) is None
    # Another verifier's saved trust state (or its record heads / known tree).
    for verifier in ("worker1", "worker1#records", "worker1#tree", "officer1"):
        r = rpc(vs, "worker2", "statements", "save_state", verifier, 1, b"\0" * 32, b"x", b"x")
        refused(r, 403, "binding")
    # A log entry signed by the caller but naming another actor, and one naming
    # the caller but signed with someone else's key.
    before = read(vs, "audit", "head")
    other = log_rows(vs, vs.identity("worker2"), Event("worker1", "audit.checkpoint"))
    refused(rpc(vs, "worker2", "audit", "append", other), 403, "binding")
    stolen = log_rows(vs, vs.identity("worker1"), Event("worker2", "audit.checkpoint"))
    refused(rpc(vs, "worker2", "audit", "append", stolen), 403, "unverified")
    assert read(vs, "audit", "head") == before
    assert _wire.refusal_logged(vs, "worker2", "binding")


def test_a_staff_member_cannot_redeem_or_consume_without_a_logged_read(
    served: VaultServer,
) -> None:
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1")
    # The requester asks for the release key before any use: refused.
    refused(batch(vs, "worker1", call("release", "redeem", grant_id)), 403, "release_refused")
    # Another staff member asks for it: refused.
    refused(batch(vs, "worker2", call("release", "redeem", grant_id)), 403, "release_refused")
    # As a single call (the server runs it in a transaction of its own): refused.
    refused(rpc(vs, "worker1", "release", "redeem", grant_id), 403, "release_refused")
    # A use consumed with no read entry: refused at commit, nothing stored.
    r = batch(vs, "worker1", call("access", "use_grant", grant_id))
    refused(r, 409, "unverified")
    assert read(vs, "access", "grant", grant_id).uses == 0
    assert _wire.refusal_logged(vs, "worker2", "release_refused")


def test_a_read_entry_for_another_grant_does_not_cover_a_use(served: VaultServer) -> None:
    """The read entry must name the grant whose use is consumed."""
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1")
    rows = log_rows(vs, vs.identity("worker1"), Event("worker1", "grant.read", grant=G))
    r = batch(vs, "worker1", call("access", "use_grant", grant_id), call("audit", "append", rows))
    refused(r, 409, "unverified")
    assert read(vs, "access", "grant", grant_id).uses == 0


def test_what_staff_can_read_is_sealed_or_their_own(served: VaultServer) -> None:
    """Field values, key slots and key material: a staff member's reads get
    ciphertext or their own slot, never another's secret."""
    vs = served
    view = requests.get(
        vs.url + "/v1/vault", auth=HTTPSignatureAuth(vs.identity("worker2")), timeout=_wire.TIMEOUT
    )
    assert view.status_code == 200, view.text
    doc = decode(view.json()["result"])
    assert set(doc) == {"config", "schema", "slot", "witness", "methods"}
    # The calls the server answers (session 8): names from its method table only.
    assert doc["methods"] == sorted(f"{r}.{m}" for r, ms in METHODS.items() for m in ms)
    slots = json.loads((vs.home / "keyslots.json").read_text(encoding="utf-8"))["slots"]
    assert doc["slot"] == slots["worker2"] != slots["officer1"]
    assert "store" not in doc["config"]
    # The names of who has a slot, nothing of the slots.
    assert set(_wire.ok(rpc(vs, "worker2", "slots", "users"))) == set(slots)
    # Every sealed field of every record: no value of the imported rows in clear.
    ids = _wire.record_ids(vs)
    sealed = _wire.ok(rpc(vs, "worker2", "records", "fields_many", ids, None))
    blob = repr(sealed).encode() + b"".join(
        v for fields in sealed.values() for _, v in fields.values()
    )
    for i in range(len(ids)):
        for value in child_values(i).values():
            assert value.encode() not in blob
    # Key blobs are wrapped: worker2's own key does not open one.
    keyblobs = _wire.ok(rpc(vs, "worker2", "records", "keyblob_many", ids))
    assert set(keyblobs) == set(ids)
    for _version, blob_of_one in keyblobs.values():  # (key version, wrapped key)
        assert isinstance(blob_of_one, bytes) and len(blob_of_one) > 48
        with pytest.raises(DecryptionFailed):
            vs.identity("worker2").unseal(blob_of_one)


# -- findings, A-12 (findings-A.md): refused since session 8


def test_another_staff_member_cannot_consume_my_grant(served: VaultServer) -> None:
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1")
    # worker2 logs a read of worker1's grant in worker2's own name (a valid,
    # signed entry) and consumes its only use with it.
    rows = log_rows(vs, vs.identity("worker2"), Event("worker2", "grant.read", grant=grant_id))
    r = batch(vs, "worker2", call("access", "use_grant", grant_id), call("audit", "append", rows))
    refused(r, 403, "binding")
    assert read(vs, "access", "grant", grant_id).uses == 0
    # A grant that does not exist is no one's: refused too.
    refused(batch(vs, "worker2", call("access", "use_grant", G)), 403, "binding")
    assert _wire.refusal_logged(vs, "worker2", "binding")


def test_a_use_cannot_be_given_back_without_a_logged_failure(served: VaultServer) -> None:
    vs = served
    grant_id, token = _wire.approved(vs, "worker1")
    with vs.connect("worker1") as staff:
        staff.read_with_grant(token)  # the one use, logged and redeemed
    assert read(vs, "access", "grant", grant_id).uses == 1
    # Given back by another staff member, with nothing in the log.
    before = read(vs, "audit", "head")
    r = rpc(vs, "worker2", "access", "refund_use", grant_id)
    assert read(vs, "audit", "head")[0] == before[0]
    refused(r, 403, "binding")
    assert read(vs, "access", "grant", grant_id).uses == 1
    # By the requester, with no failed read logged (nothing, or a successful read).
    refused(rpc(vs, "worker1", "access", "refund_use", grant_id), 409, "unverified")
    ok_read = log_rows(vs, vs.identity("worker1"), Event("worker1", "grant.read", grant=grant_id))
    r = batch(
        vs, "worker1", call("access", "refund_use", grant_id), call("audit", "append", ok_read)
    )
    refused(r, 409, "unverified")
    assert read(vs, "access", "grant", grant_id).uses == 1
    assert read(vs, "audit", "head")[0] == before[0]
    # The library's refund (a read that failed before any plaintext): its failed
    # read entry beside it, in the same transaction, gives the use back.
    failed = log_rows(
        vs,
        vs.identity("worker1"),
        Event("worker1", "grant.read", "error", grant=grant_id, detail={"reason": "x"}),
    )
    r = batch(
        vs, "worker1", call("access", "refund_use", grant_id), call("audit", "append", failed)
    )
    assert _wire.ok(r) == [None, [True, None]]
    assert read(vs, "access", "grant", grant_id).uses == 0


def test_another_staff_member_cannot_replace_my_grant_cache(served: VaultServer) -> None:
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1", uses=2)
    # Key material of worker2's choosing, sealed to worker1's public key: worker1's
    # next read would take it as the released keys of the grant.
    planted = vs.identity("worker1").public.seal(b"chosen by worker2")
    r = rpc(vs, "worker2", "access", "set_grant_cache", grant_id, planted)
    refused(r, 403, "binding")
    refused(rpc(vs, "worker2", "access", "set_grant_cache", grant_id, None), 403, "binding")
    assert read(vs, "access", "grant", grant_id).cache is None


def test_staff_do_not_read_other_staffs_requests(served: VaultServer) -> None:
    vs = served
    ids = _wire.record_ids(vs)[:1]
    with vs.connect("worker1") as staff:
        req = staff.request_access(ids, ["name"], "case_management", "suspected neglect, visit")
    with vs.connect("worker2") as staff:
        mine = staff.request_access(ids, ["name"], "case_management", "home visit")
    r = rpc(vs, "worker2", "access", "request", req)
    refused(r, 403, "binding")
    # Inside a read batch, and inside a transaction of their own: the same.
    refused(batch(vs, "worker2", call("access", "request", req), commit=False), 403, "binding")
    r = batch(vs, "worker2", call("access", "request", req), begin=False, commit=False)
    refused(r, 403, "binding")
    assert _wire.refusal_logged(vs, "worker2", "binding")
    listed = _wire.ok(rpc(vs, "worker2", "access", "requests", None))
    assert {row.requester for row in listed} == {"worker2"}
    assert mine in {row.id for row in listed}
    # Their own row, an unknown id; officers read every row.
    assert _wire.ok(rpc(vs, "worker2", "access", "request", mine)).requester == "worker2"
    assert _wire.ok(rpc(vs, "worker2", "access", "request", R)) is None
    assert read(vs, "access", "request", req).requester == "worker1"
    assert req in {row.id for row in read(vs, "access", "requests", None)}


def test_index_tags_only_for_records_of_the_same_transaction(served: VaultServer) -> None:
    """Blind-index rows naming an existing record, written by staff outside the
    import that inserted it: refused (noise in duplicate detection and search)."""
    vs = served
    rid = _wire.record_ids(vs)[0]
    tags = [("name", b"\1" * 32, rid)]
    refused(rpc(vs, "worker2", "records", "add_index_tags", tags), 403, "binding")
    assert read(vs, "records", "find_by_tag", "name", b"\1" * 32) == []


def test_the_basis_index_only_beside_its_new_request(served: VaultServer) -> None:
    """Staff write a request's basis index (``meta.set`` of ``request_basis:<id>``)
    only in the transaction that adds that request: not for another's request, nor
    any other ``meta`` key (the honest legal-obligation request through the server
    is in tests/server/test_trust_sync_server.py)."""
    vs = served
    ids = _wire.record_ids(vs)[:1]
    with vs.connect("worker1") as staff:
        req = staff.request_access(ids, ["name"], "case_management", "home visit")
    key = request_basis_key(req)
    value = json.dumps({"basis": "vital_interests"}, sort_keys=True)
    refused(rpc(vs, "worker2", "meta", "set", key, value), 403, "binding")
    refused(rpc(vs, "worker1", "meta", "set", key, value), 403, "binding")
    refused(rpc(vs, "worker1", "meta", "set", "request_basis:x", value), 403, "role")
    assert read(vs, "meta", "get", key) is None


def test_a_batch_that_reads_or_names_too_much_runs_nothing(served: VaultServer) -> None:
    """One request's work is bounded before anything runs (finding A-12): log pages,
    trust syncs, record ids across the calls of a batch; 400 ``malformed``."""
    vs = served
    before = read(vs, "audit", "head")
    req = _wire.request_row("worker2")
    pages = [call("audit", "page", 0)] * 5  # 5 x 5,000 log entries
    r = batch(vs, "worker2", call("access", "add_request", req), *pages)
    refused(r, 400, "malformed")
    assert "too much in one batch" in r.json()["error"]
    assert read(vs, "access", "request", req.id) is None
    assert read(vs, "audit", "head") == before
    # Reads alone, outside a transaction: the same bound.
    syncs = [call("audit", "sync", 0)] * 5
    refused(batch(vs, "worker2", *syncs, begin=False, commit=False), 400, "malformed")
    ids = [R] * 5000
    many = [call("records", "fields_many", ids, None)] * 5  # 25,000 record ids
    refused(batch(vs, "worker2", *many, begin=False, commit=False), 400, "malformed")
    # A single call asking for more than the bound (a page limit, a signature range).
    refused(rpc(vs, "worker2", "records", "page", limit=10**6), 400, "malformed")
    refused(rpc(vs, "worker2", "audit", "signatures", 0, 10**6), 400, "malformed")
    # What the honest client sends stays far below it: a trust sync with an
    # operation's inputs, a page of record reads.
    head = read(vs, "audit", "head")[0]
    r = batch(
        vs,
        "worker2",
        call("audit", "sync", 0),
        call("records", "get_many", _wire.record_ids(vs)),
        call("records", "page", limit=1000),
        begin=False,
        commit=False,
    )
    assert _wire.ok(r)[1][0][0] >= head
