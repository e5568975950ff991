"""The trust sync through the server (issue 13: approve + read in a handful of round trips).

``audit.sync(n)`` answers, in one request and one snapshot, what ``audit.head``,
``audit.page(n)`` and ``audit.signatures`` answer one after another. A session
that has verified the log once asks it at the start of each verification
(``Session._trust_state``) and the replay and the record scan take their rows
from it; the client checks every row and signature exactly as before, so an
entry or signature an insider altered in the server's database is refused on
this path too. The log scans approve and read make (a request's basis, the
notice register, co-signatures) and the settings they read come in one request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from childvault.keys import AccessDenied, Identity, IntegrityError
from childvault.vault import Basis, Vault
from childvault.vault._remote._codec import decode
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

#: What an approval reads with its inputs for its transaction (session 9), and
#: the writes its one committing request starts with. The stored checkpoints
#: are not among them: the inputs hold those its resumed check reads
#: (``checkpoints.since``, round 2 session 11).
_APPROVAL_AHEAD = ["users.all", "checkpoints.latest_by", "meta.get"]
_APPROVAL_WRITES = ["access.add_grant", "release.new", "access.decide_cas", "audit.append"]


def _served(root: Path) -> tuple[VaultServer, list[str]]:
    vs = make_vault(root, ("officer1", "worker1", "worker2"))
    with Vault.open(vs.home, "worker1", passphrase("worker1")) as v:
        ids = add_children(v, 4)
    vs.start()
    return vs, ids


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VaultServer, list[str]]]:
    """A served vault with four records (added embedded, before the server starts)."""
    vs, ids = _served(tmp_path_factory.mktemp("vault"))
    try:
        yield vs, ids
    finally:
        vs.stop()


def test_sync_answers_what_head_page_and_signatures_answer(
    served: tuple[VaultServer, list[str]],
) -> None:
    vs, _ = served
    for user in ("worker1", "officer1"):
        size, head = rpc_read(vs, user, "audit", "head")
        for start in (0, 3, size - 1, size, size + 10):
            got = rpc_read(vs, user, "audit", "sync", start)
            rows = rpc_read(vs, user, "audit", "page", start, batch=5000)
            sigs = (
                rpc_read(vs, user, "audit", "signatures", rows[0][0], rows[-1][0]) if rows else {}
            )
            assert got == [size, head, rows, sigs]
        # audit.last: what an append reads, head() then entry_at(size - 1), together.
        entry = rpc_read(vs, user, "audit", "entry_at", size - 1)
        assert rpc_read(vs, user, "audit", "last") == [size, head, entry]
        # Every entry since the vault was made is signed by its actor, or by the
        # signature closing its run: the four children added embedded are one run
        # of four record.create entries, only the last of them signed.
        _, _, rows, sigs = rpc_read(vs, user, "audit", "sync", 0)
        unsigned = [seq for seq, _, _ in rows if seq not in sigs]
        assert len(unsigned) == 3 and len(sigs) == size - 3
        closing = unsigned[-1] + 1
        assert closing in sigs and unsigned == [closing - 3, closing - 2, closing - 1]
        for seq, entry, _ in rows[closing - 3 : closing + 1]:
            assert json.loads(entry)["action"] == "record.create", seq


def test_malformed_entry_numbers_and_strangers_are_refused(
    served: tuple[VaultServer, list[str]],
) -> None:
    vs, _ = served
    staff = vs.identity("worker1")
    for doc in (
        rpc_call("audit", "sync", "0"),
        rpc_call("audit", "sync", -1),
        rpc_call("audit", "sync", 1.5),
        rpc_call("audit", "sync", True),
        rpc_call("audit", "sync"),
        rpc_call("audit", "sync", 0, 1),
        rpc_call("audit", "sync", 0, batch=10),
        rpc_call("audit", "last", 0),
        rpc_call("audit", "last", start=0),
    ):
        assert_refused(signed_rpc(vs, staff, "/v1/rpc", {"txn": None, **doc}), 400, "malformed")
    # In a read-only batch the malformed call stops the whole batch before any runs.
    batch = {"calls": [rpc_call("audit", "head"), rpc_call("audit", "sync", "x")]}
    assert_refused(signed_rpc(vs, staff, "/v1/rpc/batch", batch), 400, "malformed")
    # The log is for active users of this vault only: a stranger's key, or another
    # key under a staff member's name, reads nothing.
    doc = {"txn": None, **rpc_call("audit", "sync", 0)}
    assert_refused(
        signed_rpc(vs, Identity.generate("mallory"), "/v1/rpc", doc), 401, "unknown_user"
    )
    assert_refused(
        signed_rpc(vs, Identity.generate("worker1"), "/v1/rpc", doc), 401, "invalid_signature"
    )


def test_approve_and_read_verify_from_one_sync(served: tuple[VaultServer, list[str]]) -> None:
    vs, ids = served
    with vs.connect("worker1") as worker, vs.connect("officer1") as officer:
        # A first round: each session verifies the log once (its resume point).
        req = worker.request_access(ids[:2], ["name"], "case_management", "家访")
        worker.read_with_grant(officer.approve(req).token)
        req = worker.request_access(ids, ["name", "guardian_phone"], "case_management", "家访")
        approving = count_requests(officer)
        token = officer.approve(req).token
        reading = count_requests(worker)
        out = worker.read_with_grant(token)
    assert sorted(out) == sorted(ids)
    assert all(set(fields) == {"name", "guardian_phone"} for fields in out.values())
    for sent, kind in ((approving, "approval"), (reading, "read")):
        outside = [calls for in_txn, calls in sent if not in_txn]
        # The operation's inputs came with the trust sync, in one request (an
        # approval's with what its checkpoint reads in its transaction).
        ahead = _APPROVAL_AHEAD if kind == "approval" else []
        assert outside[0] == ["audit.sync", f"inputs.{kind}", *ahead]
        outside[0] = outside[0][:2]
        # The head, the new entries and their signatures came with the sync; the
        # record scan resumed from it; the request, its basis (by its index), the
        # settings, the log scans and the records came with the inputs.
        for calls in outside:
            assert not {"audit.head", "audit.page", "audit.signatures"} & set(calls), calls
            assert not {"audit.entries_by_action", "audit.entries_by_ref"} & set(calls), calls
            assert not {"access.request", "records.get_many", "meta.get"} & set(calls), calls
    # Inside the transaction nothing reads the head: the append links to the head
    # the sync answered (round 2, session 9), and the server refuses it if it moved.
    for sent in (approving, reading):
        inside = [c for in_txn, calls in sent if in_txn for c in calls]
        assert not {"audit.last", "audit.head"} & set(inside), inside
    # Round 2, session 5 (docs/benchmarks.md): 34 and 26 before; session 6
    # started at 20 and 12. The operation inputs (inputs.approval, inputs.read)
    # bring every read the checks make before the writes with the sync; in the
    # transaction the reads an append and a checkpoint make next come with the
    # first write that has an answer, and a replay's page with its signatures.
    # Session 8 (docs/server.md "Approve in five round trips, read in three"): the
    # records' statements come with the inputs; the read's release key, the
    # approval's checkpoint and its witness reach with the commit. Session 9
    # (docs/server.md "Approve and read in two round trips"): the decision, the
    # use and the release key queued with the commit, the head predicted, the
    # checkpoint's reads answered from the inputs' generation.
    assert approving == [
        (False, ["audit.sync", "inputs.approval", *_APPROVAL_AHEAD]),
        (True, [*_APPROVAL_WRITES, "checkpoints.add_at_head_cas", "meta.set"]),
    ]
    assert len(reading) == 2
    assert reading[1][1][:2] == ["access.use_grant_cas", "audit.append"]


def test_fresh_sessions_keep_the_inputs_across_their_saved_state(tmp_path: Path) -> None:
    """A new connection per step (as every CLI command is): the first verification
    saves the session's trust state once the log grew past its saved point; the
    sync and inputs read before it are kept, so the operation does not read call
    by call afterwards (round 2, session 7), and the save is put off to the
    operation's own first request (session 8)."""
    vs, ids = _served(tmp_path)
    try:
        with vs.connect("worker1") as worker, vs.connect("officer1") as officer:
            # Both save a trust state; then the log grows past their saved points.
            req = worker.request_access(ids[:2], ["name"], "case_management", "家访")
            worker.read_with_grant(officer.approve(req).token)
            add_children(worker, 70)
        with vs.connect("worker1") as worker:
            req = worker.request_access(ids, ["name", "guardian_phone"], "case_management", "家访")
        with vs.connect("officer1") as officer:
            approving = count_requests(officer)
            token = officer.approve(req).token
        with vs.connect("worker1") as worker:
            reading = count_requests(worker)
            out = worker.read_with_grant(token)
    finally:
        vs.stop()
    assert sorted(out) == sorted(ids)
    for sent, kind, first in (
        (approving, "approval", _APPROVAL_WRITES),
        (reading, "read", ["access.use_grant_cas", "audit.append"]),
    ):
        # The saved state, the sync from it and the operation's inputs in one request ...
        ahead = _APPROVAL_AHEAD if kind == "approval" else []
        assert sent[0] == (False, [f"inputs.{kind}", *ahead])
        # ... then the saves (trust state, record heads) with the operation's writes.
        in_txn, calls = sent[1]
        assert in_txn and calls[2 : 2 + len(first)] == first, sent[1]
        assert set(calls[:2]) == {"statements.save_state"}, sent[1]
        outside = [calls for in_txn, calls in sent if not in_txn]
        for calls in outside[1:]:
            # Kept across the save: nothing the inputs answered is asked again.
            assert not {"audit.head", "audit.sync", "audit.signatures", "meta.get"} & set(calls)
            assert not {"audit.entries_by_action", "audit.entries_by_ref"} & set(calls), calls
            assert not {"access.request", "access.grant", "records.get_many"} & set(calls)
            assert not {"statements.saved_state", "users.get", "custodians.all"} & set(calls)
            assert not any(c.startswith("inputs.") for c in calls), calls
    # Session 6: 20 and 15 (the save emptied the cache and took the read's
    # after-commit reads). Warm: 10 and 5; a fresh session adds its save and the
    # record scan's page from its own (older) saved record heads (docs/server.md).
    # Session 8: the statements with the inputs; the release, the checkpoint and
    # the witness reach with the commit; the saves with the first writes: as warm.
    # Session 9: the inputs, then one request that commits (as warm).
    assert len(approving) == 2
    assert len(reading) == 2


