"""``checkpoints.add_at_head_cas``: the approval's checkpoint queued with its commit.

It is ``add_at_head`` checked exactly as it (signer, note signature and origin,
size and root against the log's own root: finding A-6), except that a failed
compare-and-set fails the request, and so the commit it came with, instead of
answering None (docs/server.md "Approve in five round trips, read in three").
The old attacks on a checkpoint, sent this way, are refused with nothing stored;
a stale head stores nothing else of the batch either.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from childvault.vault import _audit, _note
from childvault.vault._audit import Event
from childvault.vault._config import Config, Home
from childvault.vault._merkle import root_of
from childvault.vault._remote._methods import WITNESS_REACH
from childvault.vault._session import log_origin, signer_name
from childvault.vault._svc_audit import WITNESSED_SIZE_KEY
from childvault.vault._time import iso
from tests.attack import _wire
from tests.attack._wire import batch, call, log_rows, ok, read, refused
from tests.server._vaultserver import VaultServer, count_requests


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served."""
    yield from _wire.served_fixture(tmp_path_factory)


def _note_over(vs: VaultServer, signer: str, size: int, root: bytes) -> str:
    with vs.connect(signer) as person:
        vault_id = person.vault_id
    ident = vs.identity(signer)
    cp = _note.Checkpoint(log_origin(vault_id), size, root)
    return _note.sign_note(
        cp.body(), signer_name(vault_id, signer), ident.sign, ident.public.signing_key
    )


def _witness_notes(vs: VaultServer) -> list[str]:
    home = Home(vs.home)
    return _audit.read_witness(Config.load(home).witness_path(home))


def test_the_checks_of_add_at_head_hold(served: VaultServer) -> None:
    vs = served
    size, _ = read(vs, "audit", "head")
    leaves = [row[2] for row in read(vs, "audit", "page", 0)]
    now = iso(datetime.now(UTC))
    stored = len(read(vs, "checkpoints", "all"))
    # A root that hides an entry, signed by the caller.
    hidden = list(leaves)
    hidden[size // 2] = b"\x00" * 32
    fake = _note_over(vs, "officer1", size, root_of(hidden))
    r = batch(
        vs,
        "officer1",
        call("checkpoints", "add_at_head_cas", size, root_of(hidden), fake, "officer1", now, b""),
    )
    refused(r, 409, "unverified")
    # The true root, but in another officer's name or with a size not the note's.
    note = _note_over(vs, "officer1", size, root_of(leaves))
    for args in (
        (size, root_of(leaves), note, "officer2"),
        (size - 1, root_of(leaves), note, "officer1"),
    ):
        r = batch(vs, "officer1", call("checkpoints", "add_at_head_cas", *args, now, b""))
        assert r.status_code in (403, 409), r.text
    # Staff sign no checkpoints, this way either.
    staff_note = _note_over(vs, "worker1", size, root_of(leaves))
    r = batch(
        vs,
        "worker1",
        call(
            "checkpoints", "add_at_head_cas", size, root_of(leaves), staff_note, "worker1", now, b""
        ),
    )
    refused(r, 403, "role")
    assert len(read(vs, "checkpoints", "all")) == stored
    assert fake not in _witness_notes(vs) and staff_note not in _witness_notes(vs)
    # The honest one is stored, and witnessed before the answer.
    r = batch(
        vs,
        "officer1",
        call("checkpoints", "add_at_head_cas", size, root_of(leaves), note, "officer1", now, b""),
    )
    assert ok(r) == [None, [None]]
    assert len(read(vs, "checkpoints", "all")) == stored + 1
    assert note in _witness_notes(vs)


def test_a_stale_head_fails_the_whole_commit(served: VaultServer) -> None:
    """A checkpoint of the log before the batch's own entry: add_at_head answered
    None and the rest committed; add_at_head_cas fails the request, so the entry
    queued before it is not stored either."""
    vs = served
    size, _ = read(vs, "audit", "head")
    leaves = [row[2] for row in read(vs, "audit", "page", 0)]
    note = _note_over(vs, "officer1", size, root_of(leaves))
    now = iso(datetime.now(UTC))
    rows = log_rows(vs, vs.identity("officer1"), Event("officer1", "audit.checkpoint"))
    stored = len(read(vs, "checkpoints", "all"))
    witnessed = len(_witness_notes(vs))
    r = batch(
        vs,
        "officer1",
        call("audit", "append", rows),
        call("checkpoints", "add_at_head_cas", size, root_of(leaves), note, "officer1", now, b""),
    )
    assert r.status_code == 409 and r.json()["type"] == "IntegrityError", r.text
    assert read(vs, "audit", "head")[0] == size
    assert len(read(vs, "checkpoints", "all")) == stored
    assert len(_witness_notes(vs)) == witnessed


def test_the_approval_commits_its_checkpoint_and_witness_reach(served: VaultServer) -> None:
    """The library's approval: checkpoint, witness reach and commit in one request;
    the reach row is the officer's signed size of the note the witness holds."""
    vs = served
    assert WITNESS_REACH == WITNESSED_SIZE_KEY
    ids = _wire.record_ids(vs)[:1]
    with vs.connect("worker1") as staff:
        req = staff.request_access(ids, ["name"], "case_management", "home visit")
    with vs.connect("officer1") as officer:
        sent = count_requests(officer)
        approval = officer.approve(req)
        officer.verify_audit()
    # Since round 2 session 9 the approval's writes come first in that request.
    (last,) = [s for s in sent if s[1][-2:] == ["checkpoints.add_at_head_cas", "meta.set"]]
    assert last[0] is True and "access.add_grant" in last[1]
    body, _ = _note.parse_note(approval.checkpoint)
    row = json.loads(read(vs, "meta", "get", WITNESSED_SIZE_KEY))
    assert (row["size"], row["signer"]) == (_note.Checkpoint.parse_body(body).size, "officer1")
    assert approval.checkpoint in _witness_notes(vs)
