"""Approvals check the log from the approving officer's own last checkpoint.

The entries a checkpoint covers are fixed by its signature; an approval
therefore resumes from the acting officer's latest checkpoint (signature
checked with the officer's own unlocked key, stored frontier checked against
the signed root) and reads only the newer entries. Anything that does not hold
up falls back to verifying the whole log. `audit verify`, `audit checkpoint`
and decommissioning always verify everything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from childvault.keys import IntegrityError
from childvault.vault import _audit, _merkle
from tests._insider import Insider, at_least
from tests._log_db import old_store
from tests.conftest import World, add_children
from tests.test_reports import grant


@pytest.fixture
def resumed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Record the ``resume`` argument of every log verification."""
    calls: list[Any] = []
    real = _audit.verify

    def spy(*args: Any, **kwargs: Any) -> _audit.VerifyReport:
        report = real(*args, **kwargs)
        calls.append((kwargs.get("resume"), report))
        return report

    monkeypatch.setattr(_audit, "verify", spy)
    yield calls


def _approved_twice(world: World) -> list[str]:
    with world.open("worker1") as v:
        ids = add_children(v, 3)
    grant(world, ids[:1], ("name",))
    with world.open("worker1") as v:
        add_children(v, 2)  # entries after officer1's checkpoint
    return ids


def _officer1_sizes(world: World) -> list[int]:
    with Insider(world, "worker1") as insider:
        return [n for (n,) in insider.rows("checkpoints", ["size"], where={"signer": "officer1"})]


def _rehash(insider: Insider, seq: int, old: bytes, new: bytes) -> tuple[bytes, bytes]:
    """An insider edits entry ``seq`` (``old`` -> ``new``) and stores its new hash.

    Returns (the entry as it was, its new leaf hash)."""
    ((entry,),) = insider.rows("audit", ["entry"], where={"seq": seq})
    changed = bytes(entry).replace(old, new, 1)
    assert changed != bytes(entry)
    digest = _merkle.leaf_hash(changed)
    insider.update("audit", {"entry": changed, "hash": digest}, where={"seq": seq})
    return bytes(entry), digest


def test_approval_resumes_from_the_officers_own_last_checkpoint(
    world: World, resumed: list[Any]
) -> None:
    ids = _approved_twice(world)
    (first,) = _officer1_sizes(world)
    resumed.clear()
    grant(world, ids[1:2], ("name",))
    (resume, report) = resumed[-1]
    assert resume is not None and resume.size == first
    assert report.checked_from == first
    # The checkpoint signed on the resumed frontier is the whole log's root.
    with world.open("admin") as v:
        full = v.verify_audit()
    with Insider(world, "worker1") as insider:
        size, root = insider.rows(
            "checkpoints", ["size", "root"], where={"signer": "officer1"}, order_by="id"
        )[-1]
        hashes = [bytes(h) for (h,) in insider.rows("audit", ["hash"], order_by="seq")]
    assert bytes(root) == _merkle.root_of(hashes[:size])
    assert full.entries >= size


def test_first_approval_by_an_officer_verifies_the_whole_log(
    world: World, resumed: list[Any]
) -> None:
    ids = _approved_twice(world)
    resumed.clear()
    grant(world, ids[1:2], ("name",), officer="officer2")
    (resume, report) = resumed[-1]
    assert resume is None and report.checked_from == 0


def test_tampered_resume_state_falls_back_to_full_verification(
    world: World, resumed: list[Any]
) -> None:
    ids = _approved_twice(world)
    with Insider(world, "worker1") as insider:
        ((blob,),) = insider.rows("checkpoints", ["resume_state"], where={"signer": "officer1"})
        forged = bytes([blob[0] ^ 1]) + bytes(blob[1:])
        insider.update("checkpoints", {"resume_state": forged}, where={"signer": "officer1"})
    resumed.clear()
    grant(world, ids[1:2], ("name",))
    assert resumed[-1][0] is None and resumed[-1][1].checked_from == 0


def test_checkpoint_row_relabelled_as_the_officers_is_not_resumed_from(
    world: World, resumed: list[Any]
) -> None:
    # An insider copies officer2's (valid) checkpoint, larger than any of
    # officer1's, and labels it as officer1's: officer1's own key does not
    # verify it, so officer1's approval verifies everything.
    ids = _approved_twice(world)
    grant(world, ids[1:2], ("name",), officer="officer2")
    columns = ["size", "root", "note", "created_at", "resume_state"]
    with Insider(world, "worker1") as insider:
        for row in insider.rows("checkpoints", columns, where={"signer": "officer2"}):
            insider.insert(
                "checkpoints", {**dict(zip(columns, row, strict=True)), "signer": "officer1"}
            )
    resumed.clear()
    grant(world, ids[2:3], ("name",))
    assert resumed[-1][0] is None and resumed[-1][1].checked_from == 0