def test_operation_inputs_are_refused_to_the_wrong_role_or_user(
    served: tuple[VaultServer, list[str]],
) -> None:
    vs, ids = served
    with vs.connect("worker1") as worker, vs.connect("officer1") as officer:
        req = worker.request_access(ids[:1], ["name"], "case_management", "家访")
        grant = officer.approve(req).grant_id
    staff, other = vs.identity("worker1"), vs.identity("worker2")
    officer_id = vs.identity("officer1")
    # Only an officer reads an approval's inputs.
    doc = {"txn": None, **rpc_call("inputs", "approval", req)}
    assert_refused(signed_rpc(vs, staff, "/v1/rpc", doc), 403, "role")
    answer = signed_rpc(vs, officer_id, "/v1/rpc", doc)
    assert answer.status_code == 200, answer.text
    calls = {(r[0], r[1]) for r in decode(answer.json()["result"])}
    assert {("access", "request"), ("audit", "entries_by_ref"), ("records", "get_many")} <= calls
    # A read's inputs are the grant's requester's only.
    doc = {"txn": None, **rpc_call("inputs", "read", grant)}
    assert_refused(signed_rpc(vs, other, "/v1/rpc", doc), 403, "role")
    assert signed_rpc(vs, staff, "/v1/rpc", doc).status_code == 200
    # Ids are 32 hex characters; the sync and record-heads flags booleans; nothing else.
    for bad in (
        rpc_call("inputs", "read", "x" * 32),
        rpc_call("inputs", "read", grant.upper()),
        rpc_call("inputs", "read", grant, 1),
        rpc_call("inputs", "read", grant, True, True, True),
        rpc_call("inputs", "read", grant, True, 1),
        rpc_call("inputs", "read"),
        rpc_call("inputs", "read", grant=grant),
    ):
        assert_refused(signed_rpc(vs, staff, "/v1/rpc", {"txn": None, **bad}), 400, "malformed")
    # Never inside a transaction (nothing there is read ahead for another).
    batch = {"txn": None, "begin": True, "calls": [rpc_call("inputs", "read", grant)]}
    assert_refused(signed_rpc(vs, staff, "/v1/rpc/batch", batch), 400, "malformed")


