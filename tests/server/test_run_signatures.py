"""One signature per appended run, at the server (docs/server.md, "Approvals and
checkpoints: what the server checks"; docs/decisions.md, "One signature per
appended run").

The server checks every ``audit.append`` call: its unsigned rows must be closed,
within the same call, by the caller's signature over :func:`_audit.run_message`
(the run's first sequence number and its last entry's hash), and an action of
:data:`_audit.SIGN_ALONE` carries its own signature. The attacks on a run's
signature are refused here before anything is stored; the client's trust sync
refuses the same edits made in the server's database afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest
import requests

from childvault.keys import Identity, IntegrityError
from childvault.vault import Vault, _audit
from childvault.vault._audit import Event
from childvault.vault._merkle import leaf_hash
from childvault.vault._time import iso
from tests._insider import Insider
from tests.conftest import add_children
from tests.server._vaultserver import VaultServer, make_vault, passphrase
from tests.server.test_rpc_batch import _batch, _call, _read, _refused

Row = tuple[int, bytes, bytes, bytes | None]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """A served vault whose log ends in a run of three record.create entries by worker1."""
    vs = make_vault(tmp_path_factory.mktemp("vault"), ("officer1", "worker1", "worker2"))
    with Vault.open(vs.home, "worker1", passphrase("worker1")) as v:
        add_children(v, 3)
    vs.start()
    try:
        yield vs
    finally:
        vs.stop()


def _rows(vs: VaultServer, actor: str, actions: list[str], signer: Identity) -> list[Row]:
    """Rows in ``actor``'s name after the head, signed as the library signs one call."""
    seq, prev = _read(vs, "audit", "head")
    rows: list[Row] = []
    start = None
    for i, action in enumerate(actions):
        entry = _audit.encode_entry(
            seq, iso(datetime.now(UTC)), Event(actor, action, detail={"i": i}), prev
        )
        digest = leaf_hash(entry)
        closes = i == len(actions) - 1 or actions[i + 1] in _audit.SIGN_ALONE
        sig = None
        if action in _audit.SIGN_ALONE:
            sig = signer.sign(_audit.entry_message(digest))
        elif closes:
            message = (
                _audit.entry_message(digest) if start is None else _audit.run_message(start, digest)
            )
            sig, start = signer.sign(message), None
        elif start is None:
            start = seq
        rows.append((seq, entry, digest, sig))
        seq, prev = seq + 1, digest
    return rows


def _append(vs: VaultServer, user: str, *calls: Sequence[Row]) -> requests.Response:
    return _batch(vs, user, *(_call("audit", "append", rows) for rows in calls))


def _stores_nothing(vs: VaultServer, user: str, *calls: Sequence[Row]) -> None:
    before = _read(vs, "audit", "head")
    _refused(_append(vs, user, *calls), 403, "unverified")
    assert _read(vs, "audit", "head") == before


def test_an_honest_run_commits_with_one_signature(served: VaultServer) -> None:
    vs = served
    # An officer: a checkpoint entry is an officer's or an admin's (ROLE_ACTIONS).
    o1 = vs.identity("officer1")
    rows = _rows(vs, "officer1", ["record.list"] * 3 + ["audit.checkpoint"], o1)
    assert [r[3] is not None for r in rows] == [False, False, True, True]
    r = _append(vs, "officer1", rows)
    assert r.status_code == 200, r.text
    assert _read(vs, "audit", "head")[0] == rows[-1][0] + 1
    with vs.connect("officer1") as o:
        assert o.verify_audit(full=True).entries == rows[-1][0] + 1


def test_attack_strip_the_closing_signature_at_the_server(served: VaultServer) -> None:
    rows = _rows(served, "worker1", ["record.list"] * 3, served.identity("worker1"))
    _stores_nothing(served, "worker1", [(s, e, d, None) for s, e, d, _ in rows])


