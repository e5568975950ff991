"""Batched record reads through the server (issue 13: approve + read in a handful of
round trips).

``records.get_many`` / ``keyblob_many`` / ``fields_many`` are reads open to every
active user. The remote backend sends the three in one request
(``_record_trust.fetch``) and answers the one-record reads of the same records
from that answer; the client still checks every record against its latest
signed statement, so a row an insider altered in the server's database is
refused at approval and at read, on the batched path as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from childvault.keys import Identity, IntegrityError, RecordKeys
from childvault.vault import Vault, _audit, _record_trust
from childvault.vault._fieldcrypto import seal_field
from tests._insider import Insider
from tests.conftest import add_children
from tests.server._vaultserver import (
    VaultServer,
    assert_refused,
    count_requests,
    make_vault,
    passphrase,
    rpc_call,
    rpc_read,
    signed_rpc,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VaultServer, list[str]]]:
    """A served vault with six records (added embedded, before the server starts)."""
    vs = make_vault(tmp_path_factory.mktemp("vault"), ("officer1", "worker1", "worker2"))
    with Vault.open(vs.home, "worker1", passphrase("worker1")) as v:
        ids = add_children(v, 6)
    vs.start()
    try:
        yield vs, ids
    finally:
        vs.stop()


def _calls(sent: list[tuple[bool, list[str]]]) -> list[list[str]]:
    """The calls of each request :func:`count_requests` saw (in a transaction or not)."""
    return [calls for _, calls in sent]


def test_staff_read_many_records_in_one_request_with_the_single_answers(
    served: tuple[VaultServer, list[str]],
) -> None:
    vs, ids = served
    asked = [ids[2], "f" * 32, ids[0], ids[2]]
    rows = rpc_read(vs, "worker1", "records", "get_many", asked)
    blobs = rpc_read(vs, "worker1", "records", "keyblob_many", asked)
    fields = rpc_read(vs, "worker1", "records", "fields_many", asked, None)
    named = rpc_read(vs, "worker1", "records", "fields_many", asked, ["name", "nope"])
    for rid in asked:
        assert rows.get(rid) == rpc_read(vs, "worker1", "records", "get", rid)
        assert blobs.get(rid) == rpc_read(vs, "worker1", "records", "keyblob", rid)
        assert fields[rid] == rpc_read(vs, "worker1", "records", "fields_all", rid)
        assert named[rid] == rpc_read(vs, "worker1", "records", "fields", rid, ["name", "nope"])
    assert "f" * 32 not in rows and fields["f" * 32] == {}
    # Through the library client: the three are one request, and the one-record
    # reads of those records that follow are answered from it.
    with vs.connect("worker1") as v:
        db = v._session.db
        sent = count_requests(v)
        fetched = _record_trust.fetch(db, ids[:4])
        assert _calls(sent) == [["records.get_many", "records.keyblob_many", "records.fields_many"]]
        assert set(fetched.rows) == set(fetched.blobs) == set(fetched.fields) == set(ids[:4])
        for rid in ids[:4]:
            assert db.records.get(rid) == fetched.rows[rid]
            assert db.records.keyblob(rid) == fetched.blobs[rid]
            assert _record_trust.stored_fields(db, rid) == [
                (n, v_, ct) for n, (v_, ct) in sorted(fetched.fields[rid].items())
            ]
        assert len(sent) == 1


def test_malformed_ids_and_strangers_are_refused(
    served: tuple[VaultServer, list[str]],
) -> None:
    vs, ids = served
    staff = vs.identity("worker1")
    for method, args in (
        ("get_many", [ids[0]]),  # a string, not a list of ids
        ("get_many", [[ids[0], 7]]),
        ("keyblob_many", [[ids[0]], ["name"]]),  # names only with fields_many
        ("fields_many", [[ids[0]], "name"]),
        ("fields_many", [["x" * 65]]),
        ("get_many", [[ids[0]] * 5001]),
    ):
        doc = {"txn": None, **rpc_call("records", method, *args)}
        assert_refused(signed_rpc(vs, staff, "/v1/rpc", doc), 400, "malformed")
    # In a read-only batch the malformed call stops the whole batch before any runs.
    batch = {"calls": [rpc_call("records", "get", ids[0]), rpc_call("records", "get_many", ids[0])]}
    assert_refused(signed_rpc(vs, staff, "/v1/rpc/batch", batch), 400, "malformed")
    # Reads are for active users of this vault only: a stranger's key, or another
    # key under a staff member's name, reads nothing.
    doc = {"txn": None, **rpc_call("records", "get_many", ids)}
    assert_refused(
        signed_rpc(vs, Identity.generate("mallory"), "/v1/rpc", doc), 401, "unknown_user"
    )
    assert_refused(
        signed_rpc(vs, Identity.generate("worker1"), "/v1/rpc", doc), 401, "invalid_signature"
    )


def _forge(vs: VaultServer, record: str, name: str) -> None:
    """worker2 seals ``name`` under a key of their own, wraps it to the custodian key
    (as any writer can) and puts both into ``record``'s rows in the server's database."""
    with vs.connect("worker2") as v:
        vault_id = v._session.vault_id
        version = v._session.db.records.get(record).version  # type: ignore[union-attr]
        sealed, key = seal_field(
            name.encode(), vault_id=vault_id, record_id=record, field="name", version=1
        )
        (blob,) = v._session.keys.writer().wrap(
            [RecordKeys(record, version, {"name": key}, new=True)]
        )
    with Insider(vs.home, vs.identity("worker2")) as insider:
        insider.update("fields", {"value": sealed}, {"record_id": record, "name": "name"})
        insider.update("keyblobs", {"blob": blob}, {"record_id": record})


def _ok_reads(vs: VaultServer, grant: str) -> list[dict[str, Any]]:
    with vs.connect("officer1") as v:
        entries = [
            _audit.decode_entry(e)
            # By the grant's index: the server refuses a scan of every read (RV2-1).
            for e in v._session.db.audit.entries_by_ref(("grant.read",), grant=grant)
        ]
    return [e for e in entries if e["grant"] == grant and e["outcome"] == "ok"]


def test_a_record_altered_in_the_servers_database_is_refused_on_the_batch_path(
    served: tuple[VaultServer, list[str]],
) -> None:
    vs, ids = served
    # Read: approved honestly, then altered before the read; the batched read of
    # the three records still checks each one, and nothing is decrypted or used.
    with vs.connect("worker1") as worker, vs.connect("officer1") as officer:
        req = worker.request_access(ids[3:6], ["name"], "case_management", "家访")
        approval = officer.approve(req)
        _forge(vs, ids[4], "伪造")
        sent = count_requests(worker)
        with pytest.raises(IntegrityError, match=ids[4]):
            worker.read_with_grant(approval.token)
        # The three records in one batch: with the read's inputs (since round 2,
        # session 7 they outlive the session's save of its own trust state), or
        # on their own when the inputs are not at hand.
        assert any(
            calls == ["records.get_many", "records.keyblob_many", "records.fields_many"]
            or "inputs.read" in calls
            for calls in _calls(sent)
        )
        assert not any("release.redeem" in calls for calls in _calls(sent))
    assert _ok_reads(vs, approval.grant_id) == []
    # Approve: a request naming the altered record is refused, and stays pending.
    with vs.connect("worker1") as worker, vs.connect("officer1") as officer:
        req = worker.request_access([ids[1], ids[4]], ["name"], "case_management", "家访")
        with pytest.raises(IntegrityError, match=ids[4]):
            officer.approve(req)
        assert officer._session.db.access.request(req).status == "pending"  # type: ignore[union-attr]