def test_an_altered_entry_or_signature_is_refused_through_the_sync(tmp_path: Path) -> None:
    vs, ids = _served(tmp_path)
    try:
        with vs.connect("worker1") as worker, vs.connect("officer1") as officer:
            req = worker.request_access(ids[:1], ["name"], "case_management", "家访")
            officer.approve(req)  # the officer's session has now verified the log once
            req = worker.request_access(ids[1:3], ["name"], "case_management", "家访")
            with Insider(vs.home, vs.identity("worker2")) as insider:
                ((seq, entry, sig),) = insider.execute(
                    "SELECT seq, entry, sig FROM audit ORDER BY seq DESC LIMIT 1"
                )
                assert json.loads(entry)["action"] == "request.create"
                changed = entry.replace(b"case_management", b"case_managemenX")
                forged = bytes(64)
                for column, value, why in (
                    ("entry", changed, "modified"),
                    ("sig", forged, "not signed by them"),
                ):
                    insider.update("audit", {column: value}, where={"seq": seq})
                    officer._session.db._cache.clear()  # no answer from before the edit
                    sent = count_requests(officer)
                    with pytest.raises(IntegrityError, match=why):
                        officer.approve(req)
                    # Refused through the operation inputs' path too.
                    assert (False, ["audit.sync", "inputs.approval", *_APPROVAL_AHEAD]) in sent
                    assert not any("release.new" in calls for _, calls in sent)
                    insider.update("audit", {"entry": entry, "sig": sig}, where={"seq": seq})
            officer._session.db._cache.clear()
            # Restored, the same request is approved: the refusals were the edits'.
            assert officer.approve(req).token
    finally:
        vs.stop()


