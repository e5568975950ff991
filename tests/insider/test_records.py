"""Issue 12, attack 4 and rollback: records are signed by their writer and checked
against the latest version the log names before an approval or a read uses them.

The insider is a staff member who opens the database with their own key (as
every user can), seals new values to the custodian public key (that is how
writing works) and puts them in another record's rows. Each test checks that
the approval or read refuses (exit 4, logged) and that nothing was decrypted.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from childvault.keys import IntegrityError, RecordKeys
from childvault.vault import _audit
from childvault.vault._fieldcrypto import seal_field
from tests._insider import Insider
from tests.conftest import World, add_children
from tests.insider._helpers import put_back, record_rows
from tests.insider._helpers import refusals as _refusals
from tests.insider._helpers import request as _request
from tests.test_cli import js, run
from tests.test_reports import grant


def _forge(world: World, record: str, name: str) -> None:
    """worker2 seals ``name`` under a key of their own, wraps that key to the
    custodian public key and writes both into ``record``'s rows."""
    with world.open("worker2") as v:
        vault_id = v._session.vault_id
        version = v._session.db.records.get(record).version  # type: ignore[union-attr]
        sealed, key = seal_field(
            name.encode(), vault_id=vault_id, record_id=record, field="name", version=1
        )
        (blob,) = v._session.keys.writer().wrap(
            [RecordKeys(record, version, {"name": key}, new=True)]
        )
    with Insider(world, "worker2") as insider:
        insider.update("fields", {"value": sealed}, {"record_id": record, "name": "name"})
        insider.update("keyblobs", {"blob": blob}, {"record_id": record})


def test_a_forged_record_is_refused_at_approval(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 2)
    _forge(world, ids[0], "伪造")
    req = _request(world, ids)
    with world.open("officer1") as v, pytest.raises(IntegrityError, match=ids[0]):
        v.approve(req)
    with world.open("admin") as v:
        assert v._session.db.access.request(req).status == "pending"  # type: ignore[union-attr]
    assert _refusals(world, "request.approve")


def test_a_record_forged_after_approval_is_refused_at_read(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 1)
    req = _request(world, ids)
    with world.open("officer1") as v:
        token = v.approve(req).token
    _forge(world, ids[0], "伪造")
    with world.open("worker1") as v, pytest.raises(IntegrityError, match=ids[0]):
        v.read_with_grant(token)
    with world.open("admin") as v:
        reads = [
            _audit.decode_entry(e)
            for e in v._session.db.audit.entries_by_action(("grant.read",))
            if _audit.decode_entry(e)["outcome"] == "ok"
        ]
    assert reads == []  # refused before the use was consumed: nothing decrypted
    assert _refusals(world, "grant.read")


def test_swapping_two_records_ciphertexts_is_refused(world: World) -> None:
    with world.open("worker1") as v:
        a, b = add_children(v, 2)
    with Insider(world, "worker2") as insider:
        fa = insider.rows("fields", ["value"], where={"record_id": a, "name": "name"})[0][0]
        fb = insider.rows("fields", ["value"], where={"record_id": b, "name": "name"})[0][0]
        insider.update("fields", {"value": fb}, {"record_id": a, "name": "name"})
        insider.update("fields", {"value": fa}, {"record_id": b, "name": "name"})
    req = _request(world, [a, b])
    with world.open("officer1") as v, pytest.raises(IntegrityError, match=a):
        v.approve(req)


def test_a_record_rolled_back_to_an_older_signed_version_is_refused(world: World) -> None:
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
    old = record_rows(world, rid)
    with world.open("officer1") as v:
        v.correct(rid, "name", "更正后")
    # Put every row of the record back as it was before the correction, with the
    # original writer's (genuine) statement.
    put_back(world, rid, old)
    req = _request(world, [rid])
    with world.open("officer1") as v, pytest.raises(IntegrityError, match=rid):
        v.approve(req)
    # Also copy the older envelope over the latest one: its digest is not the one
    # the correction's log entry names.
    with Insider(world, "worker2") as insider:
        seqs = [s for (s,) in insider.rows("statements", ["seq"], order_by="seq")]
        first, latest = seqs[-2], seqs[-1]
        (envelope,) = insider.rows("statements", ["envelope"], where={"seq": first})[0]
        insider.update("statements", {"envelope": envelope}, {"seq": latest})
    with world.open("officer2") as v, pytest.raises(IntegrityError, match="rolled back"):
        v.approve(req)


