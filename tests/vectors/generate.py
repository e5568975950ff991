"""Generate the frozen known-answer vectors in this folder.

    .venv/bin/python -m tests.vectors.generate        # from the repository root

**Regenerating is a format change.** The JSON files next to this script pin the
exact bytes of every format childvault defines (field associated data and
ciphertext, the local provider's blob and grant material, the Vault/OpenBao
derivation context and key blob, audit entries, signed checkpoint notes and
verifier keys, approval tokens, identity and key-slot files, subject reports,
entry proofs and witness files). Data written by one version must stay
readable by the next, and third parties verify reports and proofs with their
own code. So when ``test_vectors.py`` fails, the code changed a format: either
fix the code, or (deliberately) bump the format, record the decision in
docs/decisions.md, and only then run this script and commit the new files
together with that entry. Regenerate only the files whose format changed
(name them: ``python -m tests.vectors.generate audit.json``): the randomised
ones come out different on every run.

Everything that can be deterministic is: fixed keys, fixed nonces through the
private seams (``_fieldcrypto._seal_from_parts``), Ed25519 signatures (PASETO
v4.public, signed notes). Sealed boxes and Argon2id salts are randomised by
design, so the local provider blob, grant material, identity and key-slot files
are frozen as produced once and checked by opening them. Subject reports, entry
proofs and a witness file come from a real vault built here (random ids),
frozen as produced.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nacl.signing
from nacl.public import PrivateKey

from childvault.keys import Identity, KeySlots
from childvault.keys._local import CustodianSecret, LocalProvider

# The Vault/OpenBao pure formats. They move to childvault/keys/_openbao/_formats.py
# (as context, encode_blob, parse_blob, ciphertext_version): change only this block.
from childvault.keys._openbao._formats import (
    ciphertext_version,
    context,
    encode_blob,
)
from childvault.keys._provider import FieldKey, RecordKeys, Selection, WrappedRecord
from childvault.vault import _audit, _fieldcrypto, _merkle, _note, _tokens
from childvault.vault._time import iso

HERE = Path(__file__).resolve().parent

VAULT_ID = "0123456789abcdef0123456789abcdef"
RECORD_ID = "00000192f1c2d3e4a5b6c7d8e9f0a1b2"
GRANT_ID = "fedcba9876543210fedcba9876543210"
REQUEST_ID = "11111111111111112222222222222222"


def seed(label: str, size: int = 32) -> bytes:
    """A fixed, named key: SHA-256 of a label (never random, never secret)."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"childvault-vectors/{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def identity(name: str) -> Identity:
    """An identity with fixed keys derived from ``name``."""
    return Identity(
        name,
        PrivateKey(seed(f"{name}/x25519")),
        nacl.signing.SigningKey(seed(f"{name}/ed25519")),
    )


def _field_vectors() -> dict[str, Any]:
    cases = []
    inputs = [
        ("name", 1, "测试儿童".encode()),
        ("case_notes", 3, b""),
        ("id_number", 1, b"11010520160301012X"),
        ("address", 2, "北京市朝阳区\n测试街道 1 号\x00".encode()),
    ]
    for i, (field, version, plaintext) in enumerate(inputs):
        key = seed(f"field/{i}/key")
        nonce = seed(f"field/{i}/nonce", 24)
        sealed = _fieldcrypto._seal_from_parts(
            plaintext,
            key,
            nonce,
            vault_id=VAULT_ID,
            record_id=RECORD_ID,
            field=field,
            version=version,
        )
        cases.append(
            {
                "vault_id": VAULT_ID,
                "record_id": RECORD_ID,
                "field": field,
                "version": version,
                "key": key.hex(),
                "nonce": nonce.hex(),
                "plaintext": plaintext.hex(),
                "associated_data": _fieldcrypto.associated_data(
                    VAULT_ID, RECORD_ID, field, version
                ).decode("ascii"),
                "sealed": sealed.hex(),
            }
        )
    return {"format": "XChaCha20-Poly1305-IETF nonce||ciphertext||tag", "cases": cases}


def _local_vectors() -> dict[str, Any]:
    # local.json pins a ``CVL1`` blob (one sealed box per record), as written
    # before issue 18; wrap() now writes ``CVL2`` (local_batch.json). Do not
    # regenerate local.json: it proves the old blobs stay readable.
    generation = 3
    custodian = CustodianSecret.from_bytes(generation, seed("custodian/3"))
    provider = LocalProvider(VAULT_ID, generation, custodian.public, [custodian])
    keys = {
        "name": FieldKey(1, seed("local/name")),
        "address": FieldKey(2, seed("local/address")),
    }
    (blob,) = provider.wrap([RecordKeys(RECORD_ID, 2, keys)])
    requester = identity("worker1")
    other = RECORD_ID[:-1] + "3"
    material = provider.release(
        [Selection(WrappedRecord(RECORD_ID, 2, blob), ("name",))],
        requester.public,
        GRANT_ID,
    )
    return {
        "vault_id": VAULT_ID,
        "blob": {
            "custodian_generation": generation,
            "custodian_secret": custodian.secret_bytes().hex(),
            "custodian_public": custodian.public.hex(),
            "record_id": RECORD_ID,
            "version": 2,
            "keys": {n: [fk.version, fk.key.hex()] for n, fk in keys.items()},
            "blob": blob.hex(),
            "other_record_id": other,
        },
        "grant": {
            "requester": "worker1",
            "requester_x25519_secret": seed("worker1/x25519").hex(),
            "requester_ed25519_seed": seed("worker1/ed25519").hex(),
            "grant_id": GRANT_ID,
            "released": {RECORD_ID: {"name": [1, keys["name"].key.hex()]}},
            "material": material.hex(),
        },
    }


def _local_batch_vectors() -> dict[str, Any]:
    """The local provider's batch blob (``CVL2``, issue 18): deterministic through
    the private seam ``LocalProvider._wrap_from_parts`` (fixed ephemeral secret
    and nonces), two records of one batch sharing its ephemeral key."""
    generation = 3
    custodian = CustodianSecret.from_bytes(generation, seed("custodian/3"))
    provider = LocalProvider(VAULT_ID, generation, custodian.public, [custodian])
    other = RECORD_ID[:-1] + "3"
    records = [
        RecordKeys(RECORD_ID, 2, {"name": FieldKey(1, seed("batch/name"))}),
        RecordKeys(other, 1, {"name": FieldKey(1, seed("batch/name2"))}),
    ]
    esk = seed("batch/ephemeral")
    nonces = seed("batch/nonces", 48)
    blobs = provider._wrap_from_parts(records, esk, nonces)
    return {
        "vault_id": VAULT_ID,
        "format": "CVL2 || generation (4, big endian) || epk (32) || nonce (24) || "
        "XChaCha20-Poly1305(inner JSON, ad = prefix || vault|record|version)",
        "custodian_generation": generation,
        "custodian_secret": custodian.secret_bytes().hex(),
        "ephemeral_secret": esk.hex(),
        "nonces": nonces.hex(),
        "records": [
            {
                "record_id": r.record_id,
                "version": r.version,
                "keys": {n: [fk.version, fk.key.hex()] for n, fk in r.fields.items()},
                "blob": blob.hex(),
            }
            for r, blob in zip(records, blobs, strict=True)
        ],
    }


def _openbao_vectors() -> dict[str, Any]:
    contexts = []
    for record_id, field, version, salt_label in [
        (RECORD_ID, "name", 1, "salt/a"),
        (RECORD_ID, "guardian_phone", 12, "salt/b"),
        ("ab" * 16, "x", 1, "salt/c"),
    ]:
        salt = seed(salt_label)
        contexts.append(
            {
                "record_id": record_id,
                "field": field,
                "field_version": version,
                "salt": salt.hex(),
                "context": context(record_id, field, version, salt),
            }
        )
    entries = {
        "name": (1, "vault:v1:" + "A" * 8 + "=="),
        "address": (2, "vault:v3:c2VjcmV0LXdyYXBwZWQta2V5"),
    }
    blob = encode_blob(RECORD_ID, 2, entries)
    return {
        "contexts": contexts,
        "blobs": [
            {
                "record_id": RECORD_ID,
                "version": 2,
                # A list: the blob keeps the order the fields were given in.
                "entries": [[n, v, ct] for n, (v, ct) in entries.items()],
                "blob": blob.decode("utf-8"),
            }
        ],
        "ciphertext_versions": [
            {"ciphertext": ct, "version": ciphertext_version(ct)}
            for ct in ("vault:v1:abc", "vault:v12:AAAA==", "vault:v300:x:y")
        ],
    }


def _audit_vectors() -> dict[str, Any]:
    moment = datetime(2026, 11, 24, 9, 30, 15, 123456, tzinfo=UTC)
    events = [
        _audit.Event("admin", "vault.init", detail={"institution": "测试福利院"}),
        _audit.Event(
            "worker1",
            "record.create",
            records=[RECORD_ID],
            fields=["name", "address"],
            detail={"source": "导入\t文件\n第二行\x01\x1f\u2028end", "row": 7, "ok": True},
        ),
        _audit.Event(
            "officer1",
            "request.approve",
            records=[RECORD_ID],
            fields=["name"],
            purpose="case_management",
            request=REQUEST_ID,
            grant=GRANT_ID,
            detail={"ttl": "15m", "uses": 1, "note": None, "list": ["a", '"q"', "\\"]},
        ),
        _audit.Event("worker2", "grant.read", outcome="denied", grant=GRANT_ID, detail={}),
    ]
    prev: bytes | None = None
    out = []
    ts = iso(moment)
    for seq, event in enumerate(events):
        entry = _audit.encode_entry(seq, ts, event, prev)
        digest = _merkle.leaf_hash(entry)
        out.append(
            {
                "seq": seq,
                "ts": ts,
                "event": {
                    "actor": event.actor,
                    "action": event.action,
                    "outcome": event.outcome,
                    "records": list(event.records),
                    "fields": list(event.fields),
                    "purpose": event.purpose,
                    "request": event.request,
                    "grant": event.grant,
                    "detail": dict(event.detail),
                },
                "prev": None if prev is None else prev.hex(),
                "entry": entry.decode("utf-8"),
                "leaf_hash": digest.hex(),
            }
        )
        prev = digest
    leaves = [bytes.fromhex(e["leaf_hash"]) for e in out]
    return {"entries": out, "root": _merkle.root_of(leaves).hex()}


class RunLog:
    """A minimal in-memory log for :func:`_audit.append`: a head, rows, a signer."""

    def __init__(self, seq: int, prev: bytes, signer: Identity) -> None:
        self.seq, self.prev, self.signer = seq, prev, signer
        self.rows: list[tuple[int, bytes, bytes, bytes | None]] = []

    def head(self) -> tuple[int, bytes | None]:
        return self.seq, self.prev

    def append(self, rows: list[tuple[int, bytes, bytes, bytes | None]]) -> None:
        self.rows.extend(rows)


#: The run vector: where its log starts, its actor and what they append in one call.
RUN_FIRST = 5
RUN_EVENTS = [
    _audit.Event("worker1", "record.create", records=[RECORD_ID], fields=["name"]),
    _audit.Event("worker1", "record.create", records=[GRANT_ID], fields=["name"]),
    _audit.Event("worker1", "record.create", records=[REQUEST_ID], fields=["address"]),
    # Signed alone (SIGN_ALONE): the run before it closes on the third entry.
    _audit.Event("worker1", "request.create", request=REQUEST_ID, purpose="case_management"),
]


def _audit_run_vectors() -> dict[str, Any]:
    """One signature per appended run (docs/decisions.md): three entries, one signature."""
    moment = datetime(2026, 12, 1, 13, 0, 0, 654321, tzinfo=UTC)
    prev = seed("audit_run/prev")
    log = RunLog(RUN_FIRST, prev, identity("worker1"))
    _audit.append(log, RUN_EVENTS, moment)
    return {
        "first": RUN_FIRST,
        "prev": prev.hex(),
        "ts": iso(moment),
        "actor": "worker1",
        "ed25519_public": identity("worker1").public.signing_key.hex(),
        "rows": [
            {
                "seq": seq,
                "entry": entry.decode("utf-8"),
                "leaf_hash": digest.hex(),
                "sig": None if sig is None else sig.hex(),
            }
            for seq, entry, digest, sig in log.rows
        ],
        # What the two signatures cover: the run's (first seq, last hash), then
        # the lone entry's hash.
        "signed": [
            _audit.run_message(RUN_FIRST, log.rows[2][2]).hex(),
            _audit.entry_message(log.rows[3][2]).hex(),
        ],
    }


def _checkpoint_vectors(audit: dict[str, Any]) -> dict[str, Any]:
    officer = identity("officer1")
    cosigner = identity("officer2")
    name = f"childvault/{VAULT_ID}/officer1"
    co_name = f"childvault/{VAULT_ID}/officer2"
    cp = _note.Checkpoint(
        f"childvault/{VAULT_ID}", len(audit["entries"]), bytes.fromhex(audit["root"])
    )
    note = _note.sign_note(cp.body(), name, officer.sign, officer.public.signing_key)
    cosigned = _note.add_signature(note, co_name, cosigner.sign, cosigner.public.signing_key)
    return {
        "origin": cp.origin,
        "size": cp.size,
        "root": cp.root.hex(),
        "body": cp.body().decode("utf-8"),
        "signers": [
            {
                "name": name,
                "ed25519_seed": seed("officer1/ed25519").hex(),
                "public_key": officer.public.signing_key.hex(),
                "key_id": _note.key_id(name, officer.public.signing_key).hex(),
                "vkey": _note.vkey(name, officer.public.signing_key),
            },
            {
                "name": co_name,
                "ed25519_seed": seed("officer2/ed25519").hex(),
                "public_key": cosigner.public.signing_key.hex(),
                "key_id": _note.key_id(co_name, cosigner.public.signing_key).hex(),
                "vkey": _note.vkey(co_name, cosigner.public.signing_key),
            },
        ],
        "note": note,
        "cosigned_note": cosigned,
    }


def _token_vectors() -> dict[str, Any]:
    officer = identity("officer1")
    claims = _tokens.GrantClaims(
        jti=GRANT_ID,
        req=REQUEST_ID,
        iss="officer1",
        sub="worker1",
        vault=VAULT_ID,
        rec=(RECORD_ID,),
        fld=("name", "address"),
        pur="case_management",
        iat=datetime(2026, 11, 24, 9, 0, tzinfo=UTC),
        nbf=datetime(2026, 11, 24, 9, 0, tzinfo=UTC),
        exp=datetime(2026, 11, 24, 9, 15, tzinfo=UTC),
        uses=1,
        keys=seed("token/keys", 80),
    )
    return {
        "officer": "officer1",
        "officer_ed25519_seed": seed("officer1/ed25519").hex(),
        "officer_public_key": officer.public.signing_key.hex(),
        "paserk_pid": _tokens.paserk_pid(officer.public.signing_key),
        "claims": claims.to_payload(),
        "token": _tokens.issue(officer, claims),
    }


def _files_vectors() -> dict[str, Any]:
    # Files in a vault's home. Argon2id salts and sealed boxes are random:
    # frozen as written once, checked by opening them.
    passphrase = "vectors-passphrase-1"
    secrets_ = {"db": seed("files/db"), "index": seed("files/index")}
    with tempfile.TemporaryDirectory() as tmp:
        ident = Path(tmp) / "worker1.id"
        identity("worker1").save(ident, passphrase)
        slots = KeySlots(Path(tmp) / "keyslots.json")
        slots.create(VAULT_ID)
        for name in ("worker1", "officer1"):
            slots.add(identity(name).public, VAULT_ID, secrets_)
        return {
            "identity": {
                "name": "worker1",
                "passphrase": passphrase,
                "x25519_secret": seed("worker1/x25519").hex(),
                "ed25519_seed": seed("worker1/ed25519").hex(),
                "file": ident.read_text(encoding="utf-8"),
            },
            "keyslots": {
                "vault_id": VAULT_ID,
                "users": ["worker1", "officer1"],
                "secrets": {k: v.hex() for k, v in secrets_.items()},
                "file": slots.path.read_text(encoding="utf-8"),
            },
        }


def _report_vectors() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    # A real vault, the way the suite builds one (Argon2id: a few seconds).
    from tests.conftest import World, add_children, build_template
    from tests.test_reports import grant

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        world = World(home, build_template(home))
        with world.open("worker1") as v:
            ids = add_children(v, 2)
        token = grant(world, ids, ("name",))
        with world.open("worker1") as v:
            v.read_with_grant(token)
        token = grant(world, [ids[0]], ("name", "address"), requester="officer2")
        with world.open("officer2") as v:
            report = v.subject_report(ids[0], token)
            vkeys = v.signer_vkeys()
        with world.open("officer1") as v:
            proof = v.prove_entry(3)
            proof_vkeys = v.signer_vkeys()
        witness = world.witness.read_text(encoding="utf-8")
    return (
        {"vkeys": vkeys, "record_id": ids[0], "report": report},
        {"vkeys": proof_vkeys, "seq": 3, "proof": proof},
        {"vkeys": proof_vkeys, "origin": f"childvault/{report['vault_id']}", "file": witness},
    )


def _write(name: str, doc: dict[str, Any]) -> None:
    text = json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    (HERE / name).write_text(text, encoding="utf-8")
    print(f"wrote tests/vectors/{name}")


def main(argv: list[str]) -> int:
    """Write every vector file (or only those named on the command line)."""
    audit = _audit_vectors()
    makers: dict[str, Callable[[], dict[str, Any]]] = {
        "field.json": _field_vectors,
        "local.json": _local_vectors,
        "local_batch.json": _local_batch_vectors,
        "openbao.json": _openbao_vectors,
        "audit.json": lambda: audit,
        "audit_run.json": _audit_run_vectors,
        "checkpoint.json": lambda: _checkpoint_vectors(audit),
        "token.json": _token_vectors,
        "files.json": _files_vectors,
    }
    from_a_vault = ("subject_report.json", "entry_proof.json", "witness.json")
    wanted = set(argv) or {*makers, *from_a_vault}
    for name, make in makers.items():
        if name in wanted:
            _write(name, make())
    if wanted.intersection(from_a_vault):
        for name, doc in zip(from_a_vault, _report_vectors(), strict=True):
            if name in wanted:
                _write(name, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
