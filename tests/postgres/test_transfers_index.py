"""The transfers register and co-signatures through their indexes, on both stores
(issue 13, round 2 session 7; tests/insider/test_log_index_transfers.py has the
SQLCipher-only checks: query plans, generated columns, migration of an old log)."""

from __future__ import annotations

import json

import pytest

from childvault.keys import AccessDenied
from childvault.vault import Basis
from tests.conftest import World, add_children

LEGAL = Basis(
    "legal_obligation", recipient="某区人民法院", provision="第一百一十条", assessment="P-1"
)


def test_transfers_and_cosigners_answer_as_the_scans_did(any_world: World) -> None:
    with any_world.open("worker1") as v:
        ids = add_children(v, 1)
        consent = [v.request_access(ids, ["name"], "case_management", f"r{i}") for i in range(3)]
        legal = v.request_access(ids, ["name"], "legal_protection", "协助调查", basis=LEGAL)
    with any_world.open("officer1") as v, pytest.raises(AccessDenied, match="two officers"):
        v.approve(legal)
    with any_world.open("officer2") as v:
        v.cosign(legal)
    with any_world.open("officer1") as v:
        assert v._access._cosigners(legal) == ["officer2"]
        assert v._access._cosigners(consent[0]) == []
        tokens = [v.approve(req).token for req in [*consent, legal]]
    with any_world.open("worker1") as v:
        for token in tokens:
            v.read_with_grant(token)
    with any_world.open("admin") as v:
        transfers = v.transfers()
        audit = v._session.db.audit
        every_read = audit.entries_by_action(("grant.read",))
        indexed = audit.entries_with_recipient(("grant.read",))
    assert len(every_read) == 4
    assert [json.loads(e)["request"] for e in indexed] == [legal]
    assert [(t.request, t.recipient, list(t.records)) for t in transfers] == [
        (legal, "某区人民法院", ids)
    ]
