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
from tests.server._vaultserver import count_requests, make_vault, passphrase, rpc_read

EARLIER = 10


def test_issue13_an_approval_after_many_does_not_fetch_or_verify_old_checkpoints(
    tmp_path: Path,
) -> None:
    vs = make_vault(tmp_path, ("officer1", "worker1"))
    with Vault.open(vs.home, "worker1", passphrase("worker1")) as v:
        ids = v.add_records(
            [NewRecordInput("child", child_values(0, today=TODAY), consent(today=TODAY))]
        )
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
