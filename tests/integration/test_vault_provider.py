"""VaultProvider against a real OpenBao server (no mock of Vault anywhere here).

What is shown: the three policies enforce the role split on the server itself
(direct API calls, not only our code); grants are single-use, bound and
checked for their origin; blobs are bound to their place; shredding and
corrections destroy key material also for old copies; rotation retires old
key versions; everything is batched; failures name what failed.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import hvac
import pytest
import requests

from childvault.keys import (
    AccessDenied,
    ApprovalInvalid,
    DecryptionFailed,
    FieldKey,
    Identity,
    KeyProvider,
    RecordKeys,
    Selection,
    UsageError,
    VaultProvider,
    VaultSettings,
    WrappedRecord,
)
from childvault.keys._openbao import render_policies

from ._vault_provider_data import (
    STAFF,
    RequestCounter,
    ciphertext_of,
    context_of,
    forge_material,
    new_id,
    record,
    salt_doc,
    wrapped,
)
from .conftest import BaoServer

pytestmark = pytest.mark.vault


# -- the contract ----------------------------------------------------------------


def test_provider_satisfies_the_protocol(openbao: BaoServer, vault_id: str) -> None:
    provider = VaultProvider(openbao.settings, vault_id, token="unused")
    assert isinstance(provider, KeyProvider)
    assert provider.kind == "vault"
    assert "unused" not in repr(provider)


def test_round_trip_releases_exactly_the_selected_keys(
    make: Callable[..., VaultProvider], alice: Identity
) -> None:
    staff, officer = make("staff"), make("officer")
    recs = [record(), record(), record()]
    blobs = staff.wrap(recs)
    assert len(blobs) == 3
    doc = json.loads(blobs[0])
    assert doc["v"] == 1 and doc["rec"] == recs[0].record_id and doc["ver"] == 1
    assert set(doc["f"]) == {"name", "health", "address"}
    assert all(ct.startswith("vault:v1:") for _fv, ct in doc["f"].values())
    # No DEK appears in the blob.
    for fk in recs[0].fields.values():
        assert base64.b64encode(fk.key) not in blobs[0] and fk.key not in blobs[0]

    selections = [
        Selection(wrapped(recs[0], blobs[0]), ["name"]),
        Selection(wrapped(recs[2], blobs[2]), ["health", "address"]),
    ]
    material = officer.release(selections, alice.public, "grant-1")
    for rec in recs:
        for fk in rec.fields.values():
            assert fk.key not in material
    released = staff.redeem(material, alice, "grant-1")
    assert released == {
        recs[0].record_id: {"name": recs[0].fields["name"]},
        recs[2].record_id: {
            "health": recs[2].fields["health"],
            "address": recs[2].fields["address"],
        },
    }


def test_material_is_bound_to_requester_grant_and_vault(
    make: Callable[..., VaultProvider], alice: Identity, bob: Identity, openbao: BaoServer
) -> None:
    staff, officer = make("staff"), make("officer")
    rec = record()
    (blob,) = staff.wrap([rec])
    material = officer.release([Selection(wrapped(rec, blob), ["name"])], alice.public, "g-b")
    with pytest.raises(ApprovalInvalid):
        staff.redeem(material, bob, "g-b")
    with pytest.raises(ApprovalInvalid):
        staff.redeem(material, alice, "another-grant")
    other_vault = VaultProvider(openbao.settings, "other-vault", token=openbao.token(STAFF))
    with pytest.raises(ApprovalInvalid):
        other_vault.redeem(material, alice, "g-b")
    other_vault.close()
    # None of the refusals consumed the wrapping token.
    assert staff.redeem(material, alice, "g-b") == {rec.record_id: {"name": rec.fields["name"]}}


# -- the policies, enforced by the server --------------------------------------------


def test_staff_policy_cannot_decrypt_directly(
    make: Callable[..., VaultProvider], openbao: BaoServer, tokens: dict[str, str]
) -> None:
    staff = make("staff")
    rec = record()
    (blob,) = staff.wrap([rec])
    ctx = context_of(openbao, rec.record_id, "name")
    client = hvac.Client(url=openbao.addr, token=tokens["staff"])
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.transit.decrypt_data(
            "childvault-dek",
            ciphertext_of(blob, "name"),
            context=ctx,
            mount_point="childvault-transit",
        )
    # Not even response-wrapped.
    with pytest.raises(hvac.exceptions.Forbidden):
        client.adapter.post(
            "/v1/childvault-transit/decrypt/childvault-dek",
            json={"ciphertext": ciphertext_of(blob, "name"), "context": ctx},
            wrap_ttl="60s",
        )
    # Salts are written once: staff cannot overwrite one.
    resp = openbao.api(
        "POST",
        f"childvault-kv/data/records/{rec.record_id}",
        token=tokens["staff"],
        json={"options": {"cas": 1}, "data": {"salt": base64.b64encode(b"x" * 32).decode()}},
    )
    assert resp.status_code == 403
    # Nor shred.
    with pytest.raises(AccessDenied, match="childvault-officer or childvault-admin"):
        staff.shred([rec.record_id])
    # Nor release, with a message naming path and policy. Since issue 14 it
    # stops at the salt read (staff salts are create-only), before Transit.
    with pytest.raises(AccessDenied) as info:
        staff.release([Selection(wrapped(rec, blob), ["name"])], Identity.generate("x").public, "g")
    assert f"read on childvault-kv/data/records/{rec.record_id}" in str(info.value)
    assert "childvault-officer" in str(info.value)


def test_staff_salts_are_create_only(
    make: Callable[..., VaultProvider], openbao: BaoServer, tokens: dict[str, str]
) -> None:
    """Attack (issue 14, 2): staff copy every salt to undo a later shredding."""
    staff = make("staff")
    rec = record()
    (blob,) = staff.wrap([rec])  # creating (the import path) still works
    # OpenBao itself refuses the read, not only our client.
    resp = openbao.api("GET", f"childvault-kv/data/records/{rec.record_id}", token=tokens["staff"])
    assert resp.status_code == 403
    resp = openbao.api(
        "GET", f"childvault-kv/data/records/{rec.record_id}?version=1", token=tokens["staff"]
    )
    assert resp.status_code == 403
    resp = openbao.api(
        "GET", f"childvault-kv/metadata/records/{rec.record_id}", token=tokens["staff"]
    )
    assert resp.status_code == 403
    # Adding field versions to an existing record needs the salts: an officer's job.
    later = RecordKeys(rec.record_id, 2, dict(rec.fields), new=False)
    with pytest.raises(AccessDenied, match="childvault-officer policy"):
        staff.wrap([later])
    assert json.loads(blob)["rec"] == rec.record_id
    # A token that may not create salts is told that, not "lacks read" (issue 14, 6).
    with pytest.raises(AccessDenied, match="lacks create on childvault-kv/data/records/"):
        make("admin").wrap([record()])


def test_officer_policy_decrypts_only_response_wrapped(
    make: Callable[..., VaultProvider], openbao: BaoServer, tokens: dict[str, str]
) -> None:
    staff = make("staff")
    rec = record()
    (blob,) = staff.wrap([rec])
    ctx = context_of(openbao, rec.record_id, "name")
    client = hvac.Client(url=openbao.addr, token=tokens["officer"])
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.transit.decrypt_data(
            "childvault-dek",
            ciphertext_of(blob, "name"),
            context=ctx,
            mount_point="childvault-transit",
        )
    answer = client.adapter.post(
        "/v1/childvault-transit/decrypt/childvault-dek",
        json={"ciphertext": ciphertext_of(blob, "name"), "context": ctx},
        wrap_ttl="60s",
    )
    assert answer["data"] is None
    assert answer["wrap_info"]["creation_path"] == "childvault-transit/decrypt/childvault-dek"
    # The wrapped answer holds the DEK (whoever unwraps it gets it, once).
    unwrapped = openbao.api(
        "POST", "sys/wrapping/unwrap", json={"token": answer["wrap_info"]["token"]}
    ).json()
    assert base64.b64decode(unwrapped["data"]["plaintext"]) == rec.fields["name"].key
    # A grant lifetime beyond the policy's max_wrapping_ttl (24h) is refused.
    with pytest.raises(hvac.exceptions.Forbidden):
        client.adapter.post(
            "/v1/childvault-transit/decrypt/childvault-dek",
            json={"ciphertext": ciphertext_of(blob, "name"), "context": ctx},
            wrap_ttl="48h",
        )
    officer = make("officer")
    with pytest.raises(AccessDenied, match="max_wrapping_ttl"):
        officer.release(
            [Selection(wrapped(rec, blob), ["name"])],
            Identity.generate("x").public,
            "g",
            wrap_ttl="48h",
        )


def test_admin_policy_cannot_decrypt_or_weaken_the_key(
    make: Callable[..., VaultProvider],
    openbao: BaoServer,
    tokens: dict[str, str],
    alice: Identity,
) -> None:
    staff = make("staff")
    rec = record()
    (blob,) = staff.wrap([rec])
    ctx = context_of(openbao, rec.record_id, "name")
    client = hvac.Client(url=openbao.addr, token=tokens["admin"])
    for wrap_ttl in (None, "60s"):
        with pytest.raises(hvac.exceptions.Forbidden):
            client.adapter.post(
                "/v1/childvault-transit/decrypt/childvault-dek",
                json={"ciphertext": ciphertext_of(blob, "name"), "context": ctx},
                wrap_ttl=wrap_ttl,
            )
    # The config capability is limited to the version floors.
    for body in (
        {"exportable": True},
        {"deletion_allowed": True},
        {"allow_plaintext_backup": True},
    ):
        resp = openbao.api(
            "POST",
            "childvault-transit/keys/childvault-dek/config",
            token=tokens["admin"],
            json=body,
        )
        assert resp.status_code == 403, body
    with pytest.raises(AccessDenied, match="childvault-officer"):
        make("admin").release([Selection(wrapped(rec, blob), ["name"])], alice.public, "g")


def test_policy_templates_are_filled_for_custom_names() -> None:
    settings = VaultSettings(
        addr="http://127.0.0.1:1", transit_mount="t2", kv_mount="kv2", key_name="k2"
    )
    policies = render_policies(settings)
    assert set(policies) == {"childvault-staff", "childvault-officer", "childvault-admin"}
    for text in policies.values():
        assert "{" + "transit}" not in text and "{kv}" not in text and "{key}" not in text
    assert 'path "t2/encrypt/k2"' in policies["childvault-staff"]
    assert 'path "t2/decrypt/k2"' not in policies["childvault-staff"]
    assert 'path "t2/decrypt/k2"' in policies["childvault-officer"]
    assert 'min_wrapping_ttl = "1s"' in policies["childvault-officer"]
    assert 'path "t2/decrypt/k2"' not in policies["childvault-admin"]
    assert 'path "kv2/data/records/*"' in policies["childvault-admin"]


# -- grants -----------------------------------------------------------------------


def test_wrapping_token_is_usable_once(make: Callable[..., VaultProvider], alice: Identity) -> None:
    staff, officer = make("staff"), make("officer")
    rec = record()
    (blob,) = staff.wrap([rec])
    material = officer.release([Selection(wrapped(rec, blob), ["health"])], alice.public, "g-once")
    assert staff.redeem(material, alice, "g-once")[rec.record_id]["health"] == rec.fields["health"]
    with pytest.raises(ApprovalInvalid) as info:
        staff.redeem(material, alice, "g-once")
    assert info.value.detail and "used" in info.value.detail


def test_expired_wrapping_token_is_refused(
    make: Callable[..., VaultProvider], alice: Identity
) -> None:
    staff, officer = make("staff"), make("officer")
    rec = record()
    (blob,) = staff.wrap([rec])
    material = officer.release(
        [Selection(wrapped(rec, blob), ["name"])], alice.public, "g-exp", wrap_ttl=1
    )
    time.sleep(2.2)
    with pytest.raises(ApprovalInvalid):
        staff.redeem(material, alice, "g-exp")


def test_substituted_wrapping_tokens_are_rejected_by_creation_path(
    make: Callable[..., VaultProvider], openbao: BaoServer, alice: Identity, vault_id: str
) -> None:
    staff = make("staff")
    rec = record()
    staff.wrap([rec])
    items = [[rec.record_id, "name", 1]]
    attacker_key = base64.b64encode(b"\x01" * 32).decode()
    # (a) a wrapped KV read; (b) a wrapped sys/wrapping/wrap of attacker-chosen
    # "batch_results" that would otherwise pass every later check.
    kv_wrap = openbao.api(
        "GET", f"childvault-kv/data/records/{rec.record_id}", wrap_ttl="60s"
    ).json()["wrap_info"]
    fake_wrap = openbao.api(
        "POST",
        "sys/wrapping/wrap",
        json={"batch_results": [{"plaintext": attacker_key}]},
        wrap_ttl="60s",
    ).json()["wrap_info"]
    assert kv_wrap["creation_path"] != fake_wrap["creation_path"]
    for info in (kv_wrap, fake_wrap):
        material = forge_material(alice, vault_id, "g-sub", info["token"], items)
        with pytest.raises(ApprovalInvalid) as exc:
            staff.redeem(material, alice, "g-sub")
        assert "created on" in (exc.value.detail or "")
        # Refused before unwrapping: the token is still unused.
        assert openbao.api("POST", "sys/wrapping/lookup", json={"token": info["token"]}).ok
    # A genuine decrypt wrap of a different key (wrong path) is refused too.
    other = openbao.api("POST", "childvault-transit/keys/other-key", json={"derived": True})
    assert other.ok
    ct = openbao.api(
        "POST",
        "childvault-transit/encrypt/other-key",
        json={"plaintext": attacker_key, "context": base64.b64encode(b"c").decode()},
    ).json()["data"]["ciphertext"]
    wrong_key = openbao.api(
        "POST",
        "childvault-transit/decrypt/other-key",
        json={"batch_input": [{"ciphertext": ct, "context": base64.b64encode(b"c").decode()}]},
        wrap_ttl="60s",
    ).json()["wrap_info"]
    material = forge_material(alice, vault_id, "g-sub", wrong_key["token"], items)
    with pytest.raises(ApprovalInvalid):
        staff.redeem(material, alice, "g-sub")


def test_blob_moved_or_edited_fails(make: Callable[..., VaultProvider], alice: Identity) -> None:
    staff, officer = make("staff"), make("officer")
    a, b = record(), record()
    blob_a, _blob_b = staff.wrap([a, b])
    # Presented as another record, or another version: refused at once.
    for moved in (
        WrappedRecord(b.record_id, 1, blob_a),
        WrappedRecord(a.record_id, 2, blob_a),
    ):
        with pytest.raises(DecryptionFailed):
            officer.release([Selection(moved, ["name"])], alice.public, "g-m")
    # Edited to claim the other record: Transit refuses (the context differs).
    doc = json.loads(blob_a)
    doc["rec"] = b.record_id
    edited = WrappedRecord(b.record_id, 1, json.dumps(doc).encode())
    material = officer.release([Selection(edited, ["name"])], alice.public, "g-e")
    with pytest.raises(DecryptionFailed):
        staff.redeem(material, alice, "g-e")
    # Field ciphertexts swapped inside one blob, or a field version edited.
    for mutate in ("swap", "version"):
        doc = json.loads(blob_a)
        if mutate == "swap":
            doc["f"]["name"], doc["f"]["health"] = doc["f"]["health"], doc["f"]["name"]
        else:
            doc["f"]["name"][0] = 2
        edited = WrappedRecord(a.record_id, 1, json.dumps(doc).encode())
        material = officer.release([Selection(edited, ["name"])], alice.public, f"g-{mutate}")
        with pytest.raises(DecryptionFailed):
            staff.redeem(material, alice, f"g-{mutate}")
    # A field the blob does not hold (an optional field left empty) releases nothing.
    material = officer.release([Selection(wrapped(a, blob_a), ["photo"])], alice.public, "g-p")
    assert staff.redeem(material, alice, "g-p") in ({}, {a.record_id: {}})
    # Garbage.
    with pytest.raises(DecryptionFailed):
        officer.release(
            [Selection(WrappedRecord(a.record_id, 1, b"\xff"), ["name"])], alice.public, "g"
        )


# -- shredding and corrections ----------------------------------------------------------


def test_shred_makes_old_blobs_unreleasable(
    make: Callable[..., VaultProvider], openbao: BaoServer, alice: Identity
) -> None:
    staff, officer, admin = make("staff"), make("officer"), make("admin")
    rec, other = record(), record()
    blob, other_blob = staff.wrap([rec, other])
    officer.shred([rec.record_id])
    # Every version is destroyed; the metadata stays as a marked tombstone (issue 14).
    meta = openbao.api("GET", f"childvault-kv/metadata/records/{rec.record_id}").json()["data"]
    assert all(v["destroyed"] for v in meta["versions"].values())
    assert meta["custom_metadata"]["shredded"].endswith("Z")
    assert openbao.api("GET", f"childvault-kv/data/records/{rec.record_id}").status_code == 404
    with pytest.raises(DecryptionFailed) as info:
        officer.release([Selection(wrapped(rec, blob), ["name"])], alice.public, "g-s")
    assert "does not exist" in (info.value.detail or "")
    # Idempotent, for officers and admins; other records are untouched.
    officer.shred([rec.record_id])
    admin.shred([rec.record_id, other.record_id])
    with pytest.raises(DecryptionFailed):
        officer.release([Selection(wrapped(other, other_blob), ["name"])], alice.public, "g-s")
    # The record id can never get a salt again, through childvault or directly.
    again = RecordKeys(rec.record_id, 1, {"x": FieldKey(1, secrets.token_bytes(32))})
    for provider in (staff, officer):
        with pytest.raises(UsageError, match="never reused"):
            provider.wrap([again])
    with pytest.raises(DecryptionFailed):
        officer.release([Selection(wrapped(rec, blob), ["name"])], alice.public, "g-s2")


def test_saved_salt_cannot_be_written_back_after_shredding(
    make: Callable[..., VaultProvider],
    openbao: BaoServer,
    tokens: dict[str, str],
    alice: Identity,
) -> None:
    """Attack (issue 14, 2): a salt copied before a deletion is written back with cas=0."""
    staff, officer = make("staff"), make("officer")
    rec = record()
    (blob,) = staff.wrap([rec])
    saved = salt_doc(openbao, rec.record_id)  # copied while it existed (here: by root)
    officer.shred([rec.record_id])
    for role in ("staff", "officer"):
        resp = openbao.api(
            "POST",
            f"childvault-kv/data/records/{rec.record_id}",
            token=tokens[role],
            json={"options": {"cas": 0}, "data": saved},
        )
        # staff: 403 (create-only, the path exists); officer: 400 (check-and-set).
        assert resp.status_code in (400, 403), (role, resp.status_code, resp.text)
    # Neither role can remove the tombstone that makes cas=0 fail.
    for role in ("staff", "officer", "admin"):
        resp = openbao.api(
            "DELETE", f"childvault-kv/metadata/records/{rec.record_id}", token=tokens[role]
        )
        assert resp.status_code == 403, role
    # Nor loosen check-and-set on it.
    resp = openbao.api(
        "POST",
        f"childvault-kv/metadata/records/{rec.record_id}",
        token=tokens["officer"],
        json={"cas_required": False, "max_versions": 1},
    )
    assert resp.status_code == 403
    # So the saved salt no longer helps the officer: childvault finds no salt.
    with pytest.raises(DecryptionFailed) as info:
        officer.release([Selection(wrapped(rec, blob), ["name"])], alice.public, "g-w")
    assert "does not exist" in (info.value.detail or "")
    # But the mark can be cleared (officers set custom_metadata; Vault cannot limit its
    # value). cas=0 still fails; cas=N would not, and `vault gc` reports that (test_vault_gc.py).
    path = f"childvault-kv/metadata/records/{rec.record_id}"
    resp = openbao.api("POST", path, token=tokens["officer"], json={"custom_metadata": {}})
    assert resp.status_code == 204, resp.text
    assert openbao.api("GET", path).json()["data"]["custom_metadata"] in (None, {})
    resp = openbao.api(
        "POST",
        f"childvault-kv/data/records/{rec.record_id}",
        token=tokens["officer"],
        json={"options": {"cas": 0}, "data": saved},
    )
    assert resp.status_code == 400, resp.text


def test_replace_destroys_the_old_version_also_in_backups(
    make: Callable[..., VaultProvider], openbao: BaoServer, alice: Identity
) -> None:
    staff, officer = make("staff"), make("officer")
    rec = record()
    (backup_blob,) = staff.wrap([rec])
    old = wrapped(rec, backup_blob)
    new_name = FieldKey(2, secrets.token_bytes(32))
    new_blob = officer.replace(old, 2, {"name": new_name})
    assert json.loads(new_blob)["ver"] == 2

    # The current blob works, with the new key and the unchanged ones.
    material = officer.release(
        [Selection(WrappedRecord(rec.record_id, 2, new_blob), ["name", "health"])],
        alice.public,
        "g-new",
    )
    assert staff.redeem(material, alice, "g-new") == {
        rec.record_id: {"name": new_name, "health": rec.fields["health"]}
    }
    # The backup copy of version 1 no longer yields the old name key.
    material = officer.release([Selection(old, ["name"])], alice.public, "g-old")
    with pytest.raises(DecryptionFailed):
        staff.redeem(material, alice, "g-old")
    # Every older salt version is destroyed in Vault, not just superseded.
    meta = openbao.api("GET", f"childvault-kv/metadata/records/{rec.record_id}").json()["data"]
    assert meta["current_version"] == 2
    assert meta["versions"]["1"]["destroyed"] is True
    old_version = openbao.api("GET", f"childvault-kv/data/records/{rec.record_id}?version=1")
    assert old_version.status_code == 404
    # A second correction (from the current blob) works and destroys version 2.
    newer = FieldKey(3, secrets.token_bytes(32))
    blob3 = officer.replace(WrappedRecord(rec.record_id, 2, new_blob), 3, {"name": newer})
    material = officer.release(
        [Selection(WrappedRecord(rec.record_id, 3, blob3), ["name"])], alice.public, "g-3"
    )
    assert staff.redeem(material, alice, "g-3")[rec.record_id]["name"] == newer
    meta = openbao.api("GET", f"childvault-kv/metadata/records/{rec.record_id}").json()["data"]
    assert meta["versions"]["2"]["destroyed"] is True
    # Staff cannot correct: it needs update on the salt document.
    with pytest.raises(AccessDenied):
        staff.replace(WrappedRecord(rec.record_id, 3, blob3), 4, {"name": newer})
    with pytest.raises(UsageError):
        officer.replace(WrappedRecord(rec.record_id, 3, blob3), 3, {"name": newer})


def _kv_only_provider(openbao: BaoServer) -> VaultProvider:
    """A provider whose token may create and read salts but not encrypt: a wrap
    with it writes the salts, then Transit refuses, as if the server had
    failed half-way."""
    openbao.api(
        "PUT",
        "sys/policies/acl/test-kv-only",
        json={
            "policy": 'path "childvault-kv/data/records/*" { capabilities = ["create", "read"] }'
        },
    ).raise_for_status()
    return VaultProvider(openbao.settings, "v", token=openbao.token(["test-kv-only"]))


def test_interrupted_wrap_can_be_repeated(
    make: Callable[..., VaultProvider], openbao: BaoServer, alice: Identity
) -> None:
    # A token that may create salts but not encrypt: the salt gets written,
    # then Transit refuses, as if the server had failed half-way.
    half = _kv_only_provider(openbao)
    staff, officer = make("staff"), make("officer")
    rec = record()
    with pytest.raises(AccessDenied, match="encrypt"):
        half.wrap([rec])
    half.close()
    assert salt_doc(openbao, rec.record_id)  # the salt exists
    # Staff (create only: a 403 on the existing path) cannot read it back, so
    # the record id is refused (issue 14: the service retries under a new id);
    # an officer (update: a check-and-set conflict) picks the salt up.
    with pytest.raises(UsageError, match="never reused"):
        staff.wrap([rec])
    (blob,) = officer.wrap([rec])
    (blob2,) = officer.wrap([rec])
    meta = openbao.api("GET", f"childvault-kv/metadata/records/{rec.record_id}").json()["data"]
    assert meta["current_version"] == 1
    for i, b in enumerate((blob, blob2)):
        material = officer.release([Selection(wrapped(rec, b), ["name"])], alice.public, f"g{i}")
        assert staff.redeem(material, alice, f"g{i}")[rec.record_id]["name"] == rec.fields["name"]


def test_existing_record_wrap_reads_its_salts(
    make: Callable[..., VaultProvider], alice: Identity
) -> None:
    staff, officer = make("staff"), make("officer")
    rec = record(("name",))
    staff.wrap([rec])
    later = RecordKeys(
        rec.record_id,
        2,
        {"name": rec.fields["name"], "school": FieldKey(1, secrets.token_bytes(32))},
        new=False,
    )
    # Reading the salts is an officer's (staff salts are create-only, issue 14).
    (blob,) = officer.wrap([later])
    material = officer.release(
        [Selection(wrapped(later, blob), ["name", "school"])], alice.public, "g-l"
    )
    assert staff.redeem(material, alice, "g-l") == {rec.record_id: dict(later.fields)}
    with pytest.raises(DecryptionFailed):
        officer.wrap([RecordKeys(new_id(), 1, dict(later.fields), new=False)])


# -- rotation ---------------------------------------------------------------------------------


def test_rotate_rekey_finish(
    make: Callable[..., VaultProvider], spare_openbao: BaoServer, alice: Identity
) -> None:
    staff = make("staff", spare_openbao)
    officer = make("officer", spare_openbao)
    admin = make("admin", spare_openbao)
    recs = [record(), record(), record()]
    blobs = staff.wrap(recs)
    assert {VaultProvider.blob_key_version(b) for b in blobs} == {1}
    assert admin.rotate_key() == 2
    live = [wrapped(r, b) for r, b in zip(recs[:2], blobs[:2], strict=True)]
    counter = RequestCounter(admin.session)
    rekeyed = admin.rekey(live)
    assert len(counter.paths("/rewrap/")) == 1
    assert all(VaultProvider.blob_key_version(b) == 2 for b in rekeyed)
    # Resumable: rekeying again (already current) is harmless.
    again = admin.rekey([wrapped(r, b) for r, b in zip(recs[:2], rekeyed, strict=True)])
    assert all(VaultProvider.blob_key_version(b) == 2 for b in again)
    assert admin.finish_rotation() == 2
    info = admin.key_info()
    assert info["min_decryption_version"] == 2
    for rec, blob in zip(recs[:2], again, strict=True):
        material = officer.release(
            [Selection(wrapped(rec, blob), list(rec.fields))], alice.public, "g-r"
        )
        assert staff.redeem(material, alice, "g-r") == {rec.record_id: dict(rec.fields)}
    # The record left behind (like an old backup) no longer opens.
    material = officer.release(
        [Selection(wrapped(recs[2], blobs[2]), ["name"])], alice.public, "g-old"
    )
    with pytest.raises(DecryptionFailed):
        staff.redeem(material, alice, "g-old")
    with pytest.raises(DecryptionFailed):
        admin.rekey([wrapped(recs[2], blobs[2])])
    # Trim deletes the retired versions for good.
    assert admin.finish_rotation(trim=True) == 2
    assert admin.key_info()["min_available_version"] == 2
    # Rotation is admin-only.
    with pytest.raises(AccessDenied, match="childvault-admin"):
        officer.rotate_key()
    with pytest.raises(AccessDenied, match="childvault-admin"):
        officer.rekey(live)


# -- batching ---------------------------------------------------------------------------------


def test_wrap_and_release_450_fields_are_batched(
    make: Callable[..., VaultProvider], alice: Identity
) -> None:
    staff, officer = make("staff"), make("officer")
    names = tuple(f"f{i:02d}" for i in range(90))
    recs = [record(names) for _ in range(5)]  # 450 fields
    staff_counter = RequestCounter(staff.session)
    blobs = staff.wrap(recs)
    # One salt write per record (KV has no batch API) + ceil(450 / 200) Transit calls.
    assert len(staff_counter.paths("/encrypt/")) == 3
    assert len(staff_counter.paths("childvault-kv/data/records/")) == 5
    assert len(staff_counter.calls) == 8

    officer_counter = RequestCounter(officer.session)
    selections = [Selection(wrapped(r, b), list(names)) for r, b in zip(recs, blobs, strict=True)]
    material = officer.release(selections, alice.public, "g-450")
    assert len(officer_counter.paths("/decrypt/")) == 3
    assert len(officer_counter.paths("childvault-kv/data/records/")) == 5
    assert len(officer_counter.calls) == 8

    staff_counter.reset()
    released = staff.redeem(material, alice, "g-450")
    assert staff_counter.paths("sys/wrapping/lookup") == ["sys/wrapping/lookup"] * 3
    assert staff_counter.paths("sys/wrapping/unwrap") == ["sys/wrapping/unwrap"] * 3
    assert len(staff_counter.calls) == 6
    assert released == {r.record_id: dict(r.fields) for r in recs}


def salt_meta(server: BaoServer, record_id: str) -> dict[str, Any]:
    resp = server.api("GET", f"childvault-kv/metadata/records/{record_id}")
    resp.raise_for_status()
    return dict(resp.json()["data"])


def read_back(
    staff: VaultProvider,
    officer: VaultProvider,
    requester: Identity,
    recs: list[RecordKeys],
    blobs: list[bytes],
    grant: str,
) -> dict[str, dict[str, FieldKey]]:
    selections = [
        Selection(wrapped(r, b), list(r.fields)) for r, b in zip(recs, blobs, strict=True)
    ]
    return staff.redeem(officer.release(selections, requester.public, grant), requester, grant)


@pytest.mark.parametrize("workers", [1, 8])
def test_pooled_wrap_writes_one_salt_document_per_record_and_all_read_back(
    openbao: BaoServer, vault_id: str, tokens: dict[str, str], alice: Identity, workers: int
) -> None:
    settings = dataclasses.replace(openbao.settings, salt_workers=workers)
    staff = VaultProvider(settings, vault_id, token=tokens["staff"])
    officer = VaultProvider(settings, vault_id, token=tokens["officer"])
    try:
        recs = [record() for _ in range(20)]
        counter = RequestCounter(staff.session)
        blobs = staff.wrap(recs)
        # One create per record, each its own document, nothing retried.
        kv_paths = counter.paths("childvault-kv/data/records/")
        assert sorted(kv_paths) == sorted(f"childvault-kv/data/records/{r.record_id}" for r in recs)
        assert len(counter.paths("/encrypt/")) == 1
        assert [json.loads(b)["rec"] for b in blobs] == [r.record_id for r in recs]
        for rec in recs:
            meta = salt_meta(openbao, rec.record_id)
            assert meta["current_version"] == 1 and list(meta["versions"]) == ["1"]
            assert set(salt_doc(openbao, rec.record_id)["fields"]) == set(rec.fields)
        assert read_back(staff, officer, alice, recs, blobs, "g-pool") == {
            r.record_id: dict(r.fields) for r in recs
        }
    finally:
        staff.close()
        officer.close()


def test_pooled_salt_creates_are_in_flight_together(
    openbao: BaoServer, vault_id: str, tokens: dict[str, str]
) -> None:
    # Two salt creates must be waiting on the server at the same moment: a
    # sequential loop would never pass the barrier (it times out and breaks).
    staff = VaultProvider(openbao.settings, vault_id, token=tokens["staff"])
    barrier = threading.Barrier(2, timeout=10)
    arrivals = itertools.count()
    threads: set[str] = set()
    original = staff.session.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        if "/childvault-kv/data/records/" in url:
            threads.add(threading.current_thread().name)
            if next(arrivals) < 2:
                with contextlib.suppress(threading.BrokenBarrierError):
                    barrier.wait()
        return original(method, url, *args, **kwargs)

    staff.session.request = request  # type: ignore[method-assign]
    try:
        blobs = staff.wrap([record() for _ in range(6)])
    finally:
        staff.close()
    assert len(blobs) == 6
    assert not barrier.broken
    assert len(threads) >= 2 and all(t.startswith("childvault-salts") for t in threads)


def test_repeated_wrap_after_partial_failure_reuses_the_written_salts(
    make: Callable[..., VaultProvider], openbao: BaoServer, alice: Identity
) -> None:
    # A first attempt wrote the salts of two records of the batch, then failed
    # (this token may create salts but not encrypt).
    half = _kv_only_provider(openbao)
    recs = [record() for _ in range(6)]
    early = [recs[1], recs[4]]
    with pytest.raises(AccessDenied, match="encrypt"):
        half.wrap(early)
    half.close()
    before = {r.record_id: salt_doc(openbao, r.record_id) for r in early}
    staff, officer = make("staff"), make("officer")
    # Staff (create only: a 403 on an existing path, no read) are refused the
    # reused ids (issue 14); an officer (update: a check-and-set conflict)
    # repeats the whole batch and reuses those salts.
    with pytest.raises(UsageError, match="never reused"):
        staff.wrap(recs)
    for i, provider in enumerate((officer, officer)):
        blobs = provider.wrap(recs)
        assert [json.loads(b)["rec"] for b in blobs] == [r.record_id for r in recs]
        for rec in recs:
            assert salt_meta(openbao, rec.record_id)["current_version"] == 1
        assert {r.record_id: salt_doc(openbao, r.record_id) for r in early} == before
        assert read_back(staff, officer, alice, recs, blobs, f"g-rep{i}") == {
            r.record_id: dict(r.fields) for r in recs
        }


# -- blind index --------------------------------------------------------------------------------


def test_hmac_is_batched_bound_and_pinned(
    make: Callable[..., VaultProvider], openbao: BaoServer, vault_id: str
) -> None:
    staff, officer = make("staff"), make("officer")
    values = [f"11010519491231{i:04d}".encode() for i in range(450)]
    counter = RequestCounter(staff.session)
    macs = staff.hmac("id_number", values)
    assert len(counter.paths("/hmac/")) == 3
    assert len(macs) == 450 and all(len(m) == 32 for m in macs)
    assert len(set(macs)) == 450
    assert officer.hmac("id_number", values[:3]) == macs[:3]
    assert staff.hmac("guardian_phone", values[:1]) != macs[:1]
    other_vault = VaultProvider(openbao.settings, vault_id + "-x", token=openbao.token(STAFF))
    assert other_vault.hmac("id_number", values[:1]) != macs[:1]
    other_vault.close()
    # Rotating the index key does not change index values: the version is pinned.
    openbao.api("POST", "childvault-transit/keys/childvault-dek-index/rotate").raise_for_status()
    assert staff.hmac("id_number", values[:5]) == macs[:5]