def test_attack_unsigned_entries_in_anothers_name_at_the_server(served: VaultServer) -> None:
    vs = served
    before = _read(vs, "audit", "head")
    rows = _rows(vs, "officer1", ["record.list"] * 2, vs.identity("worker1"))
    unsigned = [(s, e, d, None) for s, e, d, _ in rows]
    _refused(_append(vs, "worker1", unsigned), 403, "binding")
    assert _read(vs, "audit", "head") == before


def test_attack_splice_another_actors_entry_into_a_run_at_the_server(
    served: VaultServer,
) -> None:
    vs = served
    w1 = vs.identity("worker1")
    # A run cannot span append calls: a call that ends unsigned is refused even
    # when the next call of the batch closes it.
    rows = _rows(vs, "worker1", ["record.list"] * 3, w1)
    _stores_nothing(vs, "worker1", [(*rows[0][:3], None)], rows[1:])
    # worker1's signature closes a run that holds worker2's entry (signed by them).
    seq, prev = _read(vs, "audit", "head")
    spliced: list[Row] = []
    people = [("worker1", w1), ("worker2", vs.identity("worker2")), ("worker1", w1)]
    for i, (actor, who) in enumerate(people):
        entry = _audit.encode_entry(
            seq + i, iso(datetime.now(UTC)), Event(actor, "record.list", detail={}), prev
        )
        prev = leaf_hash(entry)
        sig = {
            0: None,
            1: who.sign(_audit.entry_message(prev)),
            2: who.sign(_audit.run_message(seq, prev)),
        }[i]
        spliced.append((seq + i, entry, prev, sig))
    before = _read(vs, "audit", "head")
    _refused(_append(vs, "worker1", spliced), 403, "binding")
    assert _read(vs, "audit", "head") == before


def test_attack_move_the_signature_to_an_earlier_entry_at_the_server(
    served: VaultServer,
) -> None:
    rows = _rows(served, "worker1", ["record.list"] * 3, served.identity("worker1"))
    moved = [(*rows[0][:3], rows[2][3]), rows[1], (*rows[2][:3], None)]
    _stores_nothing(served, "worker1", moved)


def test_attack_replay_a_runs_signature_on_another_run_at_the_server(
    served: VaultServer,
) -> None:
    vs = served
    w1 = vs.identity("worker1")
    one = _rows(vs, "worker1", ["record.list"] * 3, w1)
    two = _rows(vs, "worker1", ["record.create"] * 3, w1)  # same seqs, other entries
    _stores_nothing(vs, "worker1", [*two[:2], (*two[2][:3], one[2][3])])
    # A run of one's signature (entry_message) cannot close a longer run: the
    # entries before it would be covered by a signature that never named them.
    lone = _rows(vs, "worker1", ["record.list"] * 3, w1)
    digest = lone[2][2]
    _stores_nothing(
        vs, "worker1", [*lone[:2], (*lone[2][:3], w1.sign(_audit.entry_message(digest)))]
    )


def test_an_entry_that_must_be_signed_alone_is_refused_in_a_run(served: VaultServer) -> None:
    vs = served
    rows = _rows(vs, "officer1", ["record.list", "audit.checkpoint"], vs.identity("officer1"))
    # The checkpoint entry left unsigned, as if the list entry's run went on through it.
    _stores_nothing(vs, "officer1", [(*rows[0][:3], None), (*rows[1][:3], None)])


def test_the_trust_sync_refuses_a_stripped_run_signature_in_the_servers_database(
    served: VaultServer,
) -> None:
    vs = served
    w1 = vs.identity("worker1")
    rows = _rows(vs, "worker1", ["record.list"] * 3, w1)
    r = _append(vs, "worker1", rows)
    assert r.status_code == 200, r.text
    with Insider(vs.home, vs.identity("worker2")) as insider:
        assert insider.update("audit", {"sig": None}, where={"seq": rows[2][0]}) == 1
    try:
        with vs.connect("officer1") as o, pytest.raises(IntegrityError, match="not signed"):
            o.verify_audit(full=True)
    finally:
        with Insider(vs.home, w1) as insider:
            insider.update("audit", {"sig": rows[2][3]}, where={"seq": rows[2][0]})
