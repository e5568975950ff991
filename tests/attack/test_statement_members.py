"""``statements.add_members``: a batch statement's members with its envelope sent once.

The server rebuilds each member's bytes from the packed form and stores them
only beside an entry of the same transaction naming exactly those bytes, as it
stores ``statements.add`` (docs/server.md). A staff member's direct requests:
an honest pack is stored byte for byte, a pack its entries do not name or of no
shape is refused and nothing of its transaction is stored.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from childvault.vault import _statements
from childvault.vault._audit import Event
from tests.attack import _wire
from tests.attack._wire import call, ok, read, refused
from tests.server._vaultserver import VaultServer

served = pytest.fixture(scope="module")(_wire.served_fixture)


def _members(vs: VaultServer, n: int) -> list[_statements.BatchMember]:
    """``n`` members of one batch statement signed by worker2 (the server stores
    them as bytes; readers verify them, not this test)."""
    leaves = [hashlib.sha256(b"leaf %d" % i).digest() for i in range(n)]
    root, proofs = _statements.batch_proofs(leaves)
    statement = _statements.batch_statement(
        vault_id="0" * 32, at="2026-01-01T00:00:00Z", size=n, root=root
    )
    envelope = _statements.sign(statement, [vs.identity("worker2")])
    return [_statements.BatchMember(envelope, i, tuple(p)) for i, p in enumerate(proofs)]


def _entries(vs: VaultServer, digests: list[str]) -> list[Any]:
    """worker2's log rows after the head, each naming one of ``digests``."""
    return _wire.log_rows(
        vs,
        vs.identity("worker2"),
        *(Event("worker2", "record.list", detail={"record_statement": d}) for d in digests),
    )


def _pack_call(seqs: list[int], members: list[_statements.BatchMember]) -> dict[str, Any]:
    return call("statements", "add_members", seqs, *_statements.pack_members(members))


def test_members_are_stored_as_their_own_bytes(served: VaultServer) -> None:
    vs = served
    size, _ = read(vs, "audit", "head")
    members = _members(vs, 5)
    rows = _entries(vs, [m.digest() for m in members])
    seqs = [r[0] for r in rows]
    ok(_wire.batch(vs, "worker2", call("audit", "append", rows), _pack_call(seqs, members)))
    stored = read(vs, "statements", "get_many", seqs)
    assert stored == {seq: m.to_bytes() for seq, m in zip(seqs, members, strict=True)}
    assert isinstance(_statements.stored_statement(stored[seqs[3]]), _statements.BatchMember)
    assert read(vs, "audit", "head")[0] == size + 5


def test_members_not_named_by_their_entries_are_refused(served: VaultServer) -> None:
    vs = served
    size, _ = read(vs, "audit", "head")
    members = _members(vs, 3)
    # Entries naming the members in another order: each member's bytes differ.
    rows = _entries(vs, [members[1].digest(), members[0].digest(), members[2].digest()])
    seqs = [r[0] for r in rows]
    r = _wire.batch(vs, "worker2", call("audit", "append", rows), _pack_call(seqs, members))
    refused(r, 403, "binding")
    # A member whose proof was altered in the pack is not the one its entry names.
    rows = _entries(vs, [m.digest() for m in members])
    envelope, indexes, lengths, proofs = _statements.pack_members(members)
    altered = bytes(32) + proofs[32:]
    r = _wire.batch(
        vs,
        "worker2",
        call("audit", "append", rows),
        call("statements", "add_members", seqs, envelope, indexes, lengths, altered),
    )
    refused(r, 403, "binding")
    # Members at entries of an earlier transaction.
    r = _wire.batch(vs, "worker2", _pack_call([0, 1, 2], members))
    refused(r, 403, "binding")
    assert read(vs, "audit", "head")[0] == size
    assert read(vs, "statements", "get_many", seqs) == {}
    assert _wire.refusal_logged(vs, "worker2", "binding")


@pytest.mark.parametrize(
    "change",
    [
        "short proofs",
        "long index",
        "seqs count",
        "seq text",
        "not an envelope",
        "proofs text",
        "too many",
    ],
)
def test_packs_of_no_shape_are_refused(served: VaultServer, change: str) -> None:
    vs = served
    size, _ = read(vs, "audit", "head")
    members = _members(vs, 3)
    rows = _entries(vs, [m.digest() for m in members])
    seqs: list[Any] = [r[0] for r in rows]
    envelope: Any
    envelope, indexes, lengths, proofs = _statements.pack_members(members)
    pack: list[Any] = [seqs, envelope, indexes, lengths, proofs]
    if change == "short proofs":
        pack[4] = proofs[:-1]
    elif change == "long index":
        pack[2] = [0, 1, _statements.MAX_BATCH]
    elif change == "seqs count":
        pack[0] = seqs[:2]
    elif change == "seq text":
        pack[0] = [str(s) for s in seqs]
    elif change == "not an envelope":
        pack[1] = b'{"not": "an envelope"}'
    elif change == "proofs text":
        pack[4] = proofs.hex()
    else:
        # Members of empty proofs cost the body a few bytes each: the request's
        # row budget bounds them before anything is rebuilt.
        pack[2], pack[3], pack[4] = [0] * 30000, [0] * 30000, b""
    r = _wire.batch(
        vs, "worker2", call("audit", "append", rows), call("statements", "add_members", *pack)
    )
    refused(r, 400, "malformed")
    assert read(vs, "audit", "head")[0] == size