def test_a_staff_member_cannot_log_a_fresh_first_version(world: World) -> None:
    """worker2 forges the record, signs a version-1 statement of it with their own
    key and logs it in their own name: not the record's first statement, so it
    needs an officer's signature."""
    from childvault.vault import _record_trust, _statements
    from childvault.vault._audit import Event

    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
    _forge(world, rid, "伪造")
    with world.open("worker2") as v:
        s = v._session
        row = s.db.records.get(rid)
        assert row is not None
        blob = s.db.records.keyblob(rid)
        assert blob is not None
        env = _record_trust.sign_version(
            s, row, _record_trust.stored_fields(s.db, rid), blob[1], s.now()
        )
        event = Event("worker2", "record.create", records=[rid], detail={"type": "child"})
        with s.db.transaction():
            _record_trust.append_signed(
                s.db, [(_record_trust.with_record_statement(event, env), env)], s.now()
            )
        assert isinstance(env, _statements.Envelope)
    req = _request(world, [rid])
    with world.open("officer1") as v, pytest.raises(IntegrityError, match="entitled"):
        v.approve(req)


def test_genuine_records_read_after_correction_consent_change_and_rotation(
    world: World,
) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 3)
    with world.open("officer1") as v:
        v.correct(ids[0], "name", "更正")
        consent = v.consent_of(ids[1])
        wider = dataclasses.replace(consent, purposes=("case_management", "statistics"))
        v.update_consent(ids[1], wider)
        v.rotate_keys()
    req = _request(world, ids)
    with world.open("officer2") as v:
        token = v.approve(req).token
    with world.open("worker1") as v:
        out = v.read_with_grant(token)
    assert out[ids[0]]["name"] == "更正"
    assert _refusals(world, "request.approve") == []


def test_attack7_erasing_ones_own_read_is_detected(world: World) -> None:
    """A reader deletes their read entry from the log's tail (nothing after it to
    re-hash): the read head they witnessed before decrypting names it, so the
    next approval and `audit verify` refuse the log."""
    with world.open("worker1") as v:
        ids = add_children(v, 2)
    first = _request(world, ids[:1])
    later = _request(world, ids[1:])
    # A subject-access token for the same child, issued before the erasure: the
    # report it would make must not list the child's history without the read.
    subject = grant(world, [ids[0]], ("name",), requester="officer2")
    with world.open("officer1") as v:
        token = v.approve(first).token
    with world.open("worker1") as v:
        assert v.read_with_grant(token)[ids[0]]["name"]
    heads = [line for line in world.witness.read_text().splitlines() if '"head"' in line]
    assert len(heads) == 1
    with Insider(world, "worker1") as insider:
        (last,) = insider.rows("audit", ["seq", "entry"], order_by="seq")[-1:]
        assert b'"grant.read"' in bytes(last[1])
        insider.delete("audit", where={"seq": last[0]})
    # The approval's own entries refill the position: the witnessed hash differs.
    with world.open("officer2") as v, pytest.raises(IntegrityError, match="diverged"):
        v.approve(later)
    with world.open("admin") as v:
        assert v._session.db.access.request(later).status == "pending"  # type: ignore[union-attr]
    with world.open("admin") as v, pytest.raises(IntegrityError, match="truncated"):
        v.verify_audit()
    # `doctor` (which SECURITY.md names) fails on its audit check too.
    r = run(world, "admin", "--json", "doctor")
    assert r.exit_code != 0, r.output
    audit = [c for c in js(r)["checks"] if c["name"] == "audit"]
    assert [c["status"] for c in audit] == ["fail"] and "truncated" in audit[0]["message"]
    # The subject report (the issue: attack 7 erased the read from it too) is refused
    # rather than listing the child's history without the read.
    with world.open("officer2") as v, pytest.raises(IntegrityError, match=r"diverged|truncated"):
        v.subject_report(ids[0], subject)


def test_attack7_a_rewritten_tail_after_a_read_is_detected(world: World) -> None:
    """The reader deletes the read entry and re-chains a benign entry of their own
    in its place: the witnessed hash at that position differs."""
    with world.open("worker1") as v:
        ids = add_children(v, 1)
    req = _request(world, ids)
    with world.open("officer1") as v:
        token = v.approve(req).token
    with world.open("worker1") as v:
        v.read_with_grant(token)
    with Insider(world, "worker1") as insider:
        (last,) = insider.rows("audit", ["seq"], order_by="seq")[-1:]
        insider.delete("audit", where={"seq": last[0]})
    with world.open("worker1") as v:
        list(v.list_records())  # a genuine, signed entry of the reader at the same position
    with world.open("admin") as v, pytest.raises(IntegrityError, match="diverged"):
        v.verify_audit()


