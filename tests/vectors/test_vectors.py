"""Known-answer tests: the code still produces and accepts the frozen formats.

Each JSON file here was written once by ``generate.py``. A failure means a
format changed: data already written, or reports already handed to a child or
guardian, would no longer read or verify. Fix the code, or make the format
change deliberately (decision entry first, then regenerate; see generate.py).
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing
import pytest
import rfc8785
from nacl.public import PrivateKey

from childvault.keys import (
    ApprovalInvalid,
    ChildVaultError,
    ConfigError,
    DecryptionFailed,
    Identity,
    IntegrityError,
    KeySlots,
    WrongPassphrase,
)
from childvault.keys._local import CustodianSecret, LocalProvider, blob_generation

# The Vault/OpenBao pure formats. They move to childvault/keys/_openbao/_formats.py
# (as context, encode_blob, parse_blob, ciphertext_version): change only this block.
from childvault.keys._openbao._formats import (
    ciphertext_version,
    context,
    encode_blob,
    parse_blob,
)
from childvault.keys._provider import FieldKey, WrappedRecord
from childvault.vault import _audit, _fieldcrypto, _merkle, _note, _tokens
from childvault.vault._reports import verify_entry_proof, verify_subject_report
from childvault.vault._time import parse_iso
from tests.vectors import generate

HERE = Path(__file__).resolve().parent


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((HERE / name).read_text(encoding="utf-8"))
    return doc


@contextmanager
def refused(kind: type[ChildVaultError], reason: str) -> Iterator[None]:
    """Expect ``kind`` whose logged ``detail`` (not the opaque message) names ``reason``."""
    with pytest.raises(kind) as info:
        yield
    assert reason in (info.value.detail or ""), info.value.detail


def flip(data: bytes, index: int) -> bytes:
    """``data`` with one bit of byte ``index`` flipped."""
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


# ------------------------------------------------------------ field sealing

FIELD = load("field.json")["cases"]


@pytest.mark.parametrize("case", FIELD, ids=[c["field"] for c in FIELD])
def test_field_associated_data_and_ciphertext(case: dict[str, Any]) -> None:
    place = {
        "vault_id": case["vault_id"],
        "record_id": case["record_id"],
        "field": case["field"],
        "version": case["version"],
    }
    ad = _fieldcrypto.associated_data(
        case["vault_id"], case["record_id"], case["field"], case["version"]
    )
    assert ad == case["associated_data"].encode("ascii")
    key, nonce = bytes.fromhex(case["key"]), bytes.fromhex(case["nonce"])
    plaintext, sealed = bytes.fromhex(case["plaintext"]), bytes.fromhex(case["sealed"])
    assert _fieldcrypto._seal_from_parts(plaintext, key, nonce, **place) == sealed
    field_key = FieldKey(case["version"], key)
    assert _fieldcrypto.open_field(sealed, field_key, **place) == plaintext


@pytest.mark.parametrize("case", FIELD[:1], ids=[FIELD[0]["field"]])
def test_field_ciphertext_fails_anywhere_else(case: dict[str, Any]) -> None:
    place = {
        "vault_id": case["vault_id"],
        "record_id": case["record_id"],
        "field": case["field"],
        "version": case["version"],
    }
    key = FieldKey(case["version"], bytes.fromhex(case["key"]))
    sealed = bytes.fromhex(case["sealed"])
    # One flipped bit in the nonce, the ciphertext or the tag.
    for index in (0, 23, 24, len(sealed) - 1):
        with pytest.raises(DecryptionFailed):
            _fieldcrypto.open_field(flip(sealed, index), key, **place)
    moved = [
        {**place, "record_id": place["record_id"][:-1] + "f"},
        {**place, "field": "address"},
        {**place, "vault_id": "f" * 32},
    ]
    for other in moved:
        with pytest.raises(DecryptionFailed):
            _fieldcrypto.open_field(sealed, key, **other)
    # Another version: with the key's own version, and with a relabelled key.
    with pytest.raises(DecryptionFailed):
        _fieldcrypto.open_field(sealed, key, **{**place, "version": case["version"] + 1})
    relabelled = FieldKey(case["version"] + 1, key.key)
    with pytest.raises(DecryptionFailed):
        _fieldcrypto.open_field(sealed, relabelled, **{**place, "version": case["version"] + 1})


def test_seal_from_parts_refuses_wrong_lengths() -> None:
    case = FIELD[0]
    place = {"vault_id": "a" * 32, "record_id": "b" * 32, "field": "name", "version": 1}
    with pytest.raises(ValueError, match="wrong length"):
        _fieldcrypto._seal_from_parts(b"x", bytes(31), bytes.fromhex(case["nonce"]), **place)
    with pytest.raises(ValueError, match="wrong length"):
        _fieldcrypto._seal_from_parts(b"x", bytes.fromhex(case["key"]), bytes(12), **place)


# ----------------------------------------------------------- local provider

LOCAL = load("local.json")


def _local_provider(vault_id: str = LOCAL["vault_id"]) -> LocalProvider:
    """An officer's provider: the frozen custodian secret unlocked, for ``vault_id``."""
    doc = LOCAL["blob"]
    custodian = CustodianSecret.from_bytes(
        doc["custodian_generation"], bytes.fromhex(doc["custodian_secret"])
    )
    assert custodian.public.hex() == doc["custodian_public"]
    return LocalProvider(vault_id, custodian.generation, custodian.public, [custodian])


