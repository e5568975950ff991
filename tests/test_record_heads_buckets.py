"""The saved record heads in buckets (issue 16: ``list`` on a session parses only
the buckets of the records it shows; docs/decisions.md, "Record heads in buckets").

- the bucketed form reads back to the same heads, and a look-up parses one bucket;
- a bucket holding a head outside its range, or a header out of order, is refused,
  never silently missed;
- a map saved in the earlier form (one JSON object) is still read, and saved again
  in buckets;
- an insider's edit of the saved row (its bytes no longer what the verifier signed)
  is not used: the heads are scanned again from the log, and an altered record on
  the page is still flagged.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from childvault.cli.main import cli
from childvault.keys import IntegrityError
from childvault.vault import _record_trust
from childvault.vault._record_trust import _BUCKET, Head, HeadMap, RecordHeads
from tests._insider import Insider
from tests.conftest import PASSPHRASES, World, add_children


def _heads(n: int) -> dict[str, Head]:
    return {f"{i * 7:012x}{'ab' * 10}": Head(10 + i, f"{i:064x}", 10 + i) for i in range(n)}


def test_buckets_read_back_to_the_same_heads_and_a_lookup_parses_one() -> None:
    heads = _heads(3 * _BUCKET + 5)
    heads["ffff"] = Head(1, "", 1, 1)  # a deletion with no statement
    raw = RecordHeads(dict(heads), 99, b"h" * 32).to_bytes()
    assert raw == RecordHeads(dict(reversed(heads.items())), 99, b"h" * 32).to_bytes()
    loaded = RecordHeads.from_bytes(raw, 99, b"h" * 32)
    assert isinstance(loaded.heads, HeadMap)
    some = sorted(heads)[2 * _BUCKET + 1]
    assert loaded.heads[some] == heads[some]
    assert len(loaded.heads._saved._parsed) == 1  # type: ignore[union-attr]
    for absent in ("", "0", sorted(heads)[_BUCKET] + "0", "zzzz"):
        assert absent not in loaded.heads and loaded.heads.get(absent) is None
    assert dict(loaded.heads) == heads
    # A copy changed by a scan leaves the loaded map as it was.
    changed = loaded.heads.copy()  # type: ignore[attr-defined]
    changed[some] = Head(500, "e" * 64, heads[some].first)
    assert loaded.heads[some] == heads[some] and changed[some].seq == 500
    assert RecordHeads.from_bytes(RecordHeads().to_bytes(), 0, b"").heads.get("a") is None


def test_a_head_outside_its_bucket_or_a_header_out_of_order_is_refused() -> None:
    raw = RecordHeads(_heads(2 * _BUCKET), 9, b"h" * 32).to_bytes()
    magic, header, first, second = raw.split(b"\n")
    # The second bucket's heads moved into the first: a look-up of one would miss it.
    merged = json.loads(first) | json.loads(second)
    moved = b"\n".join([magic, header, json.dumps(merged).encode(), second])
    loaded = RecordHeads.from_bytes(moved, 9, b"h" * 32)
    with pytest.raises(IntegrityError):
        loaded.heads.get(next(iter(json.loads(first))))
    backwards = json.dumps(list(reversed(json.loads(header)))).encode()
    with pytest.raises(ValueError):
        RecordHeads.from_bytes(b"\n".join([magic, backwards, first, second]), 9, b"h" * 32)


def test_a_map_saved_in_the_earlier_form_is_read_and_saved_again_in_buckets(
    world: World,
) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 3)
        s = v._session
        found = _record_trust.record_heads(s)
        assert found is not None
        done = found[1]
        old = {r: [h.seq, h.digest, h.first, h.deleted] for r, h in dict(done.heads).items()}
        raw = json.dumps(old, sort_keys=True, separators=(",", ":")).encode("ascii")
        assert done.head is not None
        sig = s.me.sign(_record_trust._message(s.vault_id, done.size, done.head, raw))
        with s.db.transaction():
            s.db.statements.save_state("worker1#records", done.size, done.head, raw, sig)
    with world.open("worker1") as v:
        page = v.list_page()
        assert not page.unverified and {r.id for r in page.records} == set(ids)
        saved = v._session.db.statements.saved_state("worker1#records")
        assert saved is not None and saved[2].startswith(_record_trust._BUCKETED + b"\n")


def test_an_edited_saved_map_is_not_used_and_an_altered_record_is_still_flagged(
    world: World,
) -> None:
    with world.open("worker1") as v:
        ids = sorted(add_children(v, 3))
        other = v._session.db.records.fields_many([ids[2]])[ids[2]]
        assert not v.list_page().unverified  # the heads are saved, in buckets
    with Insider(world, "worker2") as insider:
        ((state,),) = insider.rows("trust_states", ["state"], where={"verifier": "worker1#records"})
        raw = bytes(state)
        assert raw.startswith(_record_trust._BUCKETED)
        # The edited map says record 1 was deleted (so its rows would be shown as
        # altered) and is not signed by worker1: it is not used. Record 0 carries
        # record 2's sealed name: flagged whatever map is used.
        forged = dict(RecordHeads.from_bytes(raw, 0, b"").heads)
        forged[ids[1]] = forged[ids[1]]._replace(deleted=forged[ids[1]].seq)
        edited = RecordHeads(forged).to_bytes()
        assert insider.update("trust_states", {"state": edited}, {"verifier": "worker1#records"})
        assert (
            insider.update(
                "fields", {"value": other["name"][1]}, {"record_id": ids[0], "name": "name"}
            )
            == 1
        )
    env = {
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": "worker1",
        "CHILDVAULT_PASSPHRASE": PASSPHRASES["worker1"],
        "LANG": "C.UTF-8",
    }
    done = CliRunner().invoke(cli, ["--json", "list"], env=env, catch_exceptions=False)
    doc = json.loads(done.stdout)
    assert done.exit_code == 4 and list(doc["unverified"]) == [ids[0]]
