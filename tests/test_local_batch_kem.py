"""Issue 18: the local provider seals a batch of records' keys with one X25519
exchange (``CVL2`` blobs). Frozen vectors pin the bytes (tests/vectors/local_batch.json);
the attacks below are those an insider with the database can make on the blobs.
Old ``CVL1`` blobs stay readable (tests/vectors/local.json, test_vectors.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from childvault.keys import AccessDenied, DecryptionFailed
from childvault.keys._local import CustodianSecret, LocalProvider, blob_generation
from childvault.keys._provider import FieldKey, RecordKeys, WrappedRecord

DOC: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "local_batch.json").read_text(encoding="utf-8")
)


def _provider(vault_id: str = DOC["vault_id"], *, officer: bool = True) -> LocalProvider:
    custodian = CustodianSecret.from_bytes(
        DOC["custodian_generation"], bytes.fromhex(DOC["custodian_secret"])
    )
    return LocalProvider(
        vault_id, custodian.generation, custodian.public, [custodian] if officer else []
    )


def _wrapped(i: int, *, blob: bytes | None = None) -> WrappedRecord:
    rec = DOC["records"][i]
    return WrappedRecord(rec["record_id"], rec["version"], blob or bytes.fromhex(rec["blob"]))


def _keys(rec: dict[str, Any]) -> dict[str, FieldKey]:
    return {n: FieldKey(v, bytes.fromhex(k)) for n, (v, k) in rec["keys"].items()}


def test_frozen_batch_blobs_are_reproduced_byte_for_byte() -> None:
    records = [RecordKeys(r["record_id"], r["version"], _keys(r)) for r in DOC["records"]]
    blobs = _provider()._wrap_from_parts(
        records, bytes.fromhex(DOC["ephemeral_secret"]), bytes.fromhex(DOC["nonces"])
    )
    assert [b.hex() for b in blobs] == [r["blob"] for r in DOC["records"]]


def test_frozen_batch_blobs_open_to_their_keys() -> None:
    provider = _provider()
    for i, rec in enumerate(DOC["records"]):
        blob = bytes.fromhex(rec["blob"])
        assert blob[:4] == b"CVL2"
        assert blob_generation(blob) == DOC["custodian_generation"]
        assert provider.open(_wrapped(i)) == _keys(rec)
    # One ephemeral key for the batch: both blobs carry the same one.
    first, second = (bytes.fromhex(r["blob"]) for r in DOC["records"])
    assert first[8:40] == second[8:40]


def test_swapping_wrapped_keys_within_a_batch_is_refused() -> None:
    """An insider puts record B's blob (same batch, same ephemeral key) in record
    A's place: the key derived for A does not open B's blob."""
    provider = _provider()
    other_blob = bytes.fromhex(DOC["records"][1]["blob"])
    with pytest.raises(DecryptionFailed):
        provider.open(_wrapped(0, blob=other_blob))
    with pytest.raises(DecryptionFailed):
        provider.open(_wrapped(1, blob=bytes.fromhex(DOC["records"][0]["blob"])))


def test_a_batch_blob_is_bound_to_its_version_and_vault() -> None:
    rec = DOC["records"][0]
    blob = bytes.fromhex(rec["blob"])
    with pytest.raises(DecryptionFailed):
        _provider().open(WrappedRecord(rec["record_id"], rec["version"] + 1, blob))
    with pytest.raises(DecryptionFailed):
        _provider("f" * 32).open(_wrapped(0))


@pytest.mark.parametrize("offset", [4, 8, 39, 40, 63, 64, -1])
def test_any_changed_byte_of_a_batch_blob_is_refused(offset: int) -> None:
    """The generation, the ephemeral key, the nonce, the ciphertext and the tag."""
    blob = bytearray(bytes.fromhex(DOC["records"][0]["blob"]))
    blob[offset] ^= 1
    with pytest.raises((DecryptionFailed, AccessDenied)):
        _provider().open(_wrapped(0, blob=bytes(blob)))


def test_a_truncated_batch_blob_is_refused() -> None:
    blob = bytes.fromhex(DOC["records"][0]["blob"])
    for size in (8, 40, 64, 79):
        with pytest.raises(DecryptionFailed):
            _provider().open(_wrapped(0, blob=blob[:size]))


def test_a_writer_cannot_open_what_it_wrapped() -> None:
    """Staff hold the custodian public key only; the ephemeral secret is not kept."""
    staff = _provider(officer=False)
    keys = {"name": FieldKey(1, b"\x01" * 32)}
    (blob,) = staff.wrap([RecordKeys("ab" * 16, 1, keys)])
    with pytest.raises(AccessDenied):
        staff.open(WrappedRecord("ab" * 16, 1, blob))
    assert _provider().open(WrappedRecord("ab" * 16, 1, blob)) == keys


def test_each_wrap_call_uses_a_fresh_ephemeral_key() -> None:
    provider = _provider()
    keys = {"name": FieldKey(1, b"\x02" * 32)}
    one = provider.wrap([RecordKeys("cd" * 16, 1, keys), RecordKeys("ef" * 16, 1, keys)])
    two = provider.wrap([RecordKeys("cd" * 16, 1, keys)])
    assert one[0][8:40] == one[1][8:40] != two[0][8:40]
    assert one[0][40:64] != one[1][40:64]  # a nonce per record
    assert provider.wrap([]) == []


def test_a_low_order_ephemeral_key_is_refused() -> None:
    blob = bytearray(bytes.fromhex(DOC["records"][0]["blob"]))
    blob[8:40] = bytes(32)  # the all-zero point: the shared secret would be zero
    with pytest.raises(DecryptionFailed):
        _provider().open(_wrapped(0, blob=bytes(blob)))
