"""LocalProvider: sealed record boxes open only with the custodian key, and only
for the record and version they were sealed for."""

from __future__ import annotations

import pytest

from childvault.keys import (
    AccessDenied,
    ApprovalInvalid,
    CustodianSecret,
    DecryptionFailed,
    FieldKey,
    Identity,
    LocalProvider,
    RecordKeys,
    Selection,
    WrappedRecord,
)

VAULT = "0" * 32
REC = "1" * 32
KEYS = {"name": FieldKey(1, b"\x11" * 32), "address": FieldKey(3, b"\x22" * 32)}


@pytest.fixture(scope="module")
def custodian() -> CustodianSecret:
    return CustodianSecret.generate(1)


def staff(custodian: CustodianSecret) -> LocalProvider:
    return LocalProvider(VAULT, 1, custodian.public)


def officer(custodian: CustodianSecret) -> LocalProvider:
    return LocalProvider(VAULT, 1, custodian.public, [custodian])


def test_round_trip(custodian: CustodianSecret) -> None:
    (blob,) = staff(custodian).wrap([RecordKeys(REC, 1, KEYS)])
    assert officer(custodian).open(WrappedRecord(REC, 1, blob)) == KEYS


def test_staff_cannot_open(custodian: CustodianSecret) -> None:
    (blob,) = staff(custodian).wrap([RecordKeys(REC, 1, KEYS)])
    with pytest.raises(AccessDenied):
        staff(custodian).open(WrappedRecord(REC, 1, blob))


def test_other_key_cannot_open_the_box(custodian: CustodianSecret) -> None:
    """Cryptographic, not a permission check: a staff identity's own key fails."""
    (blob,) = staff(custodian).wrap([RecordKeys(REC, 1, KEYS)])
    impostor = CustodianSecret.generate(1)
    with pytest.raises(DecryptionFailed):
        LocalProvider(VAULT, 1, impostor.public, [impostor]).open(WrappedRecord(REC, 1, blob))
    worker = Identity.generate("worker")
    with pytest.raises(DecryptionFailed):
        worker.unseal(blob[8:])


def test_every_flipped_byte_fails(custodian: CustodianSecret) -> None:
    (blob,) = staff(custodian).wrap([RecordKeys(REC, 1, KEYS)])
    prov = officer(custodian)
    for i in range(len(blob)):
        mutated = bytearray(blob)
        mutated[i] ^= 0x80
        with pytest.raises((DecryptionFailed, AccessDenied)):
            prov.open(WrappedRecord(REC, 1, bytes(mutated)))


@pytest.mark.parametrize("moved", [WrappedRecord("2" * 32, 1, b""), WrappedRecord(REC, 2, b"")])
def test_box_moved_to_other_record_or_version_fails(
    custodian: CustodianSecret, moved: WrappedRecord
) -> None:
    (blob,) = staff(custodian).wrap([RecordKeys(REC, 1, KEYS)])
    with pytest.raises(DecryptionFailed):
        officer(custodian).open(WrappedRecord(moved.record_id, moved.version, blob))


def test_box_from_another_vault_fails(custodian: CustodianSecret) -> None:
    (blob,) = LocalProvider("9" * 32, 1, custodian.public).wrap([RecordKeys(REC, 1, KEYS)])
    with pytest.raises(DecryptionFailed):
        officer(custodian).open(WrappedRecord(REC, 1, blob))


def test_release_seals_exactly_the_selection(custodian: CustodianSecret) -> None:
    (blob,) = staff(custodian).wrap([RecordKeys(REC, 1, KEYS)])
    requester = Identity.generate("worker")
    material = officer(custodian).release(
        [Selection(WrappedRecord(REC, 1, blob), ["name"])], requester.public, "g" * 32
    )
    released = staff(custodian).redeem(material, requester, "g" * 32)
    assert released == {REC: {"name": KEYS["name"]}}
    with pytest.raises(ApprovalInvalid):
        staff(custodian).redeem(material, requester, "h" * 32)  # another grant
    with pytest.raises(ApprovalInvalid):
        staff(custodian).redeem(material, Identity.generate("worker"), "g" * 32)


def test_replace_drops_old_key(custodian: CustodianSecret) -> None:
    (blob,) = staff(custodian).wrap([RecordKeys(REC, 1, KEYS)])
    new = FieldKey(4, b"\x33" * 32)
    blob2 = officer(custodian).replace(WrappedRecord(REC, 1, blob), 2, {"address": new})
    opened = officer(custodian).open(WrappedRecord(REC, 2, blob2))
    assert opened["address"] == new and opened["name"] == KEYS["name"]
    assert KEYS["address"].key not in blob2


def test_custodian_secret_round_trips_through_bytes(custodian: CustodianSecret) -> None:
    again = CustodianSecret.from_bytes(1, custodian.secret_bytes())
    assert again.public == custodian.public
    with pytest.raises(DecryptionFailed):
        CustodianSecret.from_bytes(1, b"short")


def test_release_skips_an_optional_field_the_record_lacks(custodian: CustodianSecret) -> None:
    """Regression: approving a field that some records leave empty raised
    DecryptionFailed, so the demo failed whenever it picked such a record."""
    (blob,) = staff(custodian).wrap([RecordKeys(REC, 1, KEYS)])
    requester = Identity.generate("worker")
    material = officer(custodian).release(
        [Selection(WrappedRecord(REC, 1, blob), ["name", "school"])], requester.public, "g" * 32
    )
    assert staff(custodian).redeem(material, requester, "g" * 32) == {REC: {"name": KEYS["name"]}}
