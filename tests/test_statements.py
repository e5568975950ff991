"""Signed statements and the trust state (childvault.vault._statements).

Each rule is attacked: a statement its signers were not entitled to make is
refused with IntegrityError and leaves the state unchanged.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from childvault.keys import Identity, IntegrityError
from childvault.vault import _statements as S

VAULT = "0" * 31 + "1"
AT = "2026-11-30T08:00:00.000000Z"


def who(name: str) -> Identity:
    return Identity.generate(name)


def register(ident: Identity, roles: list[str], *signers: Identity) -> S.Envelope:
    return S.sign(
        {
            "v": 1,
            "kind": "user.register",
            "vault": VAULT,
            "at": AT,
            "user": ident.name,
            "roles": sorted(roles),
            "enc_key": ident.public.encryption_key.hex(),
            "sign_key": ident.public.signing_key.hex(),
        },
        [ident, *signers],
    )


def statement(kind: str, *signers: Identity, **body: object) -> S.Envelope:
    return S.sign({"v": 1, "kind": kind, "vault": VAULT, "at": AT, **body}, list(signers))


class Vault:
    """A small world: the anchor admin, a second admin, two officers, a worker."""

    def __init__(self) -> None:
        self.admin = who("admin")
        self.anchor = S.Anchor(VAULT, "admin", self.admin.public.signing_key)
        self.state = S.TrustState.start(self.anchor)
        self.seq = 0
        self.admin2, self.o1, self.o2, self.w = who("admin2"), who("o1"), who("o2"), who("w")
        self.apply(register(self.admin, ["admin"]))
        self.apply(register(self.admin2, ["admin"], self.admin))
        self.apply(register(self.o1, ["officer"], self.admin))  # first officer: anchor countersigns
        self.apply(register(self.o2, ["officer"], self.admin, self.o1))
        self.apply(register(self.w, ["staff"], self.admin2))

    def apply(self, env: S.Envelope) -> None:
        self.state.apply(env, seq=self.seq)
        self.seq += 1

    def refused(self, env: S.Envelope, words: str) -> None:
        before = self.state.to_bytes()
        with pytest.raises(IntegrityError, match=words):
            self.state.apply(env, seq=self.seq)
        assert self.state.to_bytes() == before


@pytest.fixture
def v() -> Vault:
    return Vault()


def test_a_vault_builds_its_users_from_statements(v: Vault) -> None:
    assert v.state.is_active("o2", "officer") and v.state.is_active("w", "staff")
    assert not v.state.is_active("w", "officer")
    assert v.state.user("w").enc_key == v.w.public.encryption_key


def test_the_first_registration_must_be_the_anchor_admin() -> None:
    admin, mallory = who("admin"), who("mallory")
    state = S.TrustState.start(S.Anchor(VAULT, "admin", admin.public.signing_key))
    with pytest.raises(IntegrityError, match="founding admin"):
        state.apply(register(mallory, ["admin"]), seq=0)
    # The anchor admin's name with another key: refused too.
    impostor = Identity.generate("admin")
    with pytest.raises(IntegrityError, match="founding admin"):
        state.apply(register(impostor, ["admin"]), seq=0)


def test_a_registration_replayed_from_another_vault_is_refused(v: Vault) -> None:
    other = S.sign(
        {
            **json.loads(register(who("x"), ["staff"], v.admin).payload),
            "vault": "f" * 32,
        },
        [v.admin],
    )
    v.refused(other, "another vault")


def test_staff_cannot_register_anyone(v: Vault) -> None:
    v.refused(register(who("x"), ["staff"], v.w), "admin's signature")


def test_a_registration_needs_the_new_users_own_key(v: Vault) -> None:
    x = who("x")
    forged = S.sign(json.loads(register(x, ["staff"]).payload), [v.admin])
    v.refused(forged, "own key")


def test_an_admin_alone_cannot_make_an_officer_once_one_exists(v: Vault) -> None:
    v.refused(register(who("x"), ["officer"], v.admin), "countersignature")
    v.refused(register(who("y"), ["officer"], v.admin, v.w), "countersignature")


def test_the_founding_admin_countersigns_only_the_first_officer() -> None:
    admin = who("admin")
    state = S.TrustState.start(S.Anchor(VAULT, "admin", admin.public.signing_key))
    state.apply(register(admin, ["admin"]), seq=0)
    second_admin = who("b")
    state.apply(register(second_admin, ["admin"], admin), seq=1)
    # Another admin is not the anchor: it cannot make the first officer.
    with pytest.raises(IntegrityError, match="countersignature"):
        state.apply(register(who("o"), ["officer"], second_admin), seq=2)
    state.apply(register(who("o"), ["officer"], admin), seq=2)
    assert state.had_officer


def test_a_name_cannot_be_registered_twice(v: Vault) -> None:
    v.refused(register(Identity.generate("w"), ["staff"], v.admin), "already registered")


def test_a_disabled_admin_signs_nothing(v: Vault) -> None:
    v.apply(statement("user.disable", v.admin, user="admin2"))
    v.refused(register(who("x"), ["staff"], v.admin2), "admin's signature")
    assert not v.state.is_active("admin2")
    assert v.state.was_active("admin2", "admin", 2) and not v.state.was_active("admin2", "admin", 9)


def test_disabling_needs_another_admin(v: Vault) -> None:
    v.refused(statement("user.disable", v.admin2, user="admin2"), "another active admin")
    v.refused(statement("user.disable", v.o1, user="w"), "another active admin")


def test_a_key_renewal_needs_old_key_new_key_and_an_admin(v: Vault) -> None:
    new = Identity.generate("w")
    body = {
        "user": "w",
        "enc_key": new.public.encryption_key.hex(),
        "sign_key": new.public.signing_key.hex(),
    }
    v.refused(statement("user.renew", v.w, new, **body), "admin")
    v.refused(statement("user.renew", new, v.admin, **body), "old and new")
    v.apply(statement("user.renew", v.w, new, v.admin, **body))
    # The old key no longer counts: a registration the old key signs is refused.
    v.refused(register(who("x"), ["staff"], v.w), "admin's signature")
    assert v.state.user("w").sign_key == new.public.signing_key


def custodian(v: Vault) -> bytes:
    public = secrets.token_bytes(32)
    v.apply(statement("custodian.create", v.o1, generation=1, public_key=public.hex(), holder="o1"))
    return public


def test_only_an_officer_creates_the_custodian_key(v: Vault) -> None:
    public = secrets.token_bytes(32).hex()
    v.refused(
        statement("custodian.create", v.w, generation=1, public_key=public, holder="w"),
        "active officer",
    )
    v.refused(
        statement("custodian.create", v.admin, generation=1, public_key=public, holder="o1"),
        "active officer",
    )
    custodian(v)
    assert v.state.active_holders(1) == {"o1"}
    v.refused(
        statement("custodian.create", v.o2, generation=1, public_key=public, holder="o2"),
        "already exists",
    )


def test_sharing_the_custodian_to_staff_is_refused(v: Vault) -> None:
    """Attack 1 and 2 of issue 12, at the statement level: whatever the tables say,
    a holder is only who a verified statement names."""
    custodian(v)
    v.refused(statement("custodian.share", v.o1, generation=1, to="w"), "not an active officer")
    v.refused(statement("custodian.share", v.o2, generation=1, to="o2"), "another active holder")
    v.apply(statement("custodian.share", v.o1, generation=1, to="o2"))
    assert v.state.active_holders(1) == {"o1", "o2"}


def test_a_rotation_keeps_only_active_officers(v: Vault) -> None:
    custodian(v)
    v.apply(statement("custodian.share", v.o1, generation=1, to="o2"))
    new = secrets.token_bytes(32).hex()
    v.refused(
        statement(
            "custodian.rotate", v.o1, generation=2, previous=1, public_key=new, holders=["o1", "w"]
        ),
        "active officer",
    )
    v.refused(
        statement(
            "custodian.rotate", v.w, generation=2, previous=1, public_key=new, holders=["o1"]
        ),
        "active holder",
    )
    v.apply(statement("user.disable", v.admin, user="o2"))
    assert v.state.active_holders(1) == {"o1"}
    v.apply(
        statement(
            "custodian.rotate", v.o1, generation=2, previous=1, public_key=new, holders=["o1"]
        )
    )
    assert v.state.current_custodian() == (2, bytes.fromhex(new))


def record_rows(ct: bytes = b"ciphertext") -> dict[str, object]:
    return {
        "record": "a" * 32,
        "version": 1,
        "type_name": "child",
        "consent": {"purposes": ["case_management"]},
        "metadata": {},
        "fields": [("name", 1, ct), ("sex", 1, b"x")],
        "keyblob": b"blob",
    }


def test_a_record_statement_binds_every_row(v: Vault) -> None:
    rows = record_rows()
    env = S.sign(S.record_statement(vault_id=VAULT, at=AT, **rows), [v.w])  # type: ignore[arg-type]
    checked = S.verify_record(env, v.state, written_at=v.seq, **rows)  # type: ignore[arg-type]
    assert checked.writer == "w" and checked.fields["name"][0] == 1
    for change in (
        {"fields": [("name", 1, b"forged"), ("sex", 1, b"x")]},
        {"keyblob": b"other"},
        {"consent": {"purposes": ["statistics"]}},
        {"metadata": {"district": "x"}},
        {"version": 2},
    ):
        with pytest.raises(IntegrityError):
            S.verify_record(env, v.state, written_at=v.seq, **{**rows, **change})  # type: ignore[arg-type]


def test_a_record_signed_by_an_admin_or_a_stranger_is_refused(v: Vault) -> None:
    rows = record_rows()
    for signer in (v.admin, who("w")):  # an admin; a stranger using a registered name
        env = S.sign(S.record_statement(vault_id=VAULT, at=AT, **rows), [signer])  # type: ignore[arg-type]
        with pytest.raises(IntegrityError, match="entitled"):
            S.verify_record(env, v.state, written_at=v.seq, **rows)  # type: ignore[arg-type]


def test_a_correction_must_be_signed_by_an_officer(v: Vault) -> None:
    rows = {**record_rows(), "version": 2}
    env = S.sign(S.record_statement(vault_id=VAULT, at=AT, **rows), [v.w])  # type: ignore[arg-type]
    with pytest.raises(IntegrityError, match="entitled"):
        S.verify_record(env, v.state, written_at=v.seq, **rows)  # type: ignore[arg-type]
    env = S.sign(S.record_statement(vault_id=VAULT, at=AT, **rows), [v.o1])  # type: ignore[arg-type]
    S.verify_record(env, v.state, written_at=v.seq, **rows)  # type: ignore[arg-type]


def test_a_record_written_after_its_writer_was_disabled_is_refused(v: Vault) -> None:
    rows = record_rows()
    env = S.sign(S.record_statement(vault_id=VAULT, at=AT, **rows), [v.w])  # type: ignore[arg-type]
    written = v.seq
    v.seq += 1  # the record's own log entry
    v.apply(statement("user.disable", v.admin, user="w"))
    S.verify_record(env, v.state, written_at=written, **rows)  # type: ignore[arg-type]
    with pytest.raises(IntegrityError, match="entitled"):
        S.verify_record(env, v.state, written_at=v.seq, **rows)  # type: ignore[arg-type]


def test_the_trust_state_round_trips_and_is_bound_to_its_anchor(v: Vault) -> None:
    custodian(v)
    saved = v.state.to_bytes()
    again = S.TrustState.from_bytes(saved, v.anchor)
    assert again.to_bytes() == saved
    other = S.Anchor("f" * 32, "admin", v.admin.public.signing_key)
    with pytest.raises(IntegrityError, match="another anchor"):
        S.TrustState.from_bytes(saved, other)


def test_the_anchor_fingerprint_is_stable_and_readable(v: Vault) -> None:
    fp = v.anchor.fingerprint()
    assert fp == S.Anchor.from_json(v.anchor.to_json()).fingerprint()
    assert len(fp.split(" ")) == 8 and all(len(g) == 4 for g in fp.split(" "))
    other = S.Anchor(VAULT, "admin", who("admin").public.signing_key)
    assert other.fingerprint() != fp


def test_an_envelope_round_trips_and_refuses_a_flipped_byte(v: Vault) -> None:
    env = register(who("x"), ["staff"], v.admin)
    assert S.Envelope.from_bytes(env.to_bytes()) == env
    payload = bytearray(env.payload)
    payload[5] ^= 1
    flipped = S.Envelope(bytes(payload), env.signatures)
    with pytest.raises(IntegrityError):
        v.state.apply(flipped, seq=v.seq)


def test_a_non_canonical_payload_is_refused() -> None:
    env = S.Envelope(b'{"v": 1}', (("a", b"\x00" * 64),))
    with pytest.raises(IntegrityError, match="canonical"):
        env.statement()


@given(st.binary(max_size=2000))
def test_envelope_parser_raises_only_integrity_errors_on_bytes(data: bytes) -> None:
    with contextlib.suppress(IntegrityError):
        S.Envelope.from_bytes(data)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=10), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_envelope_parser_raises_only_integrity_errors_on_json(obj: object) -> None:
    with contextlib.suppress(IntegrityError):
        S.Envelope.from_json(obj)


@given(st.dictionaries(st.sampled_from(["v", "kind", "vault", "at", "user", "roles"]), st.text()))
def test_trust_state_refuses_arbitrary_statements_without_changing(body: dict[str, str]) -> None:
    v = Vault()
    env = S.sign(body, [v.admin])
    before = v.state.to_bytes()
    try:
        v.state.apply(env, seq=v.seq)
    except IntegrityError:
        assert v.state.to_bytes() == before


def test_dsse_pae_matches_the_specification() -> None:
    # DSSE v1 PAE: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body.
    assert S.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    envelope = S.Envelope(b"{}", (("a", b"\x01" * 64),)).to_json()
    assert base64.b64decode(envelope["payload"]) == b"{}"
