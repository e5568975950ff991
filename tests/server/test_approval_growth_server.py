"""Issue 13 and scale (round 2 session 11) through a real ``childvault serve``: an
approval after many approvals neither fetches nor verifies the old checkpoints.

Before, every stored checkpoint (one per earlier approval) travelled with each
approval (``checkpoints.all`` read ahead with its inputs) and was verified
again. Now the approval's inputs hold the officer's latest checkpoint and the
stored ones of trees at least that large (``checkpoints.since``): what the
resumed check reads (docs/decisions.md "An approval reads only the checkpoints
that bind it"). Counted as requests and as notes verified, not timed.
"""

from __future__ import annotations

from pathlib import Path

from childvault.vault import NewRecordInput, Vault, _note
from tests.conftest import TODAY, child_values, consent
from tests.server._vaultserver import (
    VaultServer,
    assert_refused,
    count_requests,
    make_vault,
    passphrase,
    rpc_call,
    rpc_read,
    signed_rpc,
    start_older,
)

EARLIER = 10


def _served(root: Path) -> tuple[VaultServer, list[str]]:
    vs = make_vault(root, ("officer1", "worker1"))
    with Vault.open(vs.home, "worker1", passphrase("worker1")) as v:
        ids = v.add_records(
            [NewRecordInput("child", child_values(0, today=TODAY), consent(today=TODAY))]
        )
    return vs, ids


def test_issue13_an_approval_after_many_does_not_fetch_or_verify_old_checkpoints(
    tmp_path: Path,
) -> None:
    vs, ids = _served(tmp_path)
    vs.start()
    try:
        with vs.connect("worker1") as worker, vs.connect("officer1") as officer:

            def approve_one() -> tuple[list[tuple[bool, list[str]]], int]:
                req = worker.request_access(ids, ["name"], "case_management", "b")
                sent = count_requests(officer)
                _note._VERIFIED.clear()
                worker.read_with_grant(officer.approve(req).token)
                return sent, len(_note._VERIFIED)

            first_sent, first_notes = approve_one()
            for _ in range(EARLIER):
                approve_one()
            stored = rpc_read(vs, "officer1", "checkpoints", "all")
            assert len(stored) > EARLIER
            sent, notes = approve_one()
            calls = [call for _, batch in sent for call in batch]
            assert "inputs.approval" in calls
            # Not one stored checkpoint per earlier approval: none read wholesale...
            assert "checkpoints.all" not in calls
            # ... no more requests than the first approval made ...
            assert len(sent) <= len(first_sent)
            # ... and the same few notes verified (worker's read included), not
            # one per earlier approval.
            assert notes <= max(first_notes, 4) < EARLIER
            assert len(rpc_read(vs, "officer1", "checkpoints", "all")) == len(stored) + 1
    finally:
        vs.stop()


def test_checkpoints_since_takes_one_tree_size(tmp_path: Path) -> None:
    vs, _ = _served(tmp_path)
    vs.start()
    try:
        officer = vs.identity("officer1")
        for args in (("3",), (-1,), (1, 2), (True,)):
            call = {"txn": None, **rpc_call("checkpoints", "since", *args)}
            r = signed_rpc(vs, officer, "/v1/rpc", call)
            assert_refused(r, 400, "malformed")
        assert rpc_read(vs, "officer1", "checkpoints", "since", 0) == []
    finally:
        vs.stop()


def test_an_older_server_without_since_still_approves_from_every_checkpoint(
    tmp_path: Path,
) -> None:
    vs, ids = _served(tmp_path)
    try:
        start_older(vs, "checkpoints.since")  # a server from before session 11
        with vs.connect("worker1") as worker, vs.connect("officer1") as officer:
            for _ in range(3):
                req = worker.request_access(ids, ["name"], "case_management", "b")
                sent = count_requests(officer)
                worker.read_with_grant(officer.approve(req).token)
                calls = [call for _, batch in sent for call in batch]
                # The resumed check's rows come from the whole list, as before.
                assert "checkpoints.all" in calls
                assert "checkpoints.since" not in calls
        assert len(rpc_read(vs, "officer1", "checkpoints", "all")) == 3
        r = signed_rpc(
            vs,
            vs.identity("officer1"),
            "/v1/rpc",
            {"txn": None, **rpc_call("checkpoints", "since", 0)},
        )
        assert_refused(r, 400, "unknown_method")
    finally:
        vs.stop()
