"""Known answers for record statements: the per-record envelope every vault has
written since issue 12 (still written by ``record add`` and every later version)
and the batch form of issue 18, session 6 (one ``record.batch`` statement per
batch of new records, a member document beside each record).

``record_statements.json`` was written once by running this module
(``python -m tests.vectors.test_record_statements``). A failure means a format
changed: statements already stored would no longer verify. Fix the code, or
change the format deliberately (decision entry first, then regenerate).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from childvault.keys import IntegrityError
from childvault.vault._statements import (
    Anchor,
    BatchMember,
    Envelope,
    TrustState,
    UserState,
    record_statement,
    sign,
    sign_batch,
    stored_statement,
    verify_member,
    verify_record,
)
from tests.vectors.generate import VAULT_ID, identity, seed

HERE = Path(__file__).resolve().parent
NAME = "record_statements.json"
AT = "2026-11-30T12:00:00.000000Z"
WRITER = "worker"
#: The log position of each record's entry (batch members: consecutive).
SEQ = 40


def _record(i: int) -> dict[str, Any]:
    """A fixed record: id, rows as stored (sealed fields, key blob, consent, metadata)."""
    return {
        "record": f"00000192f1c2d3e4a5b6c7d8e9f0a1{i:02x}",
        "type_name": "child",
        "consent": {"purposes": ["case_management"], "relation": "guardian", "n": i},
        "metadata": {"intake_date": "2026-11-30", "district": "西城区"},
        "fields": [
            ("name", 1, seed(f"record{i}/name", 40)),
            ("id_number", 1, seed(f"record{i}/id_number", 58)),
        ],
        "keyblob": seed(f"record{i}/keyblob", 120),
    }


def _statement(rec: dict[str, Any]) -> dict[str, Any]:
    return record_statement(vault_id=VAULT_ID, at=AT, version=1, **rec)


def build() -> dict[str, Any]:
    """Every vector, from fixed keys and rows (Ed25519 signatures are deterministic)."""
    writer = identity(WRITER)
    single = sign(_statement(_record(0)), [writer], plain=True)
    members = sign_batch([_statement(_record(i)) for i in range(1, 4)], [writer])
    return {
        "vault_id": VAULT_ID,
        "writer": WRITER,
        "single": {
            "record": _record(0)["record"],
            "stored": single.to_bytes().decode("ascii"),
            "digest": single.digest(),
        },
        "batch": {
            "records": [_record(i)["record"] for i in range(1, 4)],
            "statement": members[0].batch.to_bytes().decode("ascii"),
            "members": [m.to_bytes().decode("ascii") for m in members],
            "digests": [m.digest() for m in members],
        },
    }


FROZEN: dict[str, Any] = (
    json.loads((HERE / NAME).read_text(encoding="utf-8")) if (HERE / NAME).exists() else {}
)


def _state() -> TrustState:
    """The writer active as staff from entry 0 (what the trust replay would build)."""
    admin, writer = identity("admin"), identity(WRITER)
    anchor = Anchor(VAULT_ID, "admin", admin.public.signing_key)
    state = TrustState.start(anchor)
    state.users[WRITER] = UserState(
        WRITER, ("staff",), writer.public.encryption_key, writer.public.signing_key, active_from=0
    )
    return state


def _rows(i: int) -> dict[str, Any]:
    rec = _record(i)
    return {**rec, "version": 1}


def test_the_frozen_vectors_are_built_again_byte_for_byte() -> None:
    assert build() == FROZEN


def test_a_frozen_per_record_envelope_still_verifies() -> None:
    """Old vaults (and record add): the stored envelope parses as one and verifies."""
    stored = FROZEN["single"]["stored"].encode("ascii")
    found = stored_statement(stored)
    assert isinstance(found, Envelope)
    assert found.digest() == FROZEN["single"]["digest"] == hashlib.sha256(stored).hexdigest()
    version = verify_record(found, _state(), written_at=SEQ, first=True, **_rows(0))
    assert version.writer == WRITER
    with pytest.raises(IntegrityError, match="differs"):
        verify_record(found, _state(), written_at=SEQ, first=True, **{**_rows(0), "keyblob": b"x"})


def test_frozen_batch_members_verify_each_alone() -> None:
    statement = FROZEN["batch"]["statement"].encode("ascii")
    for i, (text, digest) in enumerate(
        zip(FROZEN["batch"]["members"], FROZEN["batch"]["digests"], strict=True)
    ):
        stored = text.encode("ascii")
        member = stored_statement(stored)
        assert isinstance(member, BatchMember)
        assert member.to_bytes() == stored  # parsing keeps the exact bytes
        assert member.digest() == digest == hashlib.sha256(stored).hexdigest()
        assert member.batch.to_bytes() == statement
        assert member.index == i
        version = verify_member(member, _state(), written_at=SEQ + i, first=True, **_rows(i + 1))
        assert version.writer == WRITER


def test_member_documents_are_rfc8785_canonical() -> None:
    """The template writes RFC 8785's bytes (one statement, one byte string)."""
    for text in FROZEN["batch"]["members"]:
        assert rfc8785.dumps(json.loads(text)) == text.encode("ascii")
    members = sign_batch([_statement(_record(i)) for i in range(1, 8)], [identity(WRITER)])
    for member in members:
        assert rfc8785.dumps(json.loads(member.to_bytes())) == member.to_bytes()


def test_a_frozen_batch_member_refuses_another_records_rows() -> None:
    member = stored_statement(FROZEN["batch"]["members"][0].encode("ascii"))
    assert isinstance(member, BatchMember)
    with pytest.raises(IntegrityError, match="not in its batch statement"):
        verify_member(member, _state(), written_at=SEQ, first=True, **_rows(2))
    with pytest.raises(IntegrityError, match="only carries first versions"):
        verify_member(member, _state(), written_at=SEQ, first=False, **_rows(1))


@pytest.mark.parametrize("where", ["index", "proof", "root", "sig"])
def test_a_frozen_batch_member_with_a_changed_byte_fails(where: str) -> None:
    text = FROZEN["batch"]["members"][1]
    doc = json.loads(text)
    if where == "index":
        doc["index"] = 2
    elif where == "proof":
        doc["proof"][0] = doc["proof"][0][:-1] + ("0" if doc["proof"][0][-1] != "0" else "1")
    elif where == "root":
        env = Envelope.from_json(doc["batch"])
        payload = json.loads(env.payload)
        payload["root"] = "00" * 32
        doc["batch"]["payload"] = Envelope(
            json.dumps(payload, sort_keys=True, separators=(",", ":")).encode(), env.signatures
        ).to_json()["payload"]
    else:
        sig = doc["batch"]["signatures"][0]["sig"]
        doc["batch"]["signatures"][0]["sig"] = ("B" if sig[0] != "B" else "C") + sig[1:]
    member = stored_statement(json.dumps(doc).encode())
    assert isinstance(member, BatchMember)
    with pytest.raises(IntegrityError):
        verify_member(member, _state(), written_at=SEQ + 1, first=True, **_rows(2))


if __name__ == "__main__":  # pragma: no cover - writes the frozen file once
    text = json.dumps(build(), indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    (HERE / NAME).write_text(text, encoding="utf-8")
    print(f"wrote tests/vectors/{NAME}", file=sys.stderr)
