"""Issue 18: `audit verify` does not rebuild the Merkle tree of the prefix the
verifier verified before; it takes that prefix's frontier from the verifier's
own signed known tree (docs/decisions.md, "third round, session 5").

The prefix still gets every chain check, must still end in the leaf the tree
ends in, and its checkpoints must be exactly those compared with it then;
otherwise the whole tree is built as before. Each attack below must be refused
exactly as without the tree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import nacl.signing
import pytest

from childvault.keys import IntegrityError
from childvault.vault import _audit, _merkle, _note
from childvault.vault._audit import Event, KnownTree
from childvault.vault._backend import CheckpointRow
from childvault.vault._registrations import TREE_SUFFIX, load_tree
from childvault.vault._time import iso
from tests._insider import Insider
from tests.conftest import World, add_children

_AT = iso(datetime(2026, 11, 30, 10, 0, tzinfo=UTC))
_ORIGIN = "childvault.test/known-tree"
_KEY = nacl.signing.SigningKey(b"\x07" * 32)
_SIGNERS = {"officer1": bytes(_KEY.verify_key)}


class _Log:
    """An in-memory :class:`LogSource` (small pages, so prefixes end inside pages)."""

    def __init__(self, rows: list[tuple[int, bytes, bytes]]) -> None:
        self.rows = rows

    def pages(self, start: int = 0, *, batch: int = 5000) -> Iterator[Sequence[Any]]:
        rest = self.rows[start:]
        for at in range(0, len(rest), 7):
            yield rest[at : at + 7]

    def row(self, raw: Any) -> tuple[int, bytes, bytes]:
        return raw  # type: ignore[no-any-return]

    def entry_at(self, seq: int) -> tuple[bytes, bytes] | None:
        return (self.rows[seq][1], self.rows[seq][2]) if 0 <= seq < len(self.rows) else None

    def checkpoints(self) -> list[CheckpointRow]:
        return []


def _chain(n: int, *, start: list[tuple[int, bytes, bytes]] | None = None) -> list[Any]:
    rows = list(start or [])
    prev = rows[-1][2] if rows else None
    for seq in range(len(rows), n):
        entry = _audit.encode_entry(seq, _AT, Event("worker1", "record.list"), prev)
        prev = _merkle.leaf_hash(entry)
        rows.append((seq, entry, prev))
    return rows


def _note_of(rows: Sequence[tuple[int, bytes, bytes]]) -> str:
    """An officer's signed checkpoint of ``rows``."""
    root = _merkle.root_of([digest for _, _, digest in rows])
    body = _note.Checkpoint(_ORIGIN, len(rows), root).body()
    return _note.sign_note(
        body, "officer1", lambda m: _KEY.sign(m).signature, bytes(_KEY.verify_key)
    )


def _verify(rows: list[Any], notes: Sequence[str] = (), **kw: Any) -> _audit.VerifyReport:
    return _audit.verify(
        _Log(rows), origin=_ORIGIN, signers=_SIGNERS, witness_notes=list(notes), **kw
    )


def _tree(report: _audit.VerifyReport) -> KnownTree:
    return KnownTree(report.entries, report.resume_state, report.checked)


def test_resuming_from_the_tree_gives_the_same_report() -> None:
    rows = _chain(40)
    notes = [_note_of(rows[:25])]
    first = _verify(rows, notes)
    longer = _chain(90, start=rows)
    notes.append(_note_of(longer[:61]))
    ticks: list[int] = []
    resumed = _verify(longer, notes, tree=_tree(first), progress=ticks.append)
    plain = _verify(longer, notes)
    assert (resumed.entries, resumed.root, resumed.resume_state, resumed.checked) == (
        plain.entries,
        plain.root,
        plain.resume_state,
        plain.checked,
    )
    # Nothing new: the tree alone gives the root and the state to save again.
    again = _verify(rows, notes[:1], tree=_tree(first))
    assert (again.root, again.resume_state) == (first.root, first.resume_state)


def test_the_tree_frontier_is_used_so_a_wrong_one_fails_a_later_checkpoint() -> None:
    """Why the tree must come from the verifier's own signed state: its frontier
    is taken as the prefix's (a checkpoint after it then disagrees)."""
    rows = _chain(30)
    first = _verify(rows)
    state = bytearray(first.resume_state)
    state[0] ^= 1  # a frontier byte, not the last leaf
    longer = _chain(50, start=rows)
    with pytest.raises(IntegrityError, match="diverged"):
        _verify(longer, [_note_of(longer)], tree=KnownTree(30, bytes(state), first.checked))


