"""Issue 18: `audit verify` checks actor signatures only after the verifier's own
signed "verified up to entry N, hash H" state; the chain from the first entry
proves the entries before N unchanged (docs/decisions.md). `--full` checks all.

Each attack below is one an insider with the database key can make; the
incremental verification must refuse it exactly as the full one does."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from childvault.keys import IntegrityError
from childvault.vault import _audit, _audit_checks, _merkle
from childvault.vault._audit import Event
from childvault.vault._backend import BackendLog
from childvault.vault._session import log_origin
from childvault.vault._time import iso
from tests._insider import Insider
from tests.conftest import PASSPHRASES, World, add_children

_AT = iso(datetime(2026, 11, 24, 10, 0, tzinfo=UTC))


def _verified_point(world: World, who: str) -> tuple[int, bytes]:
    with world.open(who) as v:
        v.verify_audit()
        point = v._session.verified_point()
    assert point is not None
    return point


def _append_forged(world: World, actor: str) -> None:
    """An entry chained onto the head in ``actor``'s name, without their signature."""
    event = Event(actor, "record.list", detail={"count": 0})
    with Insider(world, "worker2") as insider:
        seq, prev = insider.rows("audit", ["seq", "hash"], order_by="seq")[-1]
        entry = _audit.encode_entry(seq + 1, _AT, event, bytes(prev))
        insider.insert("audit", {"seq": seq + 1, "entry": entry, "hash": _merkle.leaf_hash(entry)})


def _rewrite_from(world: World, seq: int, actor: str) -> None:
    """Entry ``seq`` replaced by one in ``actor``'s name, and every later entry
    re-chained and re-hashed: the chain holds, without any checkpoint or witness."""
    with Insider(world, "worker2") as insider:
        rows = insider.rows("audit", ["seq", "entry", "hash"], order_by="seq")
        prev = bytes(rows[seq - 1][2])
        for number, raw, _ in rows[seq:]:
            obj = _audit.decode_entry(bytes(raw))
            if number == seq:
                obj["actor"] = actor
            obj["prev"] = prev.hex()
            entry = _audit.canonical(obj)
            digest = _merkle.leaf_hash(entry)
            insider.update("audit", {"entry": entry, "hash": digest}, {"seq": number})
            prev = digest


def test_a_second_verification_resumes_and_still_checks_the_chain(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 3)
    size, head = _verified_point(world, "officer1")
    with world.open("officer1") as v:
        incremental = v.verify_audit()
        full = v.verify_audit(full=True)
    assert (incremental.entries, incremental.root) == (full.entries, full.root)
    assert incremental.entries >= size
    with world.open("officer1") as v:
        assert v._session.db.audit.entry_at(size - 1)[1] == head  # type: ignore[index]


def test_a_forged_entry_after_the_verified_point_is_refused(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 1)
    _verified_point(world, "officer2")
    _append_forged(world, "officer1")
    with world.open("officer2") as v, pytest.raises(IntegrityError, match="not signed by them"):
        v.verify_audit()


def test_an_entry_rewritten_before_the_verified_point_is_refused(world: World) -> None:
    """The insider rewrites an old entry (worker1's, now in officer1's name) and
    re-chains every later one: the chain no longer ends in the verified hash, so
    every entry is checked again and the forged one's signature fails."""
    with world.open("worker1") as v:
        add_children(v, 2)
    size, _ = _verified_point(world, "officer2")
    with world.open("officer2") as v:
        seqs = [
            int(_audit.decode_entry(e)["seq"])
            for e in v._session.db.audit.entries_by_action(("record.create",))
        ]
    target = seqs[0]
    assert 0 < target < size
    _rewrite_from(world, target, "officer1")
    with world.open("officer2") as v, pytest.raises(IntegrityError, match="not signed by them"):
        v.verify_audit()


def test_a_saved_state_not_signed_by_the_verifier_is_not_used(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 1)
    _verified_point(world, "officer1")
    with Insider(world, "worker2") as insider:
        insider.update("trust_states", {"sig": b"\0" * 64}, {"verifier": "officer1"})
    _append_forged(world, "officer2")
    with world.open("officer1") as v:
        assert v._session.verified_point() is None
        with pytest.raises(IntegrityError, match="not signed by them"):
            v.verify_audit()


