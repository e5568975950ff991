"""Issue 12: an insider who edits rows with their own database key gains no key
material; the operation that would use the edited row refuses it (exit 4) and
logs the refusal. Each test then checks the insider's own key slot: nothing
that opens a record was sealed to them."""

from __future__ import annotations

import json

import pytest

from childvault.keys import ApprovalInvalid, IntegrityError, KeySlots
from childvault.vault import _audit, _tokens
from tests._insider import Insider
from tests.conftest import World, add_children


def _custodian_entries(world: World, who: str) -> list[str]:
    """The custodian entries in ``who``'s own key slot (what would open record keys)."""
    vault_id = json.loads((world.home / "config.json").read_text())["vault_id"]
    secrets = KeySlots(world.home / "keyslots.json").open(world.ids[who], vault_id)
    return sorted(k for k in secrets if k.startswith("custodian/"))


def _refusals(world: World) -> list[dict[str, object]]:
    with world.open("admin") as v:
        entries = [
            _audit.decode_entry(e) for e in v._session.db.audit.entries_by_action(("trust.refuse",))
        ]
    return entries


def test_attack1_custodian_holder_row_gives_staff_nothing(world: World) -> None:
    """A row in custodian_holders naming staff: the next rotation seals the new
    custodian key to verified holders only."""
    with Insider(world, "worker1") as insider:
        insider.insert("custodian_holders", {"generation": 1, "officer": "worker1"})
    with world.open("officer1") as v:
        v.rotate_keys()
    assert _custodian_entries(world, "worker1") == []
    assert _custodian_entries(world, "officer1") == ["custodian/2"]
    assert _custodian_entries(world, "officer2") == ["custodian/2"]


def test_attack2_keys_share_to_a_swapped_key_is_refused(world: World) -> None:
    """A new officer's enc_key swapped for a staff member's before `keys share`."""
    with world.open("admin") as v:
        v.add_user("officer3", ["officer"], "officer3-passphrase")
    worker_key = world.ids["worker1"].public.encryption_key
    with Insider(world, "worker1") as insider:
        insider.update("users", {"enc_key": worker_key}, {"name": "officer3"})
    with world.open("officer1") as v, pytest.raises(IntegrityError, match="officer3"):
        v.share_custodian("officer3")
    assert _custodian_entries(world, "worker1") == []
    assert any(e["detail"]["on"] == "custodian.share" for e in _refusals(world))  # type: ignore[index]


def test_attack2_swap_on_a_verified_officer_is_refused(world: World) -> None:
    worker_key = world.ids["worker2"].public.encryption_key
    with Insider(world, "worker2") as insider:
        insider.update("users", {"enc_key": worker_key}, {"name": "officer2"})
    with world.open("officer1") as v, pytest.raises(IntegrityError, match="officer2"):
        v.share_custodian("officer2")
    assert _custodian_entries(world, "worker2") == []


def test_attack3_grant_redirected_by_a_swapped_requester_key_is_refused(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 1)
        req = v.request_access(ids, ["name"], "case_management", "家访")
    with Insider(world, "worker2") as insider:
        insider.update(
            "users", {"enc_key": world.ids["worker2"].public.encryption_key}, {"name": "worker1"}
        )
    with world.open("officer1") as v, pytest.raises(IntegrityError, match="worker1"):
        v.approve(req)
    with world.open("admin") as v:
        assert v._session.db.access.request(req).status == "pending"  # type: ignore[union-attr]
    assert any(e["detail"]["on"] == "request.approve" for e in _refusals(world))  # type: ignore[index]
    # Nothing was sealed to the insider: no grant, and their own slot opens no
    # record key (no custodian entry), so they decrypt nothing.
    with Insider(world, "worker2") as insider:
        assert insider.rows("grants", ["id"], where={"request_id": req}) == []
    assert _custodian_entries(world, "worker2") == []


def test_attack6_rotation_strips_a_stale_custodian_entry(world: World) -> None:
    """A slot that once received custodian/1 (an earlier share to a swapped key)
    loses it at the next rotation, not only the holders' slots."""
    vault_id = json.loads((world.home / "config.json").read_text())["vault_id"]
    slots = KeySlots(world.home / "keyslots.json")
    stolen = slots.open(world.ids["officer1"], vault_id)
    slots.add(world.ids["worker1"].public, vault_id, stolen)
    assert _custodian_entries(world, "worker1") == ["custodian/1"]
    with world.open("officer1") as v:
        v.rotate_keys()
    assert _custodian_entries(world, "worker1") == []
    with world.open("worker1") as v:  # the staff member still opens the vault
        add_children(v, 1)


def test_a_custodian_key_swapped_in_the_table_is_not_sealed_to(world: World) -> None:
    from childvault.keys import CustodianSecret

    fake = CustodianSecret.generate(1)
    with Insider(world, "worker2") as insider:
        insider.update("custodians", {"public_key": fake.public}, {"generation": 1})
    with world.open("worker1") as v, pytest.raises(IntegrityError, match="custodian"):
        add_children(v, 1)