def test_local_blob_opens_to_the_frozen_keys() -> None:
    doc = LOCAL["blob"]
    blob = bytes.fromhex(doc["blob"])
    # Header: b"CVL1" then the custodian generation, 4 bytes big endian.
    assert blob[:4] == b"CVL1"
    assert blob[4:8] == doc["custodian_generation"].to_bytes(4, "big")
    assert blob_generation(blob) == doc["custodian_generation"]
    keys = _local_provider().open(WrappedRecord(doc["record_id"], doc["version"], blob))
    assert {n: [fk.version, fk.key.hex()] for n, fk in keys.items()} == doc["keys"]


def test_local_blob_is_bound_to_record_version_and_vault() -> None:
    doc = LOCAL["blob"]
    blob = bytes.fromhex(doc["blob"])
    provider = _local_provider()
    for record in (
        WrappedRecord(doc["other_record_id"], doc["version"], blob),
        WrappedRecord(doc["record_id"], doc["version"] + 1, blob),
        WrappedRecord(doc["record_id"], doc["version"], flip(blob, len(blob) - 1)),
        WrappedRecord(doc["record_id"], doc["version"], b"CVL2" + blob[4:]),
    ):
        with pytest.raises(DecryptionFailed):
            provider.open(record)
    elsewhere = _local_provider("f" * 32)
    with refused(DecryptionFailed, "another record"):
        elsewhere.open(WrappedRecord(doc["record_id"], doc["version"], blob))


def _requester() -> Identity:
    doc = LOCAL["grant"]
    return Identity(
        doc["requester"],
        PrivateKey(bytes.fromhex(doc["requester_x25519_secret"])),
        nacl.signing.SigningKey(bytes.fromhex(doc["requester_ed25519_seed"])),
    )


