"""Approve and read in two round trips each, and what happens when the vault moved
in between (issue 13, round 2 session 9; docs/server.md "Approve and read in two
round trips").

The operation's inputs come in one request, then its transaction is one
request: the writes at the head the inputs' sync answered, the decision or the
use queued in its ``_cas`` form, the release key with the commit, the
transaction's reads answered from the inputs' generation (``gen``). Here
another client commits between the two: the server refuses the commit (409,
nothing stored), the client runs the transaction again reading from the
server, and the result is exactly one approval, one use, one read entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from childvault.keys import ApprovalInvalid
from childvault.vault import NewRecordInput, Vault
from tests.conftest import TODAY, child_values, consent
from tests.server._vaultserver import VaultServer, make_vault, passphrase, rpc_read


def _served(root: Path) -> tuple[VaultServer, list[str]]:
    vs = make_vault(root, ("officer1", "worker1", "worker2"))
    with Vault.open(vs.home, "worker1", passphrase("worker1")) as v:
        # Dated from today: the vault runs on the system clock (consents of a
        # fixed day are back-dated once that day is a month past).
        ids = v.add_records(
            [
                NewRecordInput("child", child_values(i, today=TODAY), consent(today=TODAY))
                for i in range(3)
            ]
        )
    vs.start()
    return vs, ids


def _before_first(v: Vault, method: str, meanwhile: Callable[[], None]) -> list[tuple[str, int]]:
    """Run ``meanwhile`` (another client's commit) right before ``v`` first sends a
    request holding ``method``; record each request's calls and HTTP status."""
    backend: Any = v._session.db
    send, answer = backend._send, backend._answer
    seen: list[tuple[str, int]] = []
    done = [False]

    def sending(path: str, body: bytes, *, raw: bool = False) -> Any:
        calls = json.loads(body).get("calls", [])
        names = [f"{c.get('repo')}.{c.get('method')}" for c in calls]
        if method in names and not done[0]:
            done[0] = True
            meanwhile()
        seen.append((",".join(names), 0))
        return send(path, body, raw=raw)

    def status(r: Any, *, raw: bool = False) -> Any:
        seen[-1] = (seen[-1][0], r.status_code)
        return answer(r, raw=raw)

    backend._send, backend._answer = sending, status
    return seen


def _entries(vs: VaultServer, action: str, grant_or_request: str) -> list[dict[str, Any]]:
    size, _ = rpc_read(vs, "officer1", "audit", "head")
    rows = rpc_read(vs, "officer1", "audit", "page", 0, batch=5000)
    assert len(rows) == size
    found = [json.loads(r[1]) for r in rows]
    return [
        e
        for e in found
        if e["action"] == action
        and grant_or_request in (e.get("grant"), e.get("request"))
        and e["outcome"] == "ok"
    ]


def test_a_vault_moved_between_inputs_and_commit_runs_the_transaction_again(
    tmp_path: Path,
) -> None:
    vs, ids = _served(tmp_path)
    try:
        with (
            vs.connect("worker1") as worker,
            vs.connect("worker2") as other,
            vs.connect("officer1") as officer,
        ):
            # A first round: both sessions have verified the log (warm).
            worker.read_with_grant(
                officer.approve(
                    worker.request_access(ids[:1], ["name"], "case_management", "a")
                ).token
            )
            req = worker.request_access(ids, ["name"], "case_management", "b")

            def commit_elsewhere() -> None:
                other.request_access(ids[:1], ["name"], "case_management", "meanwhile")

            seen = _before_first(officer, "access.decide_cas", commit_elsewhere)
            approval = officer.approve(req)
            # Refused once (409, nothing stored), then run again from the server.
            committing = [(n, s) for n, s in seen if "access.add_grant" in n]
            assert [s for _, s in committing] == [409, 200], seen
            assert "access.decide_cas" in committing[0][0]
            assert "access.decide," in committing[1][0] + ","
            assert rpc_read(vs, "officer1", "access", "request", req).status == "approved"
            assert len(_entries(vs, "request.approve", req)) == 1

            seen = _before_first(worker, "access.use_grant_cas", commit_elsewhere)
            out = worker.read_with_grant(approval.token)
            assert sorted(out) == sorted(ids)
            using = [(n, s) for n, s in seen if "audit.append" in n]
            assert [s for _, s in using] == [409, 200], seen
            grant = rpc_read(vs, "officer1", "access", "grant", approval.grant_id)
            assert grant.uses == 1
            assert len(_entries(vs, "grant.read", approval.grant_id)) == 1
            # Spent: the next read is refused and its denial logged, as ever.
            head = rpc_read(vs, "officer1", "audit", "head")[0]
            with pytest.raises(ApprovalInvalid):
                worker.read_with_grant(approval.token)
            assert rpc_read(vs, "officer1", "audit", "head")[0] == head + 1
    finally:
        vs.stop()
