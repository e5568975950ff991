"""Issue 18: a request's basis and a grant's logged Vault tokens through an index.

``basis_of`` and the revocation's ``_logged_accessors`` used to parse every
``request.create`` / ``request.approve`` entry of the log per call. They now
ask the log for the entries naming that request (grant) through an index on
ids derived from the entry bytes themselves (migration 4), so the lookup does
not grow with the log, and they still check every entry they get. The index
columns are generated: an insider cannot write them, and dropping the index
changes nothing but the speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlcipher3

from childvault.keys import IntegrityError
from childvault.vault import Basis
from tests._insider import Insider
from tests._log_db import old_store, query_plan
from tests.conftest import World, add_children

LEGAL = Basis("legal_obligation", recipient="法院", provision="第一百一十条", assessment="P-1")


def _requests(world: World, count: int) -> tuple[list[str], str]:
    """``count`` consent requests and one legal-obligation request among them."""
    with world.open("worker1") as v:
        ids = add_children(v, 1)
        made = [v.request_access(ids, ["name"], "case_management", f"r{i}") for i in range(count)]
        legal = v.request_access(ids, ["name"], "legal_protection", "协助调查", basis=LEGAL)
        made += [v.request_access(ids, ["name"], "case_management", "late") for _ in range(3)]
    return made, legal


def test_basis_of_on_a_log_of_many_requests(world: World) -> None:
    consent_ids, legal = _requests(world, 150)
    with world.open("officer1") as v:
        service = v._access
        assert service.basis_of(legal, "worker1").kind == "legal_obligation"
        assert service.basis_of(legal, "worker1").provision == "第一百一十条"
        for rid in consent_ids[::25] + consent_ids[-3:]:
            assert service.basis_of(rid, "worker1").kind == "consent"
        # The lookup reads the entries naming the request only, not the log.
        found = v._session.db.audit.entries_by_ref(("request.create",), request=legal)
        assert [json.loads(e)["request"] for e in found] == [legal]
        assert len(v._session.db.audit.entries_by_action(("request.create",))) == 154


def test_the_lookup_uses_the_index(world: World) -> None:
    """The query plan names the index: no scan of the log per lookup."""
    _requests(world, 5)
    with Insider(world, "worker1") as insider:
        plan = query_plan(
            insider,
            "SELECT entry FROM audit WHERE request_ref = ? AND action IN (?) ORDER BY seq",
            ["ab" * 16, "request.create"],
        )
        assert "audit_request_ref" in plan
        plan = query_plan(
            insider,
            "SELECT entry FROM audit WHERE grant_ref = ? AND action IN (?) ORDER BY seq",
            ["ab" * 16, "request.approve"],
        )
        assert "audit_grant_ref" in plan


def test_an_insider_cannot_write_the_index(world: World) -> None:
    """Pointing another request's entry at this request: the column is derived."""
    consent_ids, legal = _requests(world, 2)
    with Insider(world, "worker1") as insider:
        with pytest.raises(sqlcipher3.Error, match="generated column"):
            insider.execute(
                "UPDATE audit SET request_ref = ? WHERE request_ref = ?", [legal, consent_ids[0]]
            )
        with pytest.raises(sqlcipher3.Error):
            insider.execute(
                "INSERT INTO audit (seq, entry, hash, request_ref) VALUES (?, ?, ?, ?)",
                [10**6, b"{}", b"\0" * 32, legal],
            )
    with world.open("officer1") as v:
        # Unchanged: two officers still needed, the consent request stays consent.
        service = v._access
        assert service.basis_of(legal, "worker1").kind == "legal_obligation"
        assert service.basis_of(consent_ids[0], "worker1").kind == "consent"


def test_a_dropped_index_changes_only_the_speed(world: World) -> None:
    consent_ids, legal = _requests(world, 2)
    with Insider(world, "worker1") as insider:
        insider.execute("DROP INDEX audit_request_ref")
        insider.execute("DROP INDEX audit_grant_ref")
    with world.open("officer1") as v:
        service = v._access
        assert service.basis_of(legal, "worker1").kind == "legal_obligation"
        assert service.basis_of(consent_ids[1], "worker1").kind == "consent"
        v.approve(consent_ids[1])


def test_an_entry_rewritten_to_name_another_request_is_refused(world: World) -> None:
    """The index follows the entry bytes, so forging it means editing a signed
    entry: the verified log refuses before the basis is used."""
    consent_ids, legal = _requests(world, 2)
    with Insider(world, "worker1") as insider:
        (row,) = insider.execute(
            "SELECT seq, entry FROM audit WHERE request_ref = ? AND action = 'request.create'",
            [legal],
        )
        forged = bytes(row[1]).replace(legal.encode(), consent_ids[0].encode())
        insider.execute("UPDATE audit SET entry = ? WHERE seq = ?", [forged, row[0]])
    with world.open("officer1") as v, pytest.raises(IntegrityError):
        v.approve(legal)


def test_a_database_made_before_the_index_migrates(tmp_path: Path) -> None:
    """Migration 4 derives the ids of the entries already in the log (a damaged,
    non-JSON entry has none)."""
    req, grant = "ab" * 16, "cd" * 16
    entries = [
        b'{"action":"request.create","request":"' + req.encode() + b'","seq":0}',
        b"not json",
        b'{"action":"request.approve","grant":"' + grant.encode() + b'","seq":2}',
        b'{"action":"request.create","request":"' + b"ef" * 16 + b'","seq":3}',
    ]
    with old_store(tmp_path / "old.db", 3, entries) as store:
        assert store.audit.entries_by_ref(("request.create",), request=req) == [entries[0]]
        assert store.audit.entries_by_ref(("request.approve",), grant=grant) == [entries[2]]
        assert store.audit.entries_by_ref(("request.create",), grant=grant) == []
        assert store.audit.entries_by_ref(("request.create",)) == []