def test_a_checkpoint_of_the_prefix_not_checked_before_rebuilds_the_tree() -> None:
    """A checkpoint of the prefix that the tree did not record (here: one of a
    rewritten log, i.e. a fork) is compared with the rebuilt tree, not skipped."""
    rows = _chain(30)
    first = _verify(rows)
    other = list(rows[:20])
    entry = _audit.encode_entry(10, _AT, Event("worker2", "record.list"), other[9][2])
    other[10] = (10, entry, _merkle.leaf_hash(entry))
    bad_note = _note_of(other)  # signed over a log whose entry 10 differs
    with pytest.raises(IntegrityError, match="diverged"):
        _verify(rows, [bad_note], tree=_tree(first))
    # And a checkpoint that agrees with the log is accepted after the rebuild.
    assert _verify(rows, [_note_of(rows[:20])], tree=_tree(first)).root == first.root


def test_an_entry_rewritten_and_rechained_in_the_prefix_is_a_mismatch() -> None:
    rows = _chain(30)
    first = _verify(rows)
    edited = list(rows[:10])
    entry = _audit.encode_entry(10, _AT, Event("worker2", "record.list"), edited[9][2])
    edited.append((10, entry, _merkle.leaf_hash(entry)))
    edited = _chain(35, start=edited)
    with pytest.raises(_audit.KnownPrefixMismatch):
        _verify(edited, tree=_tree(first))
    # Without the tree the chain holds: only a checkpoint or the trust state
    # catches such a rewrite, which is why the mismatch makes the caller
    # verify everything again (`Audit.verify_audit`).
    assert _verify(edited).entries == 35


def test_an_edit_in_the_prefix_without_rehashing_is_still_named() -> None:
    rows = _chain(30)
    first = _verify(rows)
    seq, entry, digest = rows[12]
    rows[12] = (seq, entry.replace(b"worker1", b"worker9"), digest)
    with pytest.raises(IntegrityError, match="entry 12 was modified"):
        _verify(rows, tree=_tree(first))


def test_a_log_truncated_below_the_tree_is_a_mismatch() -> None:
    rows = _chain(30)
    first = _verify(rows)
    with pytest.raises(_audit.KnownPrefixMismatch):
        _verify(rows[:29], tree=_tree(first))
    with pytest.raises(_audit.KnownPrefixMismatch):
        _verify(rows[:5], tree=_tree(first))


def test_a_tree_state_that_does_not_fit_its_size_is_not_used() -> None:
    rows = _chain(30)
    first = _verify(rows)
    longer = _chain(40, start=rows)
    plain = _verify(longer)
    cut = KnownTree(30, first.resume_state[32:], first.checked)
    assert _verify(longer, tree=cut).root == plain.root


# ------------------------------------------------------------ through a vault


def test_audit_verify_keeps_a_signed_tree_and_refuses_a_flipped_one(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 2)
    with world.open("officer1") as v:
        v.checkpoint()
    with world.open("worker1") as v:
        first = v.verify_audit()
        s = v._session
        tree = load_tree(s.db, s.me, s.anchor)  # type: ignore[arg-type]
        assert tree is not None and tree.size == first.entries
    with Insider(world, "worker2") as insider:
        where = {"verifier": "worker1" + TREE_SUFFIX}
        ((raw,),) = insider.rows("trust_states", ["state"], where=where)
        state = bytearray(bytes(raw))
        state[40] ^= 0x40  # a frontier byte (after the 32-byte checkpoint digest)
        insider.update("trust_states", {"state": bytes(state)}, where)
    with world.open("worker1") as v:
        s = v._session
        assert load_tree(s.db, s.me, s.anchor) is None  # type: ignore[arg-type]
        again = v.verify_audit()  # the whole tree is built, as before
        assert again.root == v.verify_audit(full=True).root


def test_audit_verify_catches_a_rechained_rewrite_below_the_tree(world: World) -> None:
    """The insider rewrites an entry the verifier's tree covers and re-chains the
    rest: the tree no longer ends in the log's leaf, so every entry is checked
    again and the officer's checkpoint (and the forged entry) fail."""
    with world.open("worker1") as v:
        add_children(v, 2)
    with world.open("officer1") as v:
        v.checkpoint()
    with world.open("worker1") as v:
        v.verify_audit()
        target = int(
            _audit.decode_entry(v._session.db.audit.entries_by_action(("record.create",))[0])["seq"]
        )
    with Insider(world, "worker2") as insider:
        rows = insider.rows("audit", ["seq", "entry", "hash"], order_by="seq")
        prev = bytes(rows[target - 1][2])
        for number, raw, _ in rows[target:]:
            obj = _audit.decode_entry(bytes(raw))
            if number == target:
                obj["detail"] = {**obj["detail"], "count": 99}
            obj["prev"] = prev.hex()
            entry = _audit.canonical(obj)
            prev = _merkle.leaf_hash(entry)
            insider.update("audit", {"entry": entry, "hash": prev}, {"seq": number})
    with world.open("worker1") as v, pytest.raises(IntegrityError):
        v.verify_audit()
