"""Entrusted-organisation accounts (受委托方; P-16, M-10; issue 15 finding 6).

There was no account type for an organisation the institution entrusts with
processing. Now ``user add --organisation --agreement --expires`` registers a
staff account whose organisation, agreement reference and expiry are part of
its SIGNED registration statement; from the day after the expiry (the legal
date in the vault's time zone) every operation of the account is refused, and
no row an insider can edit extends it.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from childvault.keys import AccessDenied, ChildVaultError, Identity, IntegrityError, UsageError
from childvault.keys._encoding import b64
from childvault.vault import Vault, _audit
from childvault.vault._config import Home
from childvault.vault._registrations import (
    REQUEST_FORMAT,
    _binding_message,
    read_invite,
    register_statement,
)
from childvault.vault._statements import Envelope, TrustState, sign
from tests._insider import Insider
from tests.conftest import World, add_children
from tests.test_cli import js, run

PASS = "contractor-passphrase"
EXPIRES = date(2026, 12, 31)
TERMS = {"organisation": "阳光社工服务中心", "agreement": "WT-2026-017", "expires": EXPIRES}


def _add_contractor(world: World, name: str = "contractor") -> None:
    with world.open("admin") as v:
        info = v.add_entrusted_user(name, PASS, **TERMS)  # type: ignore[arg-type]
    assert info.roles == ("staff",)
    assert info.entrusted == {
        "organisation": "阳光社工服务中心",
        "agreement": "WT-2026-017",
        "expires": "2026-12-31",
    }
    world.ids[name] = Identity.load(Home(world.home).identity(name), PASS)


def _registration(world: World, name: str) -> tuple[int, Envelope]:
    with world.open("admin") as v:
        db = v._session.db
        for raw in db.audit.entries_by_action(("user.add",)):
            obj = _audit.decode_entry(raw)
            if obj["detail"].get("user") == name:
                seq = int(obj["seq"])
                stored = db.statements.get(seq)
                assert stored is not None
                return seq, Envelope.from_bytes(stored)
    raise AssertionError(f"no user.add of {name}")


def test_the_terms_are_in_the_signed_registration_and_listed(world: World) -> None:
    _add_contractor(world)
    _, envelope = _registration(world, "contractor")
    statement = envelope.statement()
    assert statement["entrusted"] == {
        "agreement": "WT-2026-017",
        "expires": "2026-12-31",
        "organisation": "阳光社工服务中心",
    }
    with world.open("officer1") as v:
        listed = {u.name: u for u in v.users()}
        state = v._session.trust()
        assert state is not None
        assert state.user("contractor").entrusted == statement["entrusted"]
    assert listed["contractor"].to_json()["entrusted"] == {
        **statement["entrusted"],
        "expired": False,
    }
    # Everyone else's JSON keeps its shape.
    assert "entrusted" not in listed["worker1"].to_json()


def test_the_account_works_until_the_expiry_and_is_refused_after(world: World) -> None:
    _add_contractor(world)
    with world.open("contractor") as v:
        add_children(v, 1)
    # 2026-12-31 15:59 UTC is still the 31st in Beijing: the last day of the agreement.
    world.clock.set(datetime(2026, 12, 31, 15, 59, tzinfo=UTC))
    with world.open("contractor") as v:
        assert len(list(v.list_records())) == 1
    # 16:00 UTC is 2027-01-01 in Beijing: refused at every operation, naming the agreement.
    world.clock.set(datetime(2026, 12, 31, 16, 0, tzinfo=UTC))
    with world.open("contractor") as v:
        with pytest.raises(AccessDenied, match="WT-2026-017"):
            list(v.list_records())
        with pytest.raises(AccessDenied, match="agreement WT-2026-017 ended on 2026-12-31"):
            add_children(v, 1)
        with pytest.raises(AccessDenied, match="WT-2026-017"):
            v.request_access([], ["name"], "case_management", "家访")
    with world.open("admin") as v:
        denied = [
            _audit.decode_entry(e)
            for e in v._session.db.audit.entries_by_action(("record.create",))
            if _audit.decode_entry(e)["outcome"] == "denied"
        ]
        listed = {u.name: u for u in v.users()}
    assert denied and denied[-1]["detail"]["reason"] == "entrusted agreement ended"
    assert listed["contractor"].expired


def test_staff_only_and_sane_terms(world: World) -> None:
    with world.open("admin") as v:
        # The facade always asks for staff; the service refuses any other role.
        terms = {"organisation": "o", "agreement": "a", "expires": "2026-12-31"}
        with pytest.raises(UsageError, match="only have the staff role"):
            v._users.add_user("x1", ["officer"], PASS, entrusted=terms)
        with pytest.raises(UsageError, match="has passed"):
            v.add_entrusted_user(
                "x2", PASS, organisation="o", agreement="a", expires=date(2026, 1, 1)
            )
        with pytest.raises(UsageError, match="one line"):
            v.add_entrusted_user("x3", PASS, organisation="o\nx", agreement="a", expires=EXPIRES)
        with pytest.raises(UsageError):
            v.add_entrusted_user("x4", PASS, organisation="o", agreement="a", expires="2027-01-01")  # type: ignore[arg-type]


def test_a_statement_giving_an_entrusted_officer_is_refused(world: World) -> None:
    """The replay refuses the terms on any role but staff, whoever signed it."""
    with world.open("admin") as v:
        state = v._session.trust()
        assert state is not None
        trial = TrustState.from_bytes(state.to_bytes(), state.anchor)
        new = Identity.generate("forged")
        terms = {"organisation": "o", "agreement": "a", "expires": "2027-01-01"}
        statement = register_statement(
            v._session.vault_id,
            "2026-11-24T00:00:00Z",
            "forged",
            ["staff", "officer"],
            new.public,
            terms,
        )
        envelope = sign(statement, [new, world.ids["admin"], world.ids["officer1"]])
        with pytest.raises(IntegrityError, match="staff role"):
            trial.apply(envelope, seq=10_000)
        bad = {**statement, "roles": ["staff"], "entrusted": {**terms, "extra": "x"}}
        with pytest.raises(IntegrityError, match="entrusted member"):
            trial.apply(sign(bad, [new, world.ids["admin"]]), seq=10_000)


def test_an_insider_cannot_extend_the_expiry(world: World) -> None:
    """The row is not the authority: editing the users row, the log detail or the
    stored statement does not give the account another day."""
    _add_contractor(world)
    with world.open("contractor") as v:
        add_children(v, 1)  # the contractor has worked (and verified the log) before
    seq, envelope = _registration(world, "contractor")
    world.clock.set(datetime(2027, 1, 2, tzinfo=UTC))
    with Insider(world, "admin") as db:
        # The users row holds no expiry; editing it (here the date) changes nothing.
        db.update("users", {"created_at": "2027-01-01T00:00:00Z"}, {"name": "contractor"})
    with world.open("contractor") as v, pytest.raises(AccessDenied, match="WT-2026-017"):
        list(v.list_records())
    with Insider(world, "admin") as db:
        # A registration re-signed by the contractor alone with a later expiry.
        forged = envelope.statement()
        forged["entrusted"]["expires"] = "2099-12-31"
        me = world.ids["contractor"]
        db.update("statements", {"envelope": sign(forged, [me]).to_bytes()}, {"seq": seq})
    with world.open("contractor") as v:
        # Still refused, from the state the contractor last verified.
        with pytest.raises(AccessDenied, match="WT-2026-017"):
            list(v.list_records())
        with pytest.raises(ChildVaultError):
            add_children(v, 1)
    # Replayed from the anchor, the forged statement does not verify.
    with world.open("officer1") as v, pytest.raises(IntegrityError):
        v._session.verify_trust_from_anchor()


def test_old_registrations_without_terms_still_verify(world: World) -> None:
    """Statements made before entrusted accounts (no member) replay unchanged."""
    with world.open("admin") as v:
        v._session.verify_trust_from_anchor()
        state = v._session.trust()
        assert state is not None
        assert state.user("worker1").entrusted is None
        assert "entrusted" not in state.user("worker1").to_json()


def test_cli_user_add_entrusted_and_list(world: World, tmp_path: Path) -> None:
    pp = tmp_path / "pp"
    pp.write_text(PASS + "\n")
    args = ["--json", "user", "add", "contractor", "--role", "staff", "--passphrase-file", str(pp)]
    terms = ["--organisation", "阳光社工服务中心", "--agreement", "WT-2026-017", "--expires"]
    r = run(world, "admin", *args, "--role", "officer", *terms, "2026-12-31")
    assert r.exit_code != 0 and "staff role" in r.output
    r = run(world, "admin", *args, "--organisation", "x")
    assert r.exit_code != 0 and "--agreement" in r.output
    r = run(world, "admin", *args, *terms, "31/12/2026")
    assert r.exit_code != 0 and "YYYY-MM-DD" in r.output
    r = run(world, "admin", *args, *terms, "2026-12-31")
    assert r.exit_code == 0, r.output
    assert js(r)["user"]["entrusted"]["agreement"] == "WT-2026-017"
    listed = js(run(world, "admin", "--json", "user", "list"))["users"]
    mine = next(u for u in listed if u["name"] == "contractor")
    assert mine["entrusted"] == {
        "organisation": "阳光社工服务中心",
        "agreement": "WT-2026-017",
        "expires": "2026-12-31",
        "expired": False,
    }
    text = run(world, "admin", "user", "list").output
    assert "entrusted: 阳光社工服务中心, agreement WT-2026-017, until 2026-12-31" in text


def test_an_invite_carries_the_terms_into_the_signed_registration(
    world: World, tmp_path: Path
) -> None:
    with world.open("admin") as v:
        done = v.invite_entrusted_user("nina", **TERMS)  # type: ignore[arg-type]
    assert read_invite(done.invite).entrusted == {
        "agreement": "WT-2026-017",
        "expires": "2026-12-31",
        "organisation": "阳光社工服务中心",
    }
    request = Vault.enroll(done.invite, PASS, tmp_path / "nina.id", clock=world.clock)
    with world.open("admin") as v:
        info = v.add_user_from_request(request)
        state = v._session.trust()
    assert info.entrusted is not None and info.entrusted["agreement"] == "WT-2026-017"
    assert state is not None and state.user("nina").entrusted == info.entrusted


def test_a_request_that_drops_the_invites_terms_is_refused(world: World, tmp_path: Path) -> None:
    """The new person cannot enrol without the terms the admin's invite set."""
    with world.open("admin") as v:
        done = v.invite_entrusted_user("nina", **TERMS)  # type: ignore[arg-type]
    invite = read_invite(done.invite)
    me = Identity.generate("nina")
    statement = register_statement(
        invite.anchor.vault_id, "2026-11-24T00:00:00Z", "nina", ["staff"], me.public
    )
    registration = sign(statement, [me])
    doc = {
        "format": REQUEST_FORMAT,
        "invite": {"invite": invite.payload, "sig": b64(invite.sig)},
        "registration": registration.to_json(),
        "binding": b64(me.sign(_binding_message(invite, registration))),
    }
    request = json.dumps(doc).encode("utf-8")
    with world.open("admin") as v, pytest.raises(IntegrityError, match="enrolment request refused"):
        v.add_user_from_request(request)