def test_cosigners_and_transfers_through_the_server(tmp_path: Path) -> None:
    """Co-signatures through the request index (only for a legal obligation) and the
    transfers register through the recipient index, as in the embedded mode
    (tests/insider/test_log_index_transfers.py): no scan of every entry of an action."""
    vs = make_vault(tmp_path, ("officer1", "officer2", "worker1"))
    legal = Basis(
        "legal_obligation", recipient="某区人民法院", provision="第一百一十条", assessment="P"
    )
    with Vault.open(vs.home, "worker1", passphrase("worker1")) as v:
        ids = add_children(v, 2)
        consent = v.request_access(ids, ["name"], "case_management", "家访")
    vs.start()
    try:
        # Through the server: staff write the basis index of their own new request
        # (a regression: meta.set of it was refused to staff).
        with vs.connect("worker1") as worker:
            req = worker.request_access(ids, ["name"], "legal_protection", "协助调查", basis=legal)
        with vs.connect("officer1") as officer:
            with pytest.raises(AccessDenied, match="two officers"):
                officer.approve(req)
            sent = count_requests(officer)
            consent_token = officer.approve(consent).token
        assert not any("audit.entries_by_ref" in calls for _, calls in sent[1:])
        with vs.connect("officer2") as other:
            other.cosign(req)
        with vs.connect("officer1") as officer:
            sent = count_requests(officer)
            token = officer.approve(req).token
        # The co-signatures: one indexed look-up, not a scan of every co-signature.
        looked_up = [c for _, calls in sent for c in calls]
        assert "audit.entries_by_ref" in looked_up
        assert "audit.entries_by_action" not in looked_up
        with vs.connect("worker1") as worker:
            worker.read_with_grant(consent_token)
            worker.read_with_grant(token)
        with vs.connect("officer2") as other:
            sent = count_requests(other)
            transfers = other.transfers()
        assert ["audit.entries_with_recipient"] in [calls for _, calls in sent]
    finally:
        vs.stop()
    assert [(t.request, t.recipient, list(t.records)) for t in transfers] == [
        (req, "某区人民法院", ids)
    ]