def test_rekey_leaves_an_earlier_token_nothing_to_open(world: World) -> None:
    """`keys rotate --rekey`: every stored value gets a new field key and the
    record is re-signed by the rotating officer; the keys inside a token issued
    before open none of the stored (or later backed-up) ciphertexts."""
    from childvault.keys import DecryptionFailed
    from childvault.vault import _tokens
    from childvault.vault._fieldcrypto import open_field

    with world.open("worker1") as v:
        ids = add_children(v, 3)
    req = _request(world, ids[:1])
    with world.open("officer1") as v:
        token = v.approve(req).token
    with world.open("worker1") as v:
        before = v.read_with_grant(token)[ids[0]]["name"]
        claims = _tokens.verify(token, world.ids["officer1"].public.signing_key)
        old_keys = v._session.keys.writer().redeem(claims.keys, world.ids["worker1"], claims.jti)
    with world.open("officer1") as v:
        report = v.rotate_keys(rekey=True)
    assert report.rekeyed == 3
    with world.open("worker1") as v:
        (fv, sealed) = v._session.db.records.fields(ids[0], ["name"])["name"]
        with pytest.raises(DecryptionFailed):
            open_field(
                sealed,
                old_keys[ids[0]]["name"],
                vault_id=v._session.vault_id,
                record_id=ids[0],
                field="name",
                version=fv,
            )
    again = _request(world, ids)
    with world.open("officer2") as v:
        fresh = v.approve(again).token
    with world.open("worker1") as v:
        out = v.read_with_grant(fresh)
    assert out[ids[0]]["name"] == before and len(out) == 3
    assert _refusals(world, "request.approve") == []


def test_rekey_does_not_launder_a_forged_record(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 2)
    _forge(world, ids[0], "伪造")
    with world.open("officer1") as v:
        assert v.rotate_keys(rekey=True).rekeyed == 1
    assert _refusals(world, "keys.rotate")
    req = _request(world, ids[:1])
    with world.open("officer2") as v, pytest.raises(IntegrityError, match=ids[0]):
        v.approve(req)


def test_a_read_head_in_another_readers_name_is_refused(world: World) -> None:
    """A witness line claiming officer1 read at some size, signed by worker2."""
    import base64

    from childvault.vault import _svc_audit

    with world.open("worker1") as v:
        add_children(v, 1)
        vault_id = v._session.vault_id
        size, last = v._session.db.audit.head()
    assert last is not None
    head = {"vault": vault_id, "size": size, "hash": last.hex(), "signer": "officer1", "at": "x"}
    sig = world.ids["worker2"].sign(_svc_audit._head_message(head))
    line = {"head": {**head, "sig": base64.b64encode(sig).decode()}}
    with world.witness.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")
    with world.open("admin") as v, pytest.raises(IntegrityError, match="not signed by 'officer1'"):
        v.verify_audit()


def test_cli_keys_rotate_rekey(world: World) -> None:
    from tests.test_cli import js, run

    with world.open("worker1") as v:
        add_children(v, 2)
    r = run(world, "officer1", "--json", "keys", "rotate", "--rekey")
    assert r.exit_code == 0, r.output
    assert js(r)["rekeyed"] == 2 and js(r)["generation"] == 2
    r = run(world, "officer1", "keys", "rotate", "--rekey")
    assert r.exit_code == 0 and "2 record(s) re-encrypted" in r.output
    r = run(world, "officer1", "--json", "keys", "rotate")
    assert r.exit_code == 0 and "rekeyed" not in js(r)


def test_a_deleted_records_rows_put_back_by_sql_are_refused(world: World) -> None:
    """A record crypto-shredded by an officer, its rows (from a copy taken before)
    written back by SQL: the logged, signed deletion outranks the rows."""
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
    saved = record_rows(world, rid)
    with world.open("officer1") as v:
        v.delete(rid, "申请删除")
    with Insider(world, "worker2") as insider:
        insider.delete("records", {"id": rid})
        columns = saved["columns"]["records"]
        insider.insert("records", dict(zip(columns, saved["rows"]["records"][0], strict=True)))
    put_back(world, rid, saved)
    req = _request(world, [rid])
    with world.open("officer1") as v, pytest.raises(IntegrityError, match=rid):
        v.approve(req)
    with world.open("admin") as v:
        assert v._session.db.access.request(req).status == "pending"  # type: ignore[union-attr]
    assert [e["actor"] for e in _refusals(world, "request.approve")] == ["officer1"]