def test_grant_material_redeems_for_its_grant_and_vault_only() -> None:
    doc = LOCAL["grant"]
    material = bytes.fromhex(doc["material"])
    provider, requester = _local_provider(), _requester()
    released = provider.redeem(material, requester, doc["grant_id"])
    as_json = {
        rid: {n: [fk.version, fk.key.hex()] for n, fk in fields.items()}
        for rid, fields in released.items()
    }
    assert as_json == doc["released"]
    with refused(ApprovalInvalid, "another grant or vault"):
        provider.redeem(material, requester, "0" * 32)
    other_vault = _local_provider("f" * 32)
    with refused(ApprovalInvalid, "another grant or vault"):
        other_vault.redeem(material, requester, doc["grant_id"])
    with refused(ApprovalInvalid, "not sealed to this requester"):
        provider.redeem(material, Identity.generate(doc["requester"]), doc["grant_id"])
    with pytest.raises(ApprovalInvalid):
        provider.redeem(flip(material, len(material) // 2), requester, doc["grant_id"])


# ---------------------------------------------------------- Vault / OpenBao

OPENBAO = load("openbao.json")


@pytest.mark.parametrize("case", OPENBAO["contexts"], ids=lambda c: c["field"])
def test_openbao_derivation_context(case: dict[str, Any]) -> None:
    got = context(
        case["record_id"], case["field"], case["field_version"], bytes.fromhex(case["salt"])
    )
    assert got == case["context"]


def test_openbao_key_blob_encodes_and_parses() -> None:
    for case in OPENBAO["blobs"]:
        entries = {name: (version, ct) for name, version, ct in case["entries"]}
        blob = encode_blob(case["record_id"], case["version"], entries)
        assert blob == case["blob"].encode("utf-8")
        record = WrappedRecord(case["record_id"], case["version"], blob)
        assert parse_blob(record) == entries
        with refused(DecryptionFailed, "another record or version"):
            parse_blob(WrappedRecord(case["record_id"], case["version"] + 1, blob))
        with refused(DecryptionFailed, "malformed"):
            parse_blob(WrappedRecord(case["record_id"], case["version"], blob[:-1]))


def test_openbao_ciphertext_version() -> None:
    for case in OPENBAO["ciphertext_versions"]:
        assert ciphertext_version(case["ciphertext"]) == case["version"]
    for bad in ("vault:1:abc", "transit:v1:abc", "vault:vx:abc", "vault"):
        with pytest.raises(DecryptionFailed):
            ciphertext_version(bad)


# ---------------------------------------------------------------- audit log

AUDIT = load("audit.json")


@pytest.mark.parametrize("case", AUDIT["entries"], ids=lambda c: c["event"]["action"])
def test_audit_entry_bytes_and_leaf_hash(case: dict[str, Any]) -> None:
    ev = case["event"]
    event = _audit.Event(
        ev["actor"],
        ev["action"],
        ev["outcome"],
        ev["records"],
        ev["fields"],
        ev["purpose"],
        ev["request"],
        ev["grant"],
        ev["detail"],
    )
    prev = None if case["prev"] is None else bytes.fromhex(case["prev"])
    entry = _audit.encode_entry(case["seq"], case["ts"], event, prev)
    assert entry == case["entry"].encode("utf-8")
    # The fast encoder and RFC 8785 itself agree on these bytes.
    assert entry == rfc8785.dumps(json.loads(entry))
    assert _audit.canonical(json.loads(entry)) == entry
    assert _merkle.leaf_hash(entry).hex() == case["leaf_hash"]


def test_audit_entries_chain_and_root() -> None:
    entries = AUDIT["entries"]
    for before, after in itertools.pairwise(entries):
        assert after["prev"] == before["leaf_hash"]
    leaves = [bytes.fromhex(e["leaf_hash"]) for e in entries]
    assert _merkle.root_of(leaves).hex() == AUDIT["root"]


def test_audit_detail_keeps_chinese_and_escapes_controls() -> None:
    text = AUDIT["entries"][1]["entry"]
    assert "导入" in text  # UTF-8, not \\u escapes
    assert "\\t" in text and "\\n" in text and "\\u0001" in text and "\\u001f" in text
    assert "\u2028" in text  # not a control character: RFC 8785 leaves it as is


# ------------------------------------------- one signature per appended run

AUDIT_RUN = load("audit_run.json")


def _run_check(rows: list[dict[str, Any]], key: bytes) -> int | None:
    """The run rule over the vector's rows (all one registered actor's): the first
    entry refused, or None."""
    runs = _audit.RunCheck()
    verify = nacl.signing.VerifyKey(key).verify
    for row in rows:
        seq, digest = row["seq"], bytes.fromhex(row["leaf_hash"])
        action = json.loads(row["entry"])["action"]
        if row["sig"] is None:
            bad = runs.unsigned(seq, AUDIT_RUN["actor"], key, action)
        else:
            message = runs.message(seq, AUDIT_RUN["actor"], key, action, digest)
            try:
                verify(message, bytes.fromhex(row["sig"]))
            except nacl.exceptions.BadSignatureError:
                first = runs.end()
                return seq if first is None else first
            bad = runs.signed(seq, AUDIT_RUN["actor"], key, action)
        if bad is not None:
            return bad
    return runs.end()


def test_audit_run_of_three_entries_has_one_signature() -> None:
    # The same append today gives the same bytes, the same two signatures.
    log = generate.RunLog(
        AUDIT_RUN["first"], bytes.fromhex(AUDIT_RUN["prev"]), generate.identity("worker1")
    )
    _audit.append(log, generate.RUN_EVENTS, parse_iso(AUDIT_RUN["ts"]))
    frozen = [
        (r["seq"], r["entry"].encode(), bytes.fromhex(r["leaf_hash"]), r["sig"])
        for r in AUDIT_RUN["rows"]
    ]
    assert [(s, e, d, None if g is None else g.hex()) for s, e, d, g in log.rows] == frozen
    assert [r["sig"] is None for r in AUDIT_RUN["rows"]] == [True, True, False, False]
    key = bytes.fromhex(AUDIT_RUN["ed25519_public"])
    assert generate.identity("worker1").public.signing_key == key
    run_sig, alone_sig = (bytes.fromhex(r["sig"]) for r in AUDIT_RUN["rows"][2:])
    run_msg, alone_msg = (bytes.fromhex(m) for m in AUDIT_RUN["signed"])
    # The run's signature covers its first seq and its last entry's hash.
    assert run_msg == _audit.run_message(5, bytes.fromhex(AUDIT_RUN["rows"][2]["leaf_hash"]))
    assert run_msg.startswith(b"childvault/run/1\x00" + (5).to_bytes(8, "big"))
    assert alone_msg == _audit.entry_message(bytes.fromhex(AUDIT_RUN["rows"][3]["leaf_hash"]))
    nacl.signing.VerifyKey(key).verify(run_msg, run_sig)
    nacl.signing.VerifyKey(key).verify(alone_msg, alone_sig)
    assert _run_check(AUDIT_RUN["rows"], key) is None


def test_audit_run_vector_refused_when_its_signature_moves_or_goes() -> None:
    key = bytes.fromhex(AUDIT_RUN["ed25519_public"])
    rows = copy.deepcopy(AUDIT_RUN["rows"])
    # The closing signature stripped: the run has no signature.
    stripped = copy.deepcopy(rows)
    stripped[2]["sig"] = None
    assert _run_check(stripped, key) == 5
    # Moved to the run's first entry: it does not verify there.
    moved = copy.deepcopy(rows)
    moved[0]["sig"], moved[2]["sig"] = moved[2]["sig"], None
    assert _run_check(moved, key) == 5
    # The run seen from one entry later (its first entry treated as signed
    # elsewhere): the signature names seq 5, not 6.
    assert _run_check(rows[1:], key) == 6


# ------------------------------------------------------- checkpoint notes

CHECKPOINT = load("checkpoint.json")


def _signer(i: int) -> tuple[str, nacl.signing.SigningKey]:
    doc = CHECKPOINT["signers"][i]
    return doc["name"], nacl.signing.SigningKey(bytes.fromhex(doc["ed25519_seed"]))


def test_checkpoint_body_note_and_vkeys() -> None:
    cp = _note.Checkpoint(
        CHECKPOINT["origin"], CHECKPOINT["size"], bytes.fromhex(CHECKPOINT["root"])
    )
    assert cp.body() == CHECKPOINT["body"].encode("utf-8")
    assert _note.Checkpoint.parse_body(cp.body()) == cp
    known = {}
    for i, doc in enumerate(CHECKPOINT["signers"]):
        name, key = _signer(i)
        public = bytes(key.verify_key)
        assert public.hex() == doc["public_key"]
        assert _note.key_id(name, public).hex() == doc["key_id"]
        assert _note.vkey(name, public) == doc["vkey"]
        assert _note.parse_vkey(doc["vkey"]) == (name, public)
        known[name] = public
    name, key = _signer(0)
    sign = lambda body: key.sign(body).signature  # noqa: E731
    note = _note.sign_note(cp.body(), name, sign, bytes(key.verify_key))
    assert note == CHECKPOINT["note"]
    co_name, co_key = _signer(1)
    co_sign = lambda body: co_key.sign(body).signature  # noqa: E731
    cosigned = _note.add_signature(note, co_name, co_sign, bytes(co_key.verify_key))
    assert cosigned == CHECKPOINT["cosigned_note"]
    assert _note.verify_note(cosigned, known) == (cp, [name, co_name])


def test_checkpoint_note_with_a_flipped_byte_fails() -> None:
    name, key = _signer(0)
    known = {name: bytes(key.verify_key)}
    note = CHECKPOINT["note"]
    assert _note.verify_note(note, known)[1] == [name]
    # A changed tree size, then a changed signature character.
    for changed in (
        note.replace(f"\n{CHECKPOINT['size']}\n", f"\n{CHECKPOINT['size'] + 1}\n"),
        note[:-3] + ("A" if note[-3] != "A" else "B") + note[-2:],
    ):
        assert changed != note
        with pytest.raises(IntegrityError):
            _note.verify_note(changed, known)


# ------------------------------------------------------------ approval token

TOKEN = load("token.json")


def test_approval_token_issue_verify_and_claims() -> None:
    seed = bytes.fromhex(TOKEN["officer_ed25519_seed"])
    signing = nacl.signing.SigningKey(seed)
    public = bytes(signing.verify_key)
    assert public.hex() == TOKEN["officer_public_key"]
    assert _tokens.paserk_pid(public) == TOKEN["paserk_pid"]
    assert _tokens.key_id(TOKEN["token"]) == TOKEN["paserk_pid"]
    claims = _tokens.verify(TOKEN["token"], public)
    assert claims.to_payload() == TOKEN["claims"]
    officer = Identity(TOKEN["officer"], PrivateKey(bytes(32)), signing)
    # Ed25519 and PASETO v4.public are deterministic: the same token, byte for byte.
    assert _tokens.issue(officer, claims) == TOKEN["token"]


def test_approval_token_with_a_flipped_byte_fails() -> None:
    public = bytes.fromhex(TOKEN["officer_public_key"])
    token = TOKEN["token"]
    at = len("v4.public.") + 20
    changed = token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]
    with pytest.raises(ApprovalInvalid):
        _tokens.verify(changed, public)
    with pytest.raises(ApprovalInvalid):
        _tokens.verify(token, bytes(nacl.signing.SigningKey(bytes(32)).verify_key))


# ------------------------------------------------- reports and entry proofs

REPORT = load("subject_report.json")
PROOF = load("entry_proof.json")


def test_frozen_subject_report_still_verifies() -> None:
    result = verify_subject_report(REPORT["report"], REPORT["vkeys"])
    assert result.record_id == REPORT["record_id"]
    assert result.complete and result.data_authenticated


def test_frozen_subject_report_with_a_changed_byte_fails() -> None:
    report = copy.deepcopy(REPORT["report"])
    entry = report["entries"][0]
    entry["entry"] = entry["entry"].replace('"seq":', '"seq": ', 1)
    with pytest.raises(IntegrityError):
        verify_subject_report(report, REPORT["vkeys"])
    report = copy.deepcopy(REPORT["report"])
    proof = report["entries"][0]["proof"]
    assert proof, "the frozen report's first entry has an inclusion proof"
    proof[0] = flip(bytes.fromhex(proof[0]), 0).hex()
    with pytest.raises(IntegrityError):
        verify_subject_report(report, REPORT["vkeys"])
    # The data is bound by the commitment in the report's own log entry.
    report = copy.deepcopy(REPORT["report"])
    name = report["data"]["name"]
    report["data"]["name"] = name[:-1] + chr(ord(name[-1]) ^ 1)
    with pytest.raises(IntegrityError):
        verify_subject_report(report, REPORT["vkeys"])


def test_frozen_entry_proof_still_verifies() -> None:
    result = verify_entry_proof(PROOF["proof"], PROOF["vkeys"])
    assert result.proven == (PROOF["seq"],)
    assert result.checkpoint_size == PROOF["proof"]["checkpoint"]["size"]


def test_frozen_entry_proof_with_a_flipped_byte_fails() -> None:
    for path in (("leaf_hash",), ("proof", 0), ("checkpoint", "root")):
        bundle = copy.deepcopy(PROOF["proof"])
        holder: Any = bundle
        for step in path[:-1]:
            holder = holder[step]
        holder[path[-1]] = flip(bytes.fromhex(holder[path[-1]]), 0).hex()
        with pytest.raises(IntegrityError):
            verify_entry_proof(bundle, PROOF["vkeys"])


# ---------------------------------------------------------- files in a home

FILES = load("files.json")


def test_identity_file_unlocks_to_the_frozen_keys(tmp_path: Path) -> None:
    doc = FILES["identity"]
    path = tmp_path / "user.id"
    path.write_text(doc["file"], encoding="utf-8")
    ident = Identity.load(path, doc["passphrase"])
    assert ident.name == doc["name"]
    assert ident.signing_seed().hex() == doc["ed25519_seed"]
    expected = PrivateKey(bytes.fromhex(doc["x25519_secret"])).public_key
    assert ident.public.encryption_key == bytes(expected)
    with pytest.raises(WrongPassphrase):
        Identity.load(path, doc["passphrase"] + "x")


def test_keyslot_file_opens_for_each_user_and_only_for_them(tmp_path: Path) -> None:
    doc = FILES["keyslots"]
    path = tmp_path / "keyslots.json"
    path.write_text(doc["file"], encoding="utf-8")
    slots = KeySlots(path)
    assert slots.users() == sorted(doc["users"])
    secrets_ = {k: bytes.fromhex(v) for k, v in doc["secrets"].items()}
    for name in doc["users"]:
        seed = generate.seed(f"{name}/x25519")
        signing = nacl.signing.SigningKey(generate.seed(f"{name}/ed25519"))
        assert slots.open(Identity(name, PrivateKey(seed), signing), doc["vault_id"]) == secrets_
    worker = generate.identity("worker1")
    with pytest.raises(ConfigError, match="another vault"):
        slots.open(worker, "f" * 32)
    # worker1's slot filed under officer1's name does not open for officer1.
    moved = json.loads(doc["file"])
    moved["slots"]["officer1"] = moved["slots"]["worker1"]
    path.write_text(json.dumps(moved), encoding="utf-8")
    with pytest.raises(DecryptionFailed):
        KeySlots(path).open(generate.identity("officer1"), doc["vault_id"])


def test_witness_file_reads_and_its_notes_verify(tmp_path: Path) -> None:
    doc = load("witness.json")
    path = tmp_path / "home.witness.jsonl"
    path.write_text(doc["file"], encoding="utf-8")
    notes = _audit.read_witness(path)
    assert len(notes) == doc["file"].count("\n") >= 1
    known = dict(map(_note.parse_vkey, doc["vkeys"]))
    sizes = [_note.verify_note(note, known)[0].size for note in notes]
    assert sizes == sorted(sizes)
    assert all(_note.verify_note(note, known)[0].origin == doc["origin"] for note in notes)
