"""The batched reads ``records.find_by_tags`` and ``statements.get_many`` (issue 13).

They exist to save round trips through the server (docs/server.md, "Fewer
round trips"): an import's duplicate check asks for a whole batch of tags at
once, and approve / read / list fetch the signed statements of their records
together. Each must answer exactly what the single calls answer, on both
stores and through the server (where they are reads open to staff).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from childvault.keys import ImportFailed, IntegrityError
from childvault.vault import Vault, _record_trust
from childvault.vault._backend import Backend
from childvault.vault._remote._codec import decode
from tests.conftest import World, add_children
from tests.server._vaultserver import (
    VaultServer,
    make_vault,
    passphrase,
    rpc_call,
    rpc_read,
    signed_rpc,
)

SEARCHABLE = ("id_number", "guardian_phone")


def _db(v: Vault) -> Backend:
    return v._session.db


def _statement_seqs(v: Vault) -> list[int]:
    """The seqs of the latest logged statement of every record (from the verified log)."""
    found = _record_trust.record_heads(v._session)
    assert found is not None
    return sorted(h.seq for h in found[1].heads.values())


def _tags(v: Vault, field: str, n: int) -> list[bytes]:
    from tests.conftest import child_values

    return v.index_tags(field, [child_values(i)[field] for i in range(n)])


def test_find_by_tags_answers_what_find_by_tag_answers(any_world: World) -> None:
    with any_world.open("worker1") as v:
        add_children(v, 6)
        db = _db(v)
        for field in SEARCHABLE:
            known = _tags(v, field, 6)
            # Repeats, an unknown tag, and more tags than one ``IN (...)`` holds
            # (the repository splits them): order and repeats are kept.
            unknown = [secrets.token_bytes(len(known[0])) for _ in range(1100)]
            asked = [known[0], *unknown[:3], known[3], known[0], *unknown[3:], known[5]]
            answer = db.records.find_by_tags(field, asked)
            assert answer == [db.records.find_by_tag(field, t) for t in asked]
            assert all(answer[i] for i in (0, 4, 5, len(asked) - 1))
            assert db.records.find_by_tags(field, []) == []
        # A tag is per field: another field's tags find nothing of this one's.
        other = _tags(v, "guardian_phone", 6)
        assert db.records.find_by_tags("name", other) == [[] for _ in other]


def test_get_many_answers_what_get_answers(any_world: World) -> None:
    with any_world.open("worker1") as v:
        add_children(v, 4)
        seqs = _statement_seqs(v)
        db = _db(v)
        size = db.audit.size()
        missing = [0, size + 5, *range(size + 10, size + 1100)]
        got = db.statements.get_many([seqs[1], *missing, *seqs, seqs[1]])
        singles = {s: db.statements.get(s) for s in [*seqs, *missing]}
        assert got == {s: e for s, e in singles.items() if e is not None}
        assert set(got) == set(seqs)
        assert db.statements.get_many([]) == {}


# ------------------------------------------------------------------ server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VaultServer, list[int]]]:
    """A served vault with a few records (added embedded, before the server starts)."""
    vs = make_vault(tmp_path_factory.mktemp("vault"), ("officer1", "worker1"))
    with Vault.open(vs.home, "worker1", passphrase("worker1")) as v:
        add_children(v, 3)
        seqs = _statement_seqs(v)
    vs.start()
    try:
        yield vs, seqs
    finally:
        vs.stop()


def test_staff_may_use_the_batched_reads_through_the_server(
    served: tuple[VaultServer, list[int]],
) -> None:
    vs, seqs = served
    with Vault.open(vs.home, "worker1", passphrase("worker1")) as v:
        tags = {f: _tags(v, f, 3) for f in SEARCHABLE}
    for field, known in tags.items():
        asked = [known[2], secrets.token_bytes(len(known[0])), known[0], known[2]]
        batched = rpc_read(vs, "worker1", "records", "find_by_tags", field, asked)
        singles = [rpc_read(vs, "worker1", "records", "find_by_tag", field, t) for t in asked]
        assert batched == singles
        assert batched[0] and not batched[1]
    asked_seqs = [*seqs, 0, 10_000]
    got = rpc_read(vs, "worker1", "statements", "get_many", asked_seqs)
    singles = {s: rpc_read(vs, "worker1", "statements", "get", s) for s in asked_seqs}
    assert got == {s: e for s, e in singles.items() if e is not None}
    assert set(got) == set(seqs)
    # Both in one read-only batch (no transaction), as the remote backend sends them.
    r = signed_rpc(
        vs,
        vs.identity("worker1"),
        "/v1/rpc/batch",
        {
            "calls": [
                rpc_call("records", "find_by_tags", "id_number", tags["id_number"]),
                rpc_call("statements", "get_many", seqs),
            ]
        },
    )
    assert r.status_code == 200, r.text
    _txn, results = decode(r.json()["result"])
    assert results[0] == [
        rpc_read(vs, "worker1", "records", "find_by_tag", "id_number", t) for t in tags["id_number"]
    ]
    assert results[1] == got


def test_an_import_through_the_server_still_finds_vault_duplicates(
    served: tuple[VaultServer, list[int]], tmp_path: Path
) -> None:
    """The duplicate check, now one ``find_by_tags`` per field, still names the record."""
    from tests.conftest import child_values

    vs, _seqs = served
    values = child_values(1)
    csv = tmp_path / "again.csv"
    header = [*values, "consent_by", "consented_at", "notice_version", "purposes", "retain_until"]
    # consented_at empty: the day of the import (within the back-dating window).
    row = [*values.values(), "guardian", "", "2026-1", "case_management", "2032-01-01"]
    csv.write_text(",".join(header) + "\n" + ",".join(row) + "\n", encoding="utf-8")
    with vs.connect("worker1") as v, pytest.raises(ImportFailed) as refused:
        v.import_file(csv)
    assert "--allow-duplicates" in str(refused.value)


def test_a_blind_index_answer_of_the_wrong_length_is_refused() -> None:
    """An answer that does not pair with the tags asked (a hostile or broken server)
    is an integrity error, never a silently shifted duplicate check."""
    from childvault.vault._importer import DuplicateFinder, DuplicateKey

    key = DuplicateKey(identity=("id_number",), searchable=SEARCHABLE)
    finder = DuplicateFinder(key, lambda f, vs: [b"\0\0"] * len(vs), lambda f, ts: [])
    row = {"id_number": "110105201603010012", "guardian_phone": "13800000001"}
    with pytest.raises(IntegrityError, match="wrong number of tags"):
        finder.check([(1, row)], against_vault=lambda n: True)
