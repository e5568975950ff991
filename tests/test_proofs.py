"""Inclusion proofs and the standalone verifier: reports and entry proofs
verify with nothing but the published vkeys, and fail after any change to the
report or any rewrite of the log."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from childvault.cli.main import cli
from childvault.keys import (
    AccessDenied,
    ChildVaultError,
    Identity,
    IntegrityError,
    NotFound,
    UsageError,
)
from childvault.vault import _merkle, _note
from childvault.vault._reports import (
    _inclusion_proofs,
    _Leaves,
    verify_entry_proof,
    verify_subject_report,
)
from childvault.vault._session import Session
from tests._insider import Insider, at_least
from tests.conftest import PASSPHRASES, World, add_children
from tests.test_reports import grant

Report = dict[str, Any]


@pytest.fixture
def proven(world: World) -> Iterator[tuple[World, str, Report, list[str]]]:
    """A fully proven report (made by an officer) about a record with some history."""
    with world.open("worker1") as v:
        ids = add_children(v, 2)
    token = grant(world, ids, ("name",))
    with world.open("worker1") as v:
        v.read_with_grant(token)
    token = grant(world, [ids[0]], ("name", "address"), requester="officer2")
    with world.open("officer2") as v:
        report = v.subject_report(ids[0], token)
        vkeys = v.signer_vkeys()
    yield world, ids[0], report, vkeys


def _seq_of(report: Report, action: str) -> int:
    return next(e["seq"] for e in report["entries"] if json.loads(e["entry"])["action"] == action)


# ------------------------------------------------------------ merkle helper


def test_shared_proof_builder_matches_rfc9162_paths() -> None:
    for size in range(1, 40):
        leaves = [_merkle.leaf_hash(bytes([i])) for i in range(size)]
        buf = _Leaves()
        for leaf in leaves:
            buf.append(leaf)
        got = _inclusion_proofs(buf, size, range(size))
        for index in range(size):
            assert got[index] == _merkle.inclusion_proof(index, leaves)
            assert _merkle.verify_inclusion(
                leaves[index], index, size, got[index], _merkle.root_of(leaves)
            )


# ------------------------------------------------------------- happy paths


def test_report_verifies_with_only_the_published_vkeys(
    proven: tuple[World, str, Report, list[str]],
) -> None:
    _, rid, report, vkeys = proven
    # Round trip through JSON text, as a child or guardian receives it.
    received = json.loads(json.dumps(report, ensure_ascii=False))
    result = verify_subject_report(received, vkeys)
    assert result.record_id == rid and result.complete and result.data_authenticated
    assert result.signers == (f"childvault/{report['vault_id']}/officer2",)
    # Each entry by hand, the way a third party would with its own RFC 6962 code.
    cp, _ = _note.verify_note(report["checkpoint"]["note"], dict(map(_note.parse_vkey, vkeys)))
    for e in report["entries"]:
        # A redacted entry (issue 15) withholds its exact bytes: its stated leaf
        # hash is what is proven; every other entry re-hashes to its leaf.
        leaf = _merkle.leaf_hash(e["entry"].encode("utf-8"))
        if e.get("redacted"):
            leaf = bytes.fromhex(e["leaf_hash"])
        assert leaf.hex() == e["leaf_hash"]
        proof = [bytes.fromhex(h) for h in e["proof"]]
        assert _merkle.verify_inclusion(leaf, e["seq"], cp.size, proof, cp.root)


def test_prove_entry_signs_a_checkpoint_when_needed_and_verifies(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 3)
    with world.open("officer1") as v:
        old = v.prove_entry(2)
        size = old["checkpoint"]["size"]
        assert verify_entry_proof(old, v.signer_vkeys()).proven == (2,)
        # Covered by that checkpoint: no new one is signed.
        assert v.prove_entry(size - 1)["checkpoint"] == old["checkpoint"]
        with world.open("worker1") as w:
            add_children(w, 1)
        newest = v.prove_entry(size)
        # The entry was newer than every checkpoint: one was signed to cover it
        # (and its own audit.checkpoint entry).
        assert newest["checkpoint"]["size"] == size + 2
        assert verify_entry_proof(newest, v.signer_vkeys()).checkpoint_size == size + 2
        with pytest.raises(NotFound):
            v.prove_entry(10_000)
        with pytest.raises(UsageError):
            v.prove_entry(-1)
    with world.open("worker1") as v, pytest.raises(AccessDenied):
        v.prove_entry(0)


# ---------------------------------------------------------- altered reports


def _alter_entry_bytes(r: Report) -> None:
    e = r["entries"][0]
    e["entry"] = e["entry"].replace('"record.create"', '"record.correct"')


def _alter_entry_and_leaf(r: Report) -> None:
    _alter_entry_bytes(r)
    r["entries"][0]["leaf_hash"] = _merkle.leaf_hash(r["entries"][0]["entry"].encode()).hex()


def _alter_proof_hash(r: Report) -> None:
    h = r["entries"][1]["proof"][0]
    r["entries"][1]["proof"][0] = ("0" if h[0] != "0" else "1") + h[1:]


def _alter_checkpoint_text(r: Report) -> None:
    lines = r["checkpoint"]["note"].split("\n")
    lines[1] = str(int(lines[1]) + 1)
    r["checkpoint"]["note"] = "\n".join(lines)
    r["checkpoint"]["size"] += 1


def _alter_signature(r: Report) -> None:
    note = r["checkpoint"]["note"]
    body, sig = note.rsplit(" ", 1)
    ch = sig[10]
    r["checkpoint"]["note"] = body + " " + sig[:10] + ("A" if ch != "A" else "B") + sig[11:]


def _alter_data(r: Report) -> None:
    r["data"]["name"] = "别人的名字"


def _alter_consent(r: Report) -> None:
    r["consent"]["purposes"].append("statistics")


def _alter_retention(r: Report) -> None:
    r["retention"]["retain_until"] = "2099-01-01"


def _mark_old_entry_pending(r: Report) -> None:
    r["entries"][0]["checkpointed"] = False
    r["entries"][0]["proof"] = []
    r["pending"]["entries"] = 1


def _drop_report_entry(r: Report) -> None:
    r["entries"] = [e for e in r["entries"] if '"report.subject"' not in e["entry"]]


def _drop_an_earlier_entry(r: Report) -> None:
    # Hide that worker1 read the record: the entry list is no longer complete.
    r["entries"] = [e for e in r["entries"] if '"grant.read"' not in e["entry"]]


def _swap_seq(r: Report) -> None:
    r["entries"][0]["seq"] += 1


def _other_record(r: Report) -> None:
    r["record_id"] = "0" * 32


@pytest.mark.parametrize(
    "alter",
    [
        _alter_entry_bytes,
        _alter_entry_and_leaf,
        _alter_proof_hash,
        _alter_checkpoint_text,
        _alter_signature,
        _alter_data,
        _alter_consent,
        _alter_retention,
        _mark_old_entry_pending,
        _drop_report_entry,
        _drop_an_earlier_entry,
        _swap_seq,
        _other_record,
    ],
)
def test_any_alteration_of_the_report_fails(
    proven: tuple[World, str, Report, list[str]], alter: Any
) -> None:
    _, _, report, vkeys = proven
    changed = copy.deepcopy(report)
    alter(changed)
    with pytest.raises(IntegrityError) as info:
        verify_subject_report(changed, vkeys)
    assert info.value.exit_code == 4


def test_wrong_or_malformed_vkeys(proven: tuple[World, str, Report, list[str]]) -> None:
    _, _, report, vkeys = proven
    stranger = Identity.generate("officer2")
    name = f"childvault/{report['vault_id']}/officer2"
    with pytest.raises(IntegrityError):
        verify_subject_report(report, [_note.vkey(name, stranger.public.signing_key)])
    with pytest.raises(UsageError):
        verify_subject_report(report, ["not a vkey"])
    with pytest.raises(UsageError):
        verify_subject_report(report, [])
    # A single vkey string is accepted as well as a list.
    assert verify_subject_report(report, vkeys[-1] if "officer2" in vkeys[-1] else vkeys).complete


# ------------------------------------------------------------ edited logs


def test_report_and_proofs_refused_after_an_entry_is_edited_in_place(
    proven: tuple[World, str, Report, list[str]],
) -> None:
    world, _, report, _ = proven
    seq = _seq_of(report, "grant.read")
    with Insider(world, "worker1") as insider:
        ((entry,),) = insider.rows("audit", ["entry"], where={"seq": seq})
        changed = bytes(entry).replace(b'"worker1"', b'"worker2"')
        insider.update("audit", {"entry": changed}, where={"seq": seq})
    with world.open("officer1") as v:
        with pytest.raises(IntegrityError, match=f"entry {seq} was modified"):
            v.prove_entry(seq)
        vkeys = v.signer_vkeys()
    # The report made before the edit still verifies on its own: it is the
    # child's evidence of what the log said.
    assert verify_subject_report(report, vkeys).complete


def test_report_refused_when_an_edit_recomputes_the_hash(
    proven: tuple[World, str, Report, list[str]],
) -> None:
    world, rid, report, _ = proven
    seq = _seq_of(report, "grant.read")
    insider = Insider(world, "worker1")
    ((entry,),) = insider.rows("audit", ["entry"], where={"seq": seq})
    changed = bytes(entry).replace(b'"worker1"', b'"worker2"')
    insider.update("audit", {"entry": changed, "hash": _merkle.leaf_hash(changed)}, {"seq": seq})
    stored = [bytes(h) for (h,) in insider.rows("audit", ["hash"], order_by="seq")]
    # officer2's own last checkpoint (signed for the report) covers the edited
    # entry, so its next approval resumes after it: the new checkpoint commits
    # to the log as it was signed, never to the edit ...
    grant(world, [rid], ("name",), requester="officer1", officer="officer2")
    size, root = insider.rows(
        "checkpoints", ["size", "root"], where={"signer": "officer2"}, order_by="id"
    )[-1]
    tail = [bytes(h) for (h,) in insider.rows("audit", ["hash"], order_by="seq")][len(stored) :]
    insider.close()
    assert root != _merkle.root_of((stored + tail)[:size])
    genuine = stored + tail
    genuine[seq] = _merkle.leaf_hash(bytes(entry))
    assert bytes(root) == _merkle.root_of(genuine[:size])
    # ... and every full check names the edit: verify, an explicit checkpoint, the report.
    with world.open("officer2") as v:
        with pytest.raises(IntegrityError, match=f"entry {seq + 1} does not link"):
            v.verify_audit()
        with pytest.raises(IntegrityError, match=f"entry {seq + 1} does not link"):
            v.checkpoint()
        # Issue 12: an approval now checks its records against the log's latest
        # record statements, walking the chain from the approving officer's own
        # saved point (before the edit here), so the approval itself refuses
        # and no token for a report over the edited log is issued.
        with pytest.raises(IntegrityError, match=f"entry {seq + 1} does not link"):
            grant(world, [rid], ("name", "address"), requester="officer2")


def _rewrite_log(world: World, seq: int) -> None:
    """An insider rewrites entry ``seq`` into a valid chain and removes every
    checkpoint they can reach (the stored ones and the witness file)."""
    with Insider(world, "worker1") as insider:
        ((prev,),) = insider.rows("audit", ["hash"], where={"seq": seq - 1})
        prev_hex = bytes(prev).hex()
        rows = insider.rows("audit", ["seq", "entry"], where={"seq": at_least(seq)}, order_by="seq")
        for s, entry in rows:
            obj = json.loads(entry)
            if s == seq:
                obj["actor"] = "worker2"
            obj["prev"] = prev_hex
            new = rfc8785.dumps(obj)
            digest = _merkle.leaf_hash(new)
            insider.update("audit", {"entry": new, "hash": digest}, where={"seq": s})
            prev_hex = digest.hex()
        insider.delete("checkpoints")
    world.witness.write_text("")


def test_a_rewritten_log_cannot_prove_the_entries_of_an_earlier_report(
    proven: tuple[World, str, Report, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    world, rid, earlier, vkeys = proven
    seq = _seq_of(earlier, "grant.read")
    _rewrite_log(world, seq)
    # Issue 12: the rewritten entries no longer carry their actors' signatures,
    # so the next approval refuses the rewritten log before signing anything.
    with pytest.raises(IntegrityError, match="not signed by them"):
        grant(world, [rid], ("name",), requester="officer2", officer="officer1")
    # An officer whose process does not check (a build before issue 12, say)
    # would sign a checkpoint over it; the report verifier still catches that.
    world.ids = {
        n: Identity(i.name, i._x25519, i._ed25519, None)  # no anchor: nothing verified
        for n, i in world.ids.items()
    }
    # Such a build also lacks the refusal of an identity without an anchor.
    monkeypatch.setattr(Session, "refuse_unanchored", lambda self, action, now: None)
    token = grant(world, [rid], ("name",), requester="officer2", officer="officer1")
    with world.open("officer2") as v:
        later = v.subject_report(rid, token)
    assert verify_subject_report(later, vkeys).complete  # consistent on its own...
    # ...but the entries the child already holds no longer prove against it,
    with pytest.raises(IntegrityError, match=f"entry {seq} of the earlier report"):
        verify_subject_report(later, vkeys, previous=earlier)
    # and re-verifying the earlier report against the new checkpoint fails.
    mixed = copy.deepcopy(earlier)
    mixed["checkpoint"] = later["checkpoint"]
    new_proofs = {e["seq"]: e["proof"] for e in later["entries"]}
    for e in mixed["entries"]:
        e["proof"] = new_proofs[e["seq"]]
    with pytest.raises(IntegrityError, match=f"entry {seq} does not lead"):
        verify_subject_report(mixed, vkeys)


def test_previous_report_comparison_passes_when_nothing_changed(
    proven: tuple[World, str, Report, list[str]],
) -> None:
    world, rid, earlier, vkeys = proven
    token = grant(world, [rid], ("name",), requester="officer2", officer="officer1")
    with world.open("officer2") as v:
        later = v.subject_report(rid, token)
    result = verify_subject_report(later, vkeys, previous=earlier)
    assert set(earlier_seq["seq"] for earlier_seq in earlier["entries"]) <= set(result.proven)


def test_completing_a_report_refuses_altered_data(
    proven: tuple[World, str, Report, list[str]],
) -> None:
    world, _, report, _ = proven
    changed = copy.deepcopy(report)
    changed["data"]["name"] = "别人的名字"
    with world.open("officer1") as v, pytest.raises(IntegrityError, match="not issued"):
        v.complete_subject_report(changed)
    changed = copy.deepcopy(report)
    _alter_entry_bytes(changed)
    with world.open("officer1") as v, pytest.raises(IntegrityError, match="differs from"):
        v.complete_subject_report(changed)


# ---------------------------------------------------- mutation property test

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _paths(value, (*prefix, i))


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


@st.composite
def _mutation(draw: st.DrawFn, doc: Report) -> Report:
    out = copy.deepcopy(doc)
    path = draw(st.sampled_from(list(_paths(out))[1:]))
    parent, key = _get(out, path[:-1]), path[-1]
    node = parent[key]
    kind = draw(st.sampled_from(["replace", "delete", "tweak", "insert"]))
    if kind == "replace":
        parent[key] = draw(_json)
    elif kind == "delete":
        del parent[key]
    elif kind == "insert" and isinstance(node, dict):
        node[draw(st.text(max_size=8))] = draw(_json)
    elif kind == "insert" and isinstance(node, list):
        node.insert(draw(st.integers(0, len(node))), draw(_json))
    elif isinstance(node, str):
        pos = draw(st.integers(0, max(len(node) - 1, 0)))
        parent[key] = node[:pos] + draw(st.characters()) + node[pos + 1 :]
    elif isinstance(node, bool):
        parent[key] = not node
    elif isinstance(node, int):
        parent[key] = node + draw(st.integers(-3, 3).filter(bool))
    else:
        parent[key] = draw(_json)
    return out


def _authenticated(doc: Report) -> Any:
    return (
        doc.get("record_id"),
        doc.get("data"),
        doc.get("consent"),
        doc.get("retention"),
        doc.get("record"),
        [(e["seq"], e["entry"]) for e in doc.get("entries", [])],
    )


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_reports_fail_only_with_library_errors(
    proven: tuple[World, str, Report, list[str]], data: st.DataObject
) -> None:
    _, _, report, vkeys = proven
    mutated = data.draw(_mutation(report))
    try:
        result = verify_subject_report(mutated, vkeys)
    except ChildVaultError:
        return
    # Accepted: what the verifier vouches for must be what the vault issued
    # (a mutation may only touch unauthenticated text, or be a no-op).
    original = {e["seq"]: e["entry"] for e in report["entries"]}
    for e in mutated["entries"]:
        if e["seq"] in result.proven:
            assert original.get(e["seq"]) == e["entry"]
    if result.complete:
        assert _authenticated(mutated) == _authenticated(report)


@pytest.fixture
def bundle(world: World) -> Iterator[tuple[dict[str, Any], list[str]]]:
    with world.open("worker1") as v:
        add_children(v, 2)
    with world.open("officer1") as v:
        yield v.prove_entry(5), v.signer_vkeys()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_mutated_entry_proofs_fail_only_with_library_errors(
    bundle: tuple[dict[str, Any], list[str]], data: st.DataObject
) -> None:
    doc, vkeys = bundle
    mutated = data.draw(_mutation(doc))
    try:
        verify_entry_proof(mutated, vkeys)
    except ChildVaultError:
        return
    assert (mutated.get("seq"), mutated.get("entry")) == (doc["seq"], doc["entry"])


# ------------------------------------------------------------------- CLI


def test_cli_prove_and_verify_without_a_database(world: World, tmp_path: Path) -> None:
    world.clock.now = datetime.now(UTC)
    with world.open("worker1") as v:
        ids = add_children(v, 1)
    token = grant(world, ids, ("name",))
    with world.open("worker1") as v:
        staff_report = v.subject_report(ids[0], token)
    with world.open("admin") as v:
        vkeys = v.signer_vkeys()
    report_file = tmp_path / "report.json"
    report_file.write_text(json.dumps(staff_report, ensure_ascii=False))
    proof_file = tmp_path / "proof.json"
    env = {
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": "officer1",
        "CHILDVAULT_PASSPHRASE": PASSPHRASES["officer1"],
    }
    r = CliRunner().invoke(
        cli, ["--json", "audit", "prove", "--entry", "3", "--out", str(proof_file)], env=env
    )
    assert r.exit_code == 0, r.output
    assert proof_file.stat().st_mode & 0o777 == 0o600
    assert json.loads(r.stdout)["vkeys"] == vkeys

    bare = {"CHILDVAULT_HOME": "", "CHILDVAULT_USER": "", "CHILDVAULT_PASSPHRASE": ""}
    args = [arg for vk in vkeys for arg in ("--vkey", vk)]
    r = CliRunner().invoke(cli, ["audit", "prove", "--verify", str(proof_file), *args], env=bare)
    assert r.exit_code == 0, r.output
    assert "ok: 1 entry" in r.stdout
    # A staff-made report verifies with a warning, and fails under --strict.
    r = CliRunner().invoke(
        cli, ["--json", "audit", "prove", "--verify", str(report_file), *args], env=bare
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["complete"] is False
    r = CliRunner().invoke(
        cli, ["audit", "prove", "--verify", str(report_file), "--strict", *args], env=bare
    )
    assert r.exit_code == 4 and "not yet proven" in r.stderr
    # The officer completes it; then --strict passes.
    done_file = tmp_path / "done.json"
    r = CliRunner().invoke(
        cli,
        ["audit", "prove", "--complete", str(report_file), "--out", str(done_file)],
        env=env,
    )
    assert r.exit_code == 0, r.output
    vkey_file = tmp_path / "vkeys.txt"
    vkey_file.write_text("\n".join(vkeys) + "\n")
    r = CliRunner().invoke(
        cli,
        ["audit", "prove", "--verify", str(done_file), "--strict", "--vkey", f"@{vkey_file}"],
        env=bare,
    )
    assert r.exit_code == 0, r.output
    # Tampering: exit 4; no vkey or two modes: usage errors (exit 2).
    doc = json.loads(done_file.read_text())
    doc["data"]["name"] = "别人的名字"
    done_file.write_text(json.dumps(doc, ensure_ascii=False))
    r = CliRunner().invoke(cli, ["audit", "prove", "--verify", str(done_file), *args], env=bare)
    assert r.exit_code == 4 and "altered" in r.stderr
    done_file.write_text("{not json")
    r = CliRunner().invoke(cli, ["audit", "prove", "--verify", str(done_file), *args], env=bare)
    assert r.exit_code == 4
    r = CliRunner().invoke(cli, ["audit", "prove", "--verify", str(proof_file)], env=bare)
    assert r.exit_code == 2
    r = CliRunner().invoke(
        cli, ["audit", "prove", "--verify", str(proof_file), "--entry", "1", *args], env=bare
    )
    assert r.exit_code == 2
