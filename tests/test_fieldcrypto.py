"""Field encryption: round trip, and every tampering or move fails to open."""

from __future__ import annotations

import pytest

from childvault.keys import DecryptionFailed, FieldKey
from childvault.vault._fieldcrypto import open_field, seal_field

PLACE = {"vault_id": "a" * 32, "record_id": "b" * 32, "field": "name", "version": 1}


def test_round_trip_utf8() -> None:
    sealed, key = seal_field("张小明".encode(), **PLACE)
    assert open_field(sealed, key, **PLACE).decode() == "张小明"
    assert "张小明".encode() not in sealed


def test_each_seal_uses_fresh_key_and_nonce() -> None:
    a, ka = seal_field(b"same", **PLACE)
    b, kb = seal_field(b"same", **PLACE)
    assert a[:24] != b[:24] and ka.key != kb.key and a != b


@pytest.mark.parametrize("region", ["nonce", "ciphertext", "tag"])
def test_flipping_any_byte_fails(region: str) -> None:
    sealed, key = seal_field(b"case notes: sensitive", **PLACE)
    body = len(b"case notes: sensitive")
    ranges = {
        "nonce": range(0, 24),
        "ciphertext": range(24, 24 + body),
        "tag": range(24 + body, len(sealed)),
    }
    for i in ranges[region]:
        mutated = bytearray(sealed)
        mutated[i] ^= 0x01
        with pytest.raises(DecryptionFailed):
            open_field(bytes(mutated), key, **PLACE)


@pytest.mark.parametrize(
    "moved",
    [{"record_id": "c" * 32}, {"field": "address"}, {"version": 2}, {"vault_id": "d" * 32}],
)
def test_moving_a_ciphertext_fails(moved: dict[str, object]) -> None:
    sealed, key = seal_field(b"value", **PLACE)
    place = {**PLACE, **moved}
    k = FieldKey(int(place["version"]), key.key)  # type: ignore[call-overload]
    with pytest.raises(DecryptionFailed):
        open_field(sealed, k, **place)  # type: ignore[arg-type]


def test_wrong_key_fails_and_message_is_opaque() -> None:
    sealed, _ = seal_field(b"secret value", **PLACE)
    with pytest.raises(DecryptionFailed) as info:
        open_field(sealed, FieldKey(1, b"\x00" * 32), **PLACE)
    assert "secret" not in str(info.value)


def test_truncated_ciphertext_fails() -> None:
    sealed, key = seal_field(b"value", **PLACE)
    for cut in (0, 10, 24, 39, len(sealed) - 1):
        with pytest.raises(DecryptionFailed):
            open_field(sealed[:cut], key, **PLACE)


def test_seal_fields_gives_the_bytes_seal_from_parts_gives() -> None:
    """Issue 18: the batch sealer of an import writes the frozen format exactly."""
    from childvault.vault._fieldcrypto import _seal_from_parts, open_field, seal_fields

    place = {"vault_id": "ab" * 16, "record_id": "cd" * 16, "version": 3}
    values = [("name", "张三".encode()), ("note", b""), ("address", b"x" * 300)]
    sealed = seal_fields(values, **place)
    assert [n for n, _, _ in sealed] == ["name", "note", "address"]
    keys = {key.key for _, _, key in sealed}
    assert len(keys) == 3  # a fresh key per field
    for (name, plaintext), (_, ct, key) in zip(values, sealed, strict=True):
        assert key.version == 3
        assert ct == _seal_from_parts(plaintext, key.key, ct[:24], field=name, **place)
        assert open_field(ct, key, field=name, **place) == plaintext
    assert seal_fields([], **place) == []
