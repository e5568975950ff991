"""Co-signatures and the transfers register through indexes (issue 13, round 2 session 7).

An approval's co-signers (``AccessService._cosigners``) used to parse every
``request.cosign`` entry of the log, and the transfers register every
``grant.read`` entry (every read ever made). Co-signatures are now found
through the request index (migration 4) and only for a legal-obligation
request; the register reads the entries whose detail names a recipient
through an index on a column derived from the entry bytes (migration 5).
Both still parse and check every entry they get, so the answers are the
same; the index columns are generated, so an insider cannot write them, and
dropping the index changes nothing but the speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlcipher3

from childvault.keys import AccessDenied
from childvault.vault import Basis
from tests._insider import Insider
from tests._log_db import old_store, query_plan
from tests.conftest import World, add_children

LEGAL = Basis(
    "legal_obligation", recipient="某区人民法院", provision="第一百一十条", assessment="P-1"
)
OTHER = Basis(
    "legal_obligation", recipient="某市公安局", provision="第一百一十一条", assessment="P-2"
)


def _reads(world: World, consent_reads: int) -> tuple[list[str], list[str]]:
    """``consent_reads`` reads without a recipient, then two legal-obligation reads
    (two recipients) co-signed by officer2: the reads' ids and the legal requests."""
    with world.open("worker1") as v:
        ids = add_children(v, 2)
        consent = [
            v.request_access(ids[:1], ["name"], "case_management", f"r{i}")
            for i in range(consent_reads)
        ]
        legal = [
            v.request_access(ids, ["name"], "legal_protection", "协助调查", basis=basis)
            for basis in (LEGAL, OTHER)
        ]
    with world.open("officer2") as v:
        for req in legal:
            v.cosign(req)
    with world.open("officer1") as v:
        tokens = [v.approve(req).token for req in consent + legal]
    with world.open("worker1") as v:
        for token in tokens:
            v.read_with_grant(token)
    return ids, legal


def test_transfers_read_only_the_entries_naming_a_recipient(world: World) -> None:
    ids, legal = _reads(world, 12)
    with world.open("admin") as v:
        transfers = v.transfers()
        db = v._session.db
        every_read = db.audit.entries_by_action(("grant.read",))
        indexed = db.audit.entries_with_recipient(("grant.read",))
    # The same rows as folding every read entry (what transfers did before).
    expected = []
    for raw in every_read:
        doc = json.loads(raw)
        if doc["outcome"] == "ok" and (doc.get("detail") or {}).get("recipient"):
            expected.append((doc["seq"], doc["detail"]["recipient"], doc["request"]))
    assert [(t.seq, t.recipient, t.request) for t in transfers] == expected
    assert [t.recipient for t in transfers] == ["某区人民法院", "某市公安局"]
    assert [t.request for t in transfers] == legal
    assert all(list(t.records) == ids for t in transfers)
    # The index answers the two transfers only, not the 12 other reads.
    assert len(every_read) == 14
    assert [json.loads(e)["request"] for e in indexed] == legal
    assert db.audit.entries_with_recipient(()) == []


def test_the_lookups_use_the_indexes(world: World) -> None:
    _reads(world, 1)
    with Insider(world, "worker1") as insider:
        plan = query_plan(
            insider,
            "SELECT entry FROM audit WHERE recipient_ref IS NOT NULL "
            "AND action IN (?) ORDER BY seq",
            ["grant.read"],
        )
        assert "audit_recipient_ref" in plan
        plan = query_plan(
            insider,
            "SELECT entry FROM audit WHERE request_ref = ? AND action IN (?) ORDER BY seq",
            ["ab" * 16, "request.cosign"],
        )
        assert "audit_request_ref" in plan


def test_a_cosignature_counts_for_its_own_request_only(world: World) -> None:
    """Found through the request index: officer2's co-signature of one legal request
    does not stand for another, and an officer cannot approve an uncosigned one."""
    with world.open("worker1") as v:
        ids = add_children(v, 1)
        first = v.request_access(ids, ["name"], "legal_protection", "协助调查", basis=LEGAL)
        second = v.request_access(ids, ["name"], "legal_protection", "协助调查", basis=OTHER)
    with world.open("officer2") as v:
        v.cosign(first)
    with world.open("officer1") as v:
        with pytest.raises(AccessDenied, match="two officers"):
            v.approve(second)
        assert v._access._cosigners(first) == ["officer2"]
        assert v._access._cosigners(second) == []
        assert v.approve(first).token


def test_an_insider_cannot_write_the_recipient_column(world: World) -> None:
    _reads(world, 1)
    with (
        Insider(world, "worker1") as insider,
        pytest.raises(sqlcipher3.Error, match="generated column"),
    ):
        insider.execute("UPDATE audit SET recipient_ref = 'x' WHERE recipient_ref IS NULL")
    with world.open("admin") as v:
        assert [t.recipient for t in v.transfers()] == ["某区人民法院", "某市公安局"]


def test_a_dropped_index_changes_only_the_speed(world: World) -> None:
    _reads(world, 1)
    with Insider(world, "worker1") as insider:
        insider.execute("DROP INDEX audit_recipient_ref")
        insider.execute("DROP INDEX audit_request_ref")
    with world.open("admin") as v:
        assert [t.recipient for t in v.transfers()] == ["某区人民法院", "某市公安局"]


def test_a_database_made_before_the_index_migrates(tmp_path: Path) -> None:
    """Migration 5 derives the recipient of the entries already in the log (a
    damaged, non-JSON entry, or one without a recipient, has none)."""
    entries = [
        b'{"action":"grant.read","detail":{"recipient":"\xe6\xb3\x95\xe9\x99\xa2"},"seq":0}',
        b"not json",
        b'{"action":"grant.read","detail":{},"seq":2}',
        b'{"action":"grant.read","seq":3}',
        b'{"action":"request.create","detail":{"recipient":"x"},"seq":4}',
        b'{"action":"grant.read","detail":{"recipient":"y"},"seq":5}',
    ]
    with old_store(tmp_path / "old.db", 5, entries) as store:
        found = store.audit.entries_with_recipient(("grant.read",))
        assert found == [entries[0], entries[5]]
        both = store.audit.entries_with_recipient(("grant.read", "request.create"))
        assert both == [entries[0], entries[4], entries[5]]
