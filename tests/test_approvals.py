"""Requests, approvals and reads with approval tokens (DESIGN section 4).

Every rejected read is also checked to have left a denied entry in the log.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from childvault.keys import AccessDenied, ApprovalInvalid, Identity, NotFound, UsageError
from childvault.vault import NewRecordInput, _tokens
from tests.conftest import World, add_children, child_values, consent


@pytest.fixture
def flow(world: World) -> Iterator[tuple[World, list[str]]]:
    with world.open("worker1") as v:
        ids = add_children(v, 4, purposes=("case_management", "education_support"))
    yield world, ids


def _approve(
    world: World,
    ids: list[str],
    fields: tuple[str, ...] = ("name", "guardian_phone"),
    *,
    requester: str = "worker1",
    officer: str = "officer1",
    purpose: str = "case_management",
    **kw: object,
) -> tuple[str, str]:
    with world.open(requester) as v:
        req = v.request_access(ids, fields, purpose, "家访")
    with world.open(officer) as v:
        approval = v.approve(req, **kw)  # type: ignore[arg-type]
    return approval.token, approval.grant_id


def _denied_reads(world: World) -> list[dict[str, object]]:
    with world.open("admin") as v:
        return [
            e["entry"]
            for e in v.audit_entries()
            if e["entry"]["action"] == "grant.read" and e["entry"]["outcome"] == "denied"
        ]


def _assert_denied(world: World, fn: object, reason: str) -> None:
    before = len(_denied_reads(world))
    with pytest.raises(ApprovalInvalid) as info:
        fn()  # type: ignore[operator]
    # Opaque to the caller...
    assert reason not in str(info.value)
    assert info.value.exit_code == 3
    # ...but the reason is in the log.
    after = _denied_reads(world)
    assert len(after) == before + 1
    assert reason in str(after[-1]["detail"]["reason"])  # type: ignore[index]


def test_full_flow_returns_exactly_the_approved_fields(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    token, _ = _approve(world, ids[:2])
    with world.open("worker1") as v:
        values = v.read_with_grant(token)
    assert values == {
        ids[0]: {
            "name": child_values(0)["name"],
            "guardian_phone": child_values(0)["guardian_phone"],
        },
        ids[1]: {
            "name": child_values(1)["name"],
            "guardian_phone": child_values(1)["guardian_phone"],
        },
    }
    with world.open("admin") as v:
        reads = [e["entry"] for e in v.audit_entries() if e["entry"]["action"] == "grant.read"]
    assert reads[-1]["outcome"] == "ok" and reads[-1]["records"] == ids[:2]


def test_read_of_a_subset_is_allowed(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    token, _ = _approve(world, ids[:2])
    with world.open("worker1") as v:
        assert v.read_with_grant(token, [ids[1]], ["name"]) == {
            ids[1]: {"name": child_values(1)["name"]}
        }


def test_token_for_another_requester(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    token, _ = _approve(world, ids[:1])
    with world.open("worker2") as v:
        _assert_denied(world, lambda: v.read_with_grant(token), "issued to worker1")


def test_expired_token(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    token, _ = _approve(world, ids[:1], ttl=timedelta(minutes=30))
    world.clock.advance(minutes=31)
    with world.open("worker1") as v:
        _assert_denied(world, lambda: v.read_with_grant(token), "expired")


def test_not_yet_valid_token(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    token, _ = _approve(world, ids[:1])
    world.clock.advance(minutes=-10)
    with world.open("worker1") as v:
        _assert_denied(world, lambda: v.read_with_grant(token), "not yet valid")


def test_field_outside_scope(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    token, _ = _approve(world, ids[:1])
    with world.open("worker1") as v:
        _assert_denied(
            world, lambda: v.read_with_grant(token, [ids[0]], ["case_notes"]), "field outside"
        )


def test_record_outside_scope(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    token, _ = _approve(world, ids[:1])
    with world.open("worker1") as v:
        _assert_denied(world, lambda: v.read_with_grant(token, [ids[2]]), "record outside")


def test_any_changed_byte_of_the_token(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    token, _ = _approve(world, ids[:1])
    with world.open("worker1") as v:
        # Sample positions across prefix, payload, signature and footer.
        for pos in sorted(
            {10, 11, len(token) // 3, len(token) // 2, len(token) - 70, len(token) - 2}
        ):
            ch = token[pos]
            mutated = token[:pos] + ("A" if ch != "A" else "B") + token[pos + 1 :]
            with pytest.raises(ApprovalInvalid):
                v.read_with_grant(mutated)
    assert len(_denied_reads(world)) == 6


def _forge(world: World, signer: Identity, token: str, **changes: object) -> str:
    """Re-sign the claims of ``token`` (optionally changed) with ``signer``'s key."""
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[2] + "==")[:-64])
    payload.update(changes)
    claims = _tokens.GrantClaims(
        jti=payload["jti"],
        req=payload["req"],
        iss=payload["iss"],
        sub=payload["sub"],
        vault=payload["vault"],
        rec=tuple(payload["rec"]),
        fld=tuple(payload["fld"]),
        pur=payload["pur"],
        iat=world.clock.now,
        nbf=world.clock.now,
        exp=world.clock.now + timedelta(hours=1),
        uses=payload["uses"],
        keys=base64.urlsafe_b64decode(payload["keys"] + "=" * (-len(payload["keys"]) % 4)),
    )
    return _tokens.issue(signer, claims)


