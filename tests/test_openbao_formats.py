"""The Vault/OpenBao provider's pure formats (no server): round trips and hostile input.

What Transit and KV do with these values is shown against a real OpenBao in
``tests/integration/test_vault_provider.py``; here only the encoding and the
checks on the way back in.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from childvault.keys import (
    ApprovalInvalid,
    ChildVaultError,
    DecryptionFailed,
    UsageError,
    WrappedRecord,
)
from childvault.keys._openbao._formats import (
    CTX_LABEL,
    INDEX_LABEL,
    SALT_LEN,
    Salts,
    blob_key_version,
    check_record_id,
    ciphertext_version,
    context,
    encode_blob,
    encode_material,
    index_input,
    parse_blob,
    parse_material,
    parse_salts,
)

SALT = bytes(range(SALT_LEN))


@contextmanager
def refused(kind: type[ChildVaultError], detail: str) -> Iterator[None]:
    """Expect ``kind``; its message is deliberately opaque, so check the audit detail."""
    with pytest.raises(kind) as caught:
        yield
    assert caught.value.detail is not None and detail in caught.value.detail


def _parts(encoded: str) -> list[bytes]:
    """Split a base64 length-prefixed value back into its parts."""
    raw = base64.b64decode(encoded, validate=True)
    parts = []
    while raw:
        size = int.from_bytes(raw[:2], "big")
        parts.append(raw[2 : 2 + size])
        raw = raw[2 + size :]
    return parts


# -- context and index input -------------------------------------------------------------


def test_context_known_answer() -> None:
    # Frozen: a change here makes every wrapped DEK in every vault unopenable.
    assert context("rec-1", "name", 1, SALT) == (
        "ABZjaGlsZHZhdWx0L3ZhdWx0LWN0eC8xAAVyZWMtMQAEbmFtZQABMQAgAAECAwQFBgcICQoLDA0O"
        "DxAREhMUFRYXGBkaGxwdHh8="
    )


@given(
    record_id=st.text(max_size=40),
    field=st.text(max_size=40),
    field_version=st.integers(min_value=1, max_value=10**6),
    salt=st.binary(min_size=SALT_LEN, max_size=SALT_LEN),
)
def test_context_holds_exactly_its_parts(
    record_id: str, field: str, field_version: int, salt: bytes
) -> None:
    assert _parts(context(record_id, field, field_version, salt)) == [
        CTX_LABEL,
        record_id.encode("utf-8"),
        field.encode("utf-8"),
        str(field_version).encode("ascii"),
        salt,
    ]


def test_context_separates_places_whose_concatenations_agree() -> None:
    assert context("ab", "c", 1, SALT) != context("a", "bc", 1, SALT)
    assert context("rec", "name", 11, SALT) != context("rec", "name1", 1, SALT)


def test_context_refuses_a_part_longer_than_its_length_prefix() -> None:
    with pytest.raises(UsageError, match="too long"):
        context("r", "x" * 0x10000, 1, SALT)


def test_index_input_binds_vault_and_field() -> None:
    assert _parts(index_input("v" * 32, "id_number", b"AB12")) == [
        INDEX_LABEL,
        b"v" * 32,
        b"id_number",
        b"AB12",
    ]
    assert index_input("v1", "f", b"x") != index_input("v2", "f", b"x")
    assert index_input("v1", "f", b"x") != index_input("v1", "g", b"x")


@pytest.mark.parametrize("good", ["rec-1", "0123abcd", "A.b_c-9", "r" * 128])
def test_record_ids_usable_as_path_segments(good: str) -> None:
    assert check_record_id(good) == good


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "-x", "a b", "r" * 129, "é"])
def test_record_ids_that_could_change_the_route_are_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="path segment"):
        check_record_id(bad)


# -- key blobs ------------------------------------------------------------------------------

entries_strategy = st.dictionaries(
    st.text(min_size=1, max_size=20),
    st.tuples(
        st.integers(min_value=1, max_value=2**31),
        st.integers(min_value=1, max_value=999).map(lambda v: f"vault:v{v}:Y2lwaGVy"),
    ),
    max_size=6,
)


@given(
    record_id=st.text(max_size=30),
    version=st.integers(min_value=1, max_value=2**31),
    entries=entries_strategy,
)
def test_blob_round_trip(record_id: str, version: int, entries: dict[str, tuple[int, str]]) -> None:
    blob = encode_blob(record_id, version, entries)
    assert parse_blob(WrappedRecord(record_id, version, blob)) == entries
    expected = min((ciphertext_version(ct) for _fv, ct in entries.values()), default=0)
    assert blob_key_version(blob) == expected


def test_blob_layout_is_compact_json() -> None:
    blob = encode_blob("rec-1", 2, {"name": (1, "vault:v1:abc")})
    assert blob == b'{"v":1,"rec":"rec-1","ver":2,"f":{"name":[1,"vault:v1:abc"]}}'


def test_blob_of_another_record_or_version_is_refused() -> None:
    blob = encode_blob("rec-1", 2, {"name": (1, "vault:v1:abc")})
    for record_id, version in (("rec-2", 2), ("rec-1", 1), ("rec-1", 3)):
        with refused(DecryptionFailed, "bound to another record or version"):
            parse_blob(WrappedRecord(record_id, version, blob))


@pytest.mark.parametrize(
    "doc",
    [
        {"v": 2, "rec": "r", "ver": 1, "f": {}},
        {"rec": "r", "ver": 1, "f": {}},
        {"v": 1, "ver": 1, "f": {}},
        {"v": 1, "rec": "r", "ver": 1},
        {"v": 1, "rec": "r", "ver": 1, "f": {"a": [0, "vault:v1:x"]}},
        {"v": 1, "rec": "r", "ver": 1, "f": {"a": [True, "vault:v1:x"]}},
        {"v": 1, "rec": "r", "ver": 1, "f": {"a": [1, "local:v1:x"]}},
        {"v": 1, "rec": "r", "ver": 1, "f": {"a": [1, 5]}},
        {"v": 1, "rec": "r", "ver": 1, "f": {"a": [1]}},
        {"v": 1, "rec": "r", "ver": 1, "f": {"a": [1, "vault:v1:x", 3]}},
        [1, 2],
    ],
)
def test_malformed_blobs_are_refused(doc: Any) -> None:
    blob = json.dumps(doc).encode()
    with refused(DecryptionFailed, "malformed"):
        parse_blob(WrappedRecord("r", 1, blob))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"v": st.just(1), "rec": st.just("r"), "ver": st.just(1), "f": json_values}
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_hostile_blobs_raise_only_decryption_failed(raw: bytes) -> None:
    try:
        out = parse_blob(WrappedRecord("r", 1, raw))
    except DecryptionFailed:
        return
    # Whatever is accepted has the documented shape.
    for name, (fv, ct) in out.items():
        assert isinstance(name, str)
        assert isinstance(fv, int) and not isinstance(fv, bool) and fv >= 1
        assert isinstance(ct, str) and ct.startswith("vault:v")


@pytest.mark.parametrize(
    ("ct", "version"), [("vault:v1:abc", 1), ("vault:v42:a:b", 42), ("vault:v7:", 7)]
)
def test_ciphertext_version(ct: str, version: int) -> None:
    assert ciphertext_version(ct) == version


@pytest.mark.parametrize("ct", ["vault:1:abc", "local:v1:abc", "vault:vx:abc", "vault:v1", ""])
def test_unknown_ciphertexts_are_refused(ct: str) -> None:
    with refused(DecryptionFailed, "unknown format"):
        ciphertext_version(ct)


@pytest.mark.parametrize("blob", [b"not json", b"{}", b'{"f":{"a":[1]}}', b'{"f":[1]}'])
def test_blob_key_version_of_malformed_blob(blob: bytes) -> None:
    with refused(DecryptionFailed, "malformed"):
        blob_key_version(blob)
    with refused(DecryptionFailed, "unknown format"):
        blob_key_version(b'{"f":{"a":[1,"nope"]}}')


# -- salt documents ---------------------------------------------------------------------------


def _kv_reply(doc: Any, version: Any = 3) -> dict[str, Any]:
    return {"data": {"data": doc, "metadata": {"version": version}}}


@given(
    record=st.binary(min_size=SALT_LEN, max_size=SALT_LEN),
    fields=st.dictionaries(
        st.text(min_size=1, max_size=10), st.binary(min_size=SALT_LEN, max_size=SALT_LEN)
    ),
    kv_version=st.integers(min_value=1, max_value=10**6),
)
def test_salt_document_round_trip(record: bytes, fields: dict[str, bytes], kv_version: int) -> None:
    salts = Salts(record, fields, kv_version)
    assert parse_salts(_kv_reply(salts.to_doc(), kv_version), "r") == salts
    for name in fields:
        assert salts.for_field(name) == fields[name]
    # Longer than every field name, so not one of them.
    absent = "".join(fields) + "!"
    assert salts.for_field(absent) == record


@pytest.mark.parametrize(
    "reply",
    [
        {},
        {"data": None},
        _kv_reply({"salt": base64.b64encode(SALT).decode()}, version="x"),
        _kv_reply({"fields": {}}),
        _kv_reply({"salt": "not base64!"}),
        _kv_reply({"salt": 5}),
        _kv_reply({"salt": base64.b64encode(SALT).decode(), "fields": {"a": "%%"}}),
        _kv_reply({"salt": base64.b64encode(SALT).decode(), "fields": ["a"]}),
    ],
)
def test_malformed_salt_documents_are_refused(reply: dict[str, Any]) -> None:
    with refused(DecryptionFailed, "salt document of record r is malformed"):
        parse_salts(reply, "r")


@pytest.mark.parametrize(
    "doc",
    [
        {"salt": base64.b64encode(SALT[:16]).decode()},
        {
            "salt": base64.b64encode(SALT).decode(),
            "fields": {"a": base64.b64encode(SALT + b"x").decode()},
        },
    ],
)
def test_salts_of_a_wrong_length_are_refused(doc: dict[str, Any]) -> None:
    with refused(DecryptionFailed, "wrong salt length"):
        parse_salts(_kv_reply(doc), "r")


# -- grant material -----------------------------------------------------------------------------

items_strategy = st.lists(
    st.tuples(
        st.text(max_size=10), st.text(max_size=10), st.integers(min_value=1, max_value=2**31)
    ),
    max_size=5,
)


@given(
    wraps=st.lists(st.tuples(st.text(min_size=1, max_size=20), items_strategy), max_size=4),
)
def test_grant_material_round_trip(wraps: list[tuple[str, list[tuple[str, str, int]]]]) -> None:
    inner = encode_material("vault-1", "grant-1", wraps)
    assert parse_material(inner, "vault-1", "grant-1") == wraps


def test_grant_material_layout() -> None:
    inner = encode_material("v1", "g1", [("hvs.tok", [("rec-1", "name", 1)])])
    assert inner == (
        b'{"v":1,"vault":"v1","grant":"g1",'
        b'"wraps":[{"token":"hvs.tok","items":[["rec-1","name",1]]}]}'
    )


def test_grant_material_of_another_grant_or_vault_is_refused() -> None:
    inner = encode_material("v1", "g1", [("hvs.tok", [("rec-1", "name", 1)])])
    for vault_id, grant_id in (("v2", "g1"), ("v1", "g2")):
        with refused(ApprovalInvalid, "bound to another grant or vault"):
            parse_material(inner, vault_id, grant_id)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"v": st.just(1), "vault": st.just("v"), "grant": st.just("g"), "wraps": json_values}
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_hostile_grant_material_raises_only_approval_invalid(raw: bytes) -> None:
    try:
        wraps = parse_material(raw, "v", "g")
    except ApprovalInvalid:
        return
    for token, items in wraps:
        assert isinstance(token, str) and token
        for rid, name, fv in items:
            assert isinstance(rid, str) and isinstance(name, str)
            assert isinstance(fv, int) and not isinstance(fv, bool) and fv >= 1


def test_formats_do_not_import_the_http_stack() -> None:
    # The vectors and any offline tool use these formats without hvac.
    assert "childvault.keys._openbao._formats" in sys.modules
    code = (
        "import sys, childvault.keys._openbao._formats, childvault.keys._openbao._settings\n"
        "assert 'hvac' not in sys.modules and 'requests' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