def test_a_consent_transfer_through_the_server(tmp_path: Path) -> None:
    """A consent request naming a recipient (issue 15): the requester writes its basis
    index through the server, one officer approves, the read is a listed transfer."""
    vs = make_vault(tmp_path, ("officer1", "officer2", "worker1"))
    with Vault.open(vs.home, "worker1", passphrase("worker1")) as v:
        ids = add_children(v, 1)
    vs.start()
    try:
        with vs.connect("worker1") as worker:
            req = worker.request_access(
                ids,
                ["name"],
                "case_management",
                "转介",
                basis=Basis(recipient="某社工机构", assessment="PIA-9"),
            )
        with vs.connect("officer1") as officer:
            token = officer.approve(req).token
        with vs.connect("worker1") as worker:
            worker.read_with_grant(token)
        with vs.connect("officer2") as other:
            transfers = other.transfers()
    finally:
        vs.stop()
    assert [(t.request, t.recipient, t.basis) for t in transfers] == [
        (req, "某社工机构", "consent")
    ]


def test_a_save_put_off_is_committed_when_nothing_follows(tmp_path: Path) -> None:
    """A fresh session whose verification saves its state but makes no transaction
    of its own after it: the save, put off to the next transaction, is committed
    when the session closes (round 2, session 8)."""
    vs, _ = _served(tmp_path)
    try:
        with vs.connect("worker1") as worker:
            add_children(worker, 70)
        saved = rpc_read(vs, "officer1", "statements", "saved_state", "officer1")
        size, _ = rpc_read(vs, "officer1", "audit", "head")
        with vs.connect("officer1") as officer:
            sent = count_requests(officer)
            officer.verify_audit()
            # Put off, not sent yet: the stored state is the older one.
            assert not [calls for _, calls in sent if "statements.save_state" in calls]
            assert rpc_read(vs, "officer1", "statements", "saved_state", "officer1") == saved
        after = rpc_read(vs, "officer1", "statements", "saved_state", "officer1")
    finally:
        vs.stop()
    assert sent[-1] == (True, ["statements.save_state"])
    assert saved is None or saved[0] < size
    assert after is not None and after[0] == size


def test_a_read_in_the_session_that_requested_brings_its_record_heads(
    served: tuple[VaultServer, list[str]],
) -> None:
    """A session that requested (no record scan yet) and then reads: its saved record
    heads and the sync from the older saved point come with the read's inputs,
    so the record scan asks nothing more (round 2, session 8)."""
    vs, ids = served
    with vs.connect("worker1") as worker, vs.connect("officer1") as officer:
        req = worker.request_access(ids[:2], ["name"], "case_management", "家访")
        token = officer.approve(req).token
        reading = count_requests(worker)
        out = worker.read_with_grant(token)
    assert sorted(out) == sorted(ids[:2])
    assert reading[0] == (False, ["audit.sync", "inputs.read"])
    calls = [c for _, request in reading for c in request]
    assert not {"statements.saved_state", "audit.page", "audit.entry_at"} & set(calls), calls
    assert len(reading) == 2


def test_a_use_counter_reset_in_the_servers_database_is_refused(tmp_path: Path) -> None:
    """The grant's reads come with the read's inputs (``GRANT_ACTIONS``), so the
    check of its spent uses against the log costs no round trip: an insider's
    reset of ``grants.uses`` is refused (logged) before any use is taken."""
    vs, ids = _served(tmp_path)
    try:
        with vs.connect("worker1") as worker, vs.connect("officer1") as officer:
            approval = officer.approve(
                worker.request_access(ids[:1], ["name"], "case_management", "家访")
            )
            assert list(worker.read_with_grant(approval.token)) == ids[:1]
        with Insider(vs.home, vs.identity("worker2")) as insider:
            insider.update("grants", {"uses": 0}, where={"id": approval.grant_id})
        with vs.connect("worker1") as worker:
            reading = count_requests(worker)
            with pytest.raises(IntegrityError, match="spent in the log"):
                worker.read_with_grant(approval.token)
        with vs.connect("officer1") as officer:
            logged = [e["entry"] for e in officer.audit_entries()]
    finally:
        vs.stop()
    # The inputs held the grant's reads: only the refusal's own request followed.
    assert reading[0] == (False, ["inputs.read"])
    assert all(in_txn for in_txn, _ in reading[1:]), reading
    assert not any("access.use_grant_cas" in calls for _, calls in reading)
    assert [(e["action"], e["outcome"]) for e in logged if e.get("grant")][-2:] == [
        ("request.approve", "ok"),
        ("grant.read", "ok"),
    ]
    assert logged[-1]["action"] == "trust.refuse" and logged[-1]["detail"]["on"] == "grant.read"