def test_edit_after_the_officers_checkpoint_is_refused_at_approval(world: World) -> None:
    ids = _approved_twice(world)
    (first,) = _officer1_sizes(world)
    with Insider(world, "worker1") as insider:
        _rehash(insider, first, b'"worker1"', b'"worker2"')
    with pytest.raises(IntegrityError, match=f"entry {first + 1} does not link"):
        grant(world, ids[1:2], ("name",))


def test_edit_of_the_entry_before_the_resume_point_is_refused_at_approval(world: World) -> None:
    # The first new entry links to the last covered one: its bytes must still
    # match its stored hash.
    ids = _approved_twice(world)
    (first,) = _officer1_sizes(world)
    with Insider(world, "worker1") as insider:
        ((entry,),) = insider.rows("audit", ["entry"], where={"seq": first - 1})
        changed = bytes(entry).replace(b'"ok"', b'"no"')
        insider.update("audit", {"entry": changed}, where={"seq": first - 1})
    with pytest.raises(IntegrityError, match=f"entry {first - 1} was modified"):
        grant(world, ids[1:2], ("name",))


def test_rehashed_last_covered_entry_is_refused_at_approval(world: World) -> None:
    # Edited *and* re-hashed, with the next entry's link rewritten to match:
    # the chain holds, but the last entry the officer's checkpoint covers is
    # not the one it signed.
    ids = _approved_twice(world)
    (first,) = _officer1_sizes(world)
    with Insider(world, "worker1") as insider:
        entry, digest = _rehash(insider, first - 1, b'"officer1"', b'"officer2"')
        _rehash(insider, first, _merkle.leaf_hash(entry).hex().encode(), digest.hex().encode())
    with pytest.raises(
        IntegrityError,
        match=(
            # the trust replay before the approval (issue 12) meets the break first
            rf"diverged: entry {first - 1} is not the one|log entry {first + 1} does not link"
        ),
    ):
        grant(world, ids[1:2], ("name",))


def test_log_cut_below_the_officers_checkpoint_is_refused_at_approval(world: World) -> None:
    # Cut, then new entries written over the cut: the entry the officer's
    # checkpoint ends with is not there any more.
    ids = _approved_twice(world)
    (first,) = _officer1_sizes(world)
    with Insider(world, "worker1") as insider:
        insider.delete("audit", where={"seq": at_least(first - 2)})
    with pytest.raises(
        IntegrityError,
        match=f"diverged: entry {first - 1} is not the one|entry {first - 1} is in the name",
    ):
        grant(world, ids[1:2], ("name",))


def test_log_cut_below_the_checkpoint_with_nothing_after_is_truncated(world: World) -> None:
    ids = _approved_twice(world)
    (first,) = _officer1_sizes(world)
    with world.open("worker1") as v:
        req = v.request_access(ids[1:2], ("name",), "case_management", "本人查询")
    with Insider(world, "worker1") as insider:
        insider.delete("audit", where={"seq": at_least(first - 2)})
    with world.open("officer1") as v, pytest.raises(IntegrityError, match="truncated"):
        v.approve(req)


def test_explicit_checkpoint_verifies_the_whole_log(world: World, resumed: list[Any]) -> None:
    _approved_twice(world)
    resumed.clear()
    with world.open("officer1") as v:
        v.checkpoint()
    assert resumed[-1][0] is None and resumed[-1][1].checked_from == 0


@given(size=st.integers(min_value=0, max_value=300))
def test_frontier_bytes_round_trip(size: int) -> None:
    frontier = _merkle.Frontier()
    frontier.extend(_merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size))
    again = _merkle.Frontier.from_bytes(size, frontier.to_bytes())
    assert again.root() == frontier.root() and again.size == size
    leaf = _merkle.leaf_hash(b"next")
    frontier.append(leaf)
    again.append(leaf)
    assert again.root() == frontier.root()


@given(size=st.integers(min_value=0, max_value=1 << 40), extra=st.integers(1, 31))
def test_frontier_of_the_wrong_length_is_refused(size: int, extra: int) -> None:
    good = bytes(32 * bin(size).count("1"))
    with pytest.raises(ValueError):
        _merkle.Frontier.from_bytes(size, good + bytes(extra))
    with pytest.raises(ValueError):
        _merkle.Frontier.from_bytes(-1 - size, good)


def test_schema_1_database_migrates_and_finds_registrations(tmp_path: Path) -> None:
    # A database as the first release wrote it: migration 1 only.
    entries = [
        b'{"action":"user.add","seq":0}',
        b'{"action":"record.create","seq":1}',
        b"not json",
        b'{"action":"keys.rotate","seq":3}',
    ]
    with old_store(tmp_path / "old.db", 1, entries) as store:
        found = store.audit.entries_by_action(("user.add", "keys.rotate"))
        assert found == [entries[0], entries[3]]
        assert store.checkpoints.latest_by("officer1") is None