def test_verify_with_a_wrong_known_head_raises_the_mismatch(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 2)
        s = v._session
        log, origin, signers = BackendLog(s.db), log_origin(s.vault_id), s.signers()
        size = s.db.audit.size()
        plain = _audit.verify(log, origin=origin, signers=signers)
        _, head = s.db.audit.entry_at(size - 2)  # type: ignore[misc]
        good = _audit.verify(log, origin=origin, signers=signers, known=(size - 1, head))
        assert (good.entries, good.root) == (plain.entries, plain.root)
        with pytest.raises(_audit.KnownPrefixMismatch):
            _audit.verify(log, origin=origin, signers=signers, known=(size - 1, bytes(32)))
        with pytest.raises(_audit.KnownPrefixMismatch):
            _audit.verify(log, origin=origin, signers=signers, known=(size + 5, head))


def _page(n: int) -> list[tuple[int, bytes, bytes]]:
    rows: list[tuple[int, bytes, bytes]] = []
    prev: bytes | None = None
    for seq in range(n):
        entry = _audit.encode_entry(seq, _AT, Event("worker1", "record.list"), prev)
        digest = _merkle.leaf_hash(entry)
        rows.append((seq, entry, digest))
        prev = digest
    return rows


def test_the_known_page_check_agrees_with_the_full_one() -> None:
    rows = _page(40)
    full = _audit_checks._check_page(rows[1:], 1, rows[0][2].hex())
    light = _audit_checks._check_known_page(rows[1:], 1, rows[0][2].hex())
    assert full is not None and light == full
    # The first entry (no prev) is never checked the light way.
    assert _audit_checks._check_known_page(rows, 0, None) is None


def test_the_known_page_check_refuses_two_prev_members() -> None:
    """An entry with a second ``"prev":"<hex>"`` (in its detail) is left to the full check."""
    rows = _page(3)
    decoy = Event("worker1", "record.list", detail={"prev": rows[0][2].hex()})
    entry = _audit.encode_entry(1, _AT, decoy, rows[0][2])
    rows[1] = (1, entry, _merkle.leaf_hash(entry))
    assert _audit_checks._check_known_page(rows[1:2], 1, rows[0][2].hex()) is None
    assert _audit_checks._check_page(rows[1:2], 1, rows[0][2].hex()) is not None


def test_the_known_page_check_leaves_escaped_entries_to_the_full_one() -> None:
    """A backslash (an escaped quote could forge a second "prev" token)."""
    rows = _page(3)
    odd = Event("worker1", "record.list", detail={"reason": 'a "quoted" word'})
    entry = _audit.encode_entry(1, _AT, odd, rows[0][2])
    assert b"\\" in entry
    rows[1] = (1, entry, _merkle.leaf_hash(entry))
    assert _audit_checks._check_known_page(rows[1:2], 1, rows[0][2].hex()) is None
    assert _audit_checks._check_page(rows[1:2], 1, rows[0][2].hex()) is not None


def test_the_known_page_check_refuses_a_broken_link() -> None:
    rows = _page(5)
    assert _audit_checks._check_known_page(rows[2:], 2, rows[0][2].hex()) is None
    bad = [(seq, entry, bytes(32)) if seq == 3 else (seq, entry, d) for seq, entry, d in rows]
    assert _audit_checks._check_known_page(bad[1:], 1, rows[0][2].hex()) is None


def test_cli_audit_verify_full(world: World) -> None:
    from childvault.cli.main import cli

    with world.open("worker1") as v:
        add_children(v, 1)
    env = {
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": "officer1",
        "CHILDVAULT_PASSPHRASE": PASSPHRASES["officer1"],
        "LANG": "C.UTF-8",
    }
    for extra in ([], ["--full"]):
        result = CliRunner().invoke(cli, ["--json", "audit", "verify", *extra], env=env)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["ok"] is True
