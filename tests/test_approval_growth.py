"""Issue 13 and scale (round 2 session 11): an approval's cost grew with every
earlier approval.

An approval's checkpoint resumes from the officer's own latest one, yet it
fetched and verified every stored checkpoint and every witness note again (one
of each per earlier approval). Now it reads only the checkpoints of trees at
least as large as the one it resumes from (docs/decisions.md "An approval reads
only the checkpoints that bind it"); ``audit verify`` still checks every one.

What an approval's verification sees is counted as the distinct notes it
verifies (``_note`` remembers each success), not timed.
"""

from __future__ import annotations

import pytest

from childvault.keys import IntegrityError
from childvault.vault import _note
from tests._insider import Insider
from tests.conftest import World, add_children

EARLIER = 12


def _request(world: World, ids: list[str]) -> str:
    with world.open("worker1") as v:
        return v.request_access(ids, ("name",), "case_management", "家访")


def _notes_verified_by_approval(world: World, ids: list[str]) -> int:
    """Approve one new request; return how many distinct notes the approval verified."""
    request = _request(world, ids)
    with world.open("officer1") as v:
        _note._VERIFIED.clear()
        v.approve(request)
        return len(_note._VERIFIED)


def test_issue13_an_approval_after_many_verifies_only_the_newest_checkpoints(
    world: World,
) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 1)
    first = _notes_verified_by_approval(world, ids)
    for _ in range(EARLIER):
        _notes_verified_by_approval(world, ids)
    with world.open("admin") as v:
        stored = v.verify_audit().checkpoints
    assert stored > EARLIER  # one checkpoint per approval, all stored and witnessed
    later = _notes_verified_by_approval(world, ids)
    # The officer's own latest checkpoint (its own key), then the stored and
    # witnessed notes of trees at least that large: the same few each time,
    # not one per earlier approval as before.
    assert later <= max(first, 3) < EARLIER


def test_an_old_stored_checkpoint_changed_is_still_caught_by_audit_verify(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 1)
    for _ in range(4):
        _notes_verified_by_approval(world, ids)
    with Insider(world, "worker1") as insider:
        oldest = min(row[0] for row in insider.rows("checkpoints", ("id",)))
        insider.update("checkpoints", {"root": b"\x01" * 32}, where={"id": oldest})
    # The approval resumes past it (its own signed checkpoint fixes that prefix)...
    _notes_verified_by_approval(world, ids)
    # ... and the full check every auditor and `doctor` runs names it.
    with world.open("admin") as v, pytest.raises(IntegrityError, match="stored checkpoint"):
        v.verify_audit(full=True)
    with world.open("admin") as v, pytest.raises(IntegrityError, match="stored checkpoint"):
        v.verify_audit()