def test_a_token_signer_key_written_into_users_signs_nothing(world: World) -> None:
    """A staff member who writes their own key as an officer's cannot sign a token
    the reader accepts: the signer's key comes from the signed registrations."""
    with world.open("worker1") as v:
        ids = add_children(v, 1)
        req = v.request_access(ids, ["name"], "case_management", "家访")
    with world.open("officer1") as v:
        token = v.approve(req).token
    with Insider(world, "worker2") as insider:
        insider.update(
            "users", {"sign_key": world.ids["worker2"].public.signing_key}, {"name": "officer1"}
        )
    # The insider signs the same claims with their own key, now the row's key
    # of officer1: the reader takes the signer from the registrations (staff).
    claims = _tokens.verify(token, world.ids["officer1"].public.signing_key)
    forged = _tokens.issue(world.ids["worker2"], claims)
    assert _tokens.key_id(forged) == _tokens.paserk_pid(world.ids["worker2"].public.signing_key)
    with world.open("worker1") as v, pytest.raises(ApprovalInvalid):
        v.read_with_grant(forged)
    with world.open("worker1") as v:
        assert v.read_with_grant(token)[ids[0]]["name"]  # verified key: the real token reads


def test_trust_state_is_resumed_from_a_signed_save(world: World) -> None:
    """The verifier's saved state is signed by their own key: one written by
    someone else is ignored and everything is replayed from the anchor."""
    with world.open("officer1") as v:
        v._session.trust()
    with Insider(world, "worker1") as insider:
        rows = insider.rows("trust_states", ["verifier"])
        assert ("officer1",) in rows
        insider.update("trust_states", {"sig": b"\0" * 64}, {"verifier": "officer1"})
    with world.open("officer1") as v:
        state = v._session.trust()
        assert state is not None and state.is_active("officer2", "officer")


def test_a_log_entry_in_another_users_name_is_refused_at_the_next_use(world: World) -> None:
    """An entry chained onto the head in an officer's name, without the officer's
    signature: the next operation that verifies the log refuses (exit 4)."""
    from datetime import UTC, datetime

    from childvault.vault import _merkle
    from childvault.vault._audit import Event
    from childvault.vault._time import iso

    with world.open("worker1") as v:
        ids = add_children(v, 1)
        req = v.request_access(ids, ["name"], "case_management", "家访")
    event = Event("officer1", "record.delete", records=[ids[0]], detail={"category": "request"})
    with Insider(world, "worker2") as insider:
        seq, prev = insider.rows("audit", ["seq", "hash"], order_by="seq")[-1]
        entry = _audit.encode_entry(
            seq + 1, iso(datetime(2026, 11, 24, 10, 0, tzinfo=UTC)), event, bytes(prev)
        )
        insider.insert("audit", {"seq": seq + 1, "entry": entry, "hash": _merkle.leaf_hash(entry)})
    with world.open("officer2") as v, pytest.raises(IntegrityError, match="not signed by them"):
        v.approve(req)


def test_entries_are_signed_by_their_actor(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 1)
        state = v._session.trust()
        assert state is not None
        db = v._session.db
        size = db.audit.size()
        sigs = db.audit.signatures(size - 1, size - 1)
        _, digest = db.audit.entry_at(size - 1)  # type: ignore[misc]
        assert world.ids["worker1"].public.verify(_audit.entry_message(digest), sigs[size - 1])


def test_a_disabled_users_grant_reads_nothing(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 1)
        req = v.request_access(ids, ["name"], "case_management", "家访")
    with world.open("officer1") as v:
        token = v.approve(req).token
    # The insider keeps a copy of the key-slot file from before the disabling.
    slots_copy = (world.home / "keyslots.json").read_bytes()
    with world.open("admin") as v:
        done = v.disable_user("worker1")
    assert len(done.revoked_grants) == 1
    assert "worker1" not in KeySlots(world.home / "keyslots.json").users()
    (world.home / "keyslots.json").write_bytes(slots_copy)
    from childvault.keys import AccessDenied

    with world.open("worker1") as v, pytest.raises(AccessDenied, match="disabled"):
        v.read_with_grant(token)


def test_disabling_a_custodian_holder_stops_sealing_until_rotation(world: World) -> None:
    from childvault.keys import AccessDenied

    with world.open("admin") as v:
        assert v.disable_user("officer2").rotation_required
    with world.open("worker1") as v, pytest.raises(AccessDenied, match="keys rotate"):
        add_children(v, 1)
    with world.open("officer1") as v:
        v.rotate_keys()
    with world.open("worker1") as v:
        add_children(v, 1)
    assert "officer2" not in KeySlots(world.home / "keyslots.json").users()
    assert _custodian_entries(world, "officer1") == ["custodian/2"]


def test_the_registration_of_another_vault_is_refused() -> None:
    """A registration statement replayed from another vault does not apply."""
    from childvault.keys import Identity
    from childvault.vault._registrations import register_statement
    from childvault.vault._statements import Anchor, TrustState, sign

    admin = Identity.generate("admin")
    other = Identity.generate("officer9")
    mine = Anchor("a" * 32, "admin", admin.public.signing_key)
    state = TrustState.start(mine)
    state.apply(
        sign(
            register_statement("a" * 32, "2026-11-30T08:00:00Z", "admin", ["admin"], admin.public),
            [admin],
        ),
        seq=1,
    )
    foreign = sign(
        register_statement("b" * 32, "2026-11-30T08:00:00Z", "officer9", ["staff"], other.public),
        [other, admin],
    )
    with pytest.raises(IntegrityError, match="another vault"):
        state.apply(foreign, seq=2)