@pytest.mark.parametrize("who", ["worker2", "admin"])
def test_signed_by_staff_or_admin_key(flow: tuple[World, list[str]], who: str) -> None:
    world, ids = flow
    token, _ = _approve(world, ids[:1])
    forged = _forge(world, world.ids[who], token, iss=who)
    with world.open("worker1") as v:
        _assert_denied(world, lambda: v.read_with_grant(forged), "not an officer")


def test_signed_by_unregistered_officer_key(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    token, _ = _approve(world, ids[:1])
    forged = _forge(world, Identity.generate("officer1"), token)
    with world.open("worker1") as v:
        _assert_denied(world, lambda: v.read_with_grant(forged), "not registered")


def test_rescoped_token_resigned_by_an_officer_still_cannot_decrypt_more(
    flow: tuple[World, list[str]],
) -> None:
    """Even a validly signed token whose scope was widened after issue is refused."""
    world, ids = flow
    token, _ = _approve(world, ids[:1])
    forged = _forge(
        world, world.ids["officer1"], token, fld=["name", "guardian_phone", "case_notes"]
    )
    with world.open("worker1") as v:
        _assert_denied(
            world, lambda: v.read_with_grant(forged), "does not match the approved request"
        )


def test_token_from_another_vault(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    token, _ = _approve(world, ids[:1])
    forged = _forge(world, world.ids["officer1"], token, vault="f" * 32)
    with world.open("worker1") as v:
        _assert_denied(world, lambda: v.read_with_grant(forged), "another vault")


def test_revoked_grant(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    token, grant = _approve(world, ids[:1], uses=3)
    with world.open("worker1") as v:
        v.read_with_grant(token)
    with world.open("officer2") as v:
        v.revoke(grant)
    with world.open("worker1") as v:
        _assert_denied(world, lambda: v.read_with_grant(token), "revoked")


def test_uses_exhausted(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    token, _ = _approve(world, ids[:1], uses=2)
    with world.open("worker1") as v:
        v.read_with_grant(token)
        v.read_with_grant(token)
        _assert_denied(world, lambda: v.read_with_grant(token), "uses exhausted")


def _approve_denied_entries(world: World) -> list[dict[str, object]]:
    with world.open("admin") as v:
        return [
            e["entry"]
            for e in v.audit_entries()
            if e["entry"]["action"] == "request.approve" and e["entry"]["outcome"] == "denied"
        ]


def test_officer_cannot_approve_own_request(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    with world.open("officer1") as v:
        req = v.request_access(ids[:1], ["name"], "case_management", "核对")
        with pytest.raises(AccessDenied, match="own request"):
            v.approve(req)
    assert _approve_denied_entries(world)[-1]["detail"] == {"reason": "own request"}
    with world.open("officer2") as v:
        assert v.approve(req).requester == "officer1"


def test_purpose_not_consented(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    with world.open("worker1") as v:
        req = v.request_access(ids[:1], ["name"], "medical_care", "就医")
    with world.open("officer1") as v, pytest.raises(AccessDenied, match="no consent"):
        v.approve(req)
    assert _approve_denied_entries(world)[-1]["detail"] == {"reason": "purpose"}


def test_record_past_retention(world: World) -> None:
    with world.open("worker1") as v:
        (rid,) = v.add_records(
            [NewRecordInput("child", child_values(0), consent(retain_until=date(2026, 12, 31)))]
        )
        req = v.request_access([rid], ["name"], "case_management", "核对")
    world.clock.advance(days=40)
    with world.open("officer1") as v, pytest.raises(AccessDenied, match="retention"):
        v.approve(req)
    assert _approve_denied_entries(world)[-1]["detail"] == {"reason": "retention"}


def test_ttl_above_maximum_is_refused(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    with world.open("worker1") as v:
        req = v.request_access(ids[:1], ["name"], "case_management", "核对")
    with world.open("officer1") as v, pytest.raises(UsageError, match="TTL"):
        v.approve(req, ttl=timedelta(hours=9))
    assert _approve_denied_entries(world)[-1]["detail"] == {"reason": "ttl"}


def test_request_over_the_record_cap_is_refused(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 51)
        with pytest.raises(UsageError, match="at most 50 records"):
            v.request_access(ids, ["name"], "case_management", "bulk")


def test_staff_cannot_approve_and_denial_is_logged(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    with world.open("worker1") as v:
        req = v.request_access(ids[:1], ["name"], "case_management", "核对")
    with world.open("worker2") as v, pytest.raises(AccessDenied, match="officer"):
        v.approve(req)
    assert _approve_denied_entries(world)[-1]["actor"] == "worker2"


def test_deny_and_pending_listing(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    with world.open("worker1") as v:
        req = v.request_access(ids[:2], ["name"], "case_management", "核对")
    with world.open("officer1") as v:
        pending = v.requests()
        assert [r.id for r in pending] == [req] and pending[0].records == tuple(ids[:2])
        v.deny(req, "不必要")
        assert v.requests() == []
        with pytest.raises(UsageError):
            v.approve(req)


def test_unknown_ids_are_clear(flow: tuple[World, list[str]]) -> None:
    world, _ = flow
    with world.open("officer1") as v:
        with pytest.raises(NotFound):
            v.approve("0" * 32)
        with pytest.raises(NotFound):
            v.revoke("not-an-id")


def test_every_approval_signs_and_witnesses_a_checkpoint(flow: tuple[World, list[str]]) -> None:
    world, ids = flow
    _approve(world, ids[:1])
    _approve(world, ids[1:2])
    notes = [json.loads(line)["note"] for line in world.witness.read_text().splitlines()]
    assert len(notes) == 2
    assert world.witness.stat().st_mode & 0o077 == 0
    assert all(n.startswith("childvault/") and "— childvault/" in n for n in notes)
    with world.open("worker2") as v:
        report = v.verify_audit()
    assert report.checkpoints == 2 and report.witnessed == 2


def test_without_the_officer_there_is_no_way_to_plaintext(flow: tuple[World, list[str]]) -> None:
    """An insider with the database key and a staff identity holds every blob and
    every key slot, but cannot open any box: the custodian secret is in the
    officers' key slots only (sealed to their identity keys), never in the
    database. Cryptographic, not a permission check."""
    import base64 as b64

    from nacl.public import PrivateKey

    from childvault.keys import CustodianSecret, DecryptionFailed, KeySlots
    from tests._insider import Insider

    world, _ids = flow
    insider = Insider(world, "worker1")
    blobs = [bytes(b) for (b,) in insider.rows("keyblobs", ["blob"])]
    assert blobs
    worker = world.ids["worker1"]
    vault_id = json.loads((world.home / "config.json").read_text())["vault_id"]
    slots = KeySlots(world.home / "keyslots.json")
    mine = slots.open(worker, vault_id)
    assert set(mine) == {"db", "index"}  # no custodian entry for staff
    doc = json.loads((world.home / "keyslots.json").read_text())
    for name in ("officer1", "officer2"):
        with pytest.raises(DecryptionFailed):
            worker.unseal(b64.b64decode(doc["slots"][name]))
    for blob in blobs:
        with pytest.raises(DecryptionFailed):
            worker.unseal(blob[8:])
        for secret in mine.values():
            with pytest.raises(DecryptionFailed):
                CustodianSecret(1, PrivateKey(secret)).open(blob[8:])
    # Nothing in any table is the custodian secret (officer1's, read legitimately).
    custodian = KeySlots(world.home / "keyslots.json").open(world.ids["officer1"], vault_id)
    secret = custodian["custodian/1"]
    with insider:
        for table in insider.tables():
            for row in insider.rows(table):
                assert not any(isinstance(c, bytes) and secret in c for c in row)


def test_hostile_tokens_raise_only_our_error(flow: tuple[World, list[str]]) -> None:
    """Arbitrary strings and byte mutations of a valid token: only ApprovalInvalid."""
    world, ids = flow
    token, _ = _approve(world, ids[:1], uses=10)
    v = world.open("worker1")

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def attack(data: st.DataObject) -> None:
        choice = data.draw(st.sampled_from(["text", "mutate", "splice"]))
        if choice == "text":
            candidate = data.draw(st.text(max_size=300))
        elif choice == "mutate":
            raw = bytearray(token.encode())
            for _ in range(data.draw(st.integers(1, 4))):
                raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
            candidate = raw.decode("latin-1")
        else:
            cut = data.draw(st.integers(0, len(token)))
            candidate = token[:cut] + data.draw(st.text(min_size=1, max_size=20)) + token[cut:]
        if candidate.strip() == token:
            return
        with pytest.raises(ApprovalInvalid):
            v.read_with_grant(candidate)

    try:
        attack()
    finally:
        v.close()


def test_approving_a_field_some_records_lack(world: World) -> None:
    """Regression for the flaky demo: an optional field absent from one record."""
    values = child_values(0)
    del values["school"]
    with world.open("worker1") as v:
        ids = v.add_records(
            [
                NewRecordInput("child", values, consent()),
                NewRecordInput("child", child_values(1), consent()),
            ]
        )
    token, _ = _approve(world, ids, ("name", "school"))
    with world.open("worker1") as v:
        out = v.read_with_grant(token)
    assert out == {
        ids[0]: {"name": values["name"]},
        ids[1]: {"name": child_values(1)["name"], "school": child_values(1)["school"]},
    }


def test_regression_a_token_respelled_by_inserted_characters_was_a_valid_read(
    flow: tuple[World, list[str]],
) -> None:
    """pyseto skips non-base64url characters and ignores a last character's unused
    bits, so one signed token had many spellings, each a valid read that used up
    the grant. Only the one canonical spelling is accepted now."""
    world, ids = flow
    token, _ = _approve(world, ids[:1], uses=1)
    head, payload, footer = token.rsplit(".", 2)[0], *token.rsplit(".", 2)[1:]
    last = payload[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # Same decoded bytes when the payload's length leaves unused low bits.
    twin = alphabet[alphabet.index(last) ^ 1] if len(payload) % 4 in (2, 3) else None
    respelled = [
        f"{head}.{payload[:10]}:*\x11{payload[10:]}.{footer}",
        f"{head}.{payload}.{footer[:5]}!{footer[5:]}",
        f"{head}.{payload}=.{footer}",
    ]
    if twin is not None:
        respelled.append(f"{head}.{payload[:-1]}{twin}.{footer}")
    with world.open("worker1") as v:
        for candidate in respelled:
            with pytest.raises(ApprovalInvalid):
                v.read_with_grant(candidate)
        # None of them used the grant's one read.
        assert v.read_with_grant(token)[ids[0]]["name"] == child_values(0)["name"]


def test_a_token_holding_nul_is_the_opaque_token_error(flow: tuple[World, list[str]]) -> None:
    """Regression (found by the full run after FX-3): U+0000 in a token was refused as a
    UsageError naming the argument, which told a caller something about the token; a
    token is opaque input, so it is the one token error like any other malformed token."""
    world, ids = flow
    token, _ = _approve(world, ids[:1], uses=10)
    with world.open("worker1") as v:
        with pytest.raises(ApprovalInvalid):
            v.read_with_grant(token[:10] + "\x00" + token[10:])
        with pytest.raises(ApprovalInvalid):
            v.subject_report(ids[0], token + "\x00")
