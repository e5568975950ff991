"""Issue 12, enrolment without the admin knowing a passphrase:
`user invite` (admin) -> `user enroll` (the person's own process) ->
`user add --request` (admin). The admin's process never receives the new
passphrase; a tampered request, a reused invite, an expired invite and an
invite of another vault are refused."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from childvault.keys import Identity, IntegrityError, KeySlots, WrongPassphrase
from childvault.vault import Vault, _audit
from tests.conftest import World, add_children
from tests.test_cli import js, run

NEW_PASSPHRASE = "only-nina-knows-this"


def _invite(world: World, name: str, *roles: str, out: Path) -> dict[str, object]:
    args = ["--json", "user", "invite", name, "--out", str(out)]
    for role in roles:
        args += ["--role", role]
    r = run(world, "admin", *args)
    assert r.exit_code == 0, r.output
    return js(r)


def _enroll(world: World, invite: Path, fingerprint: str, tmp_path: Path) -> Path:
    """The new person's own process: no acting user, no admin passphrase in its environment."""
    secret = tmp_path / "nina-pass"
    secret.write_text(NEW_PASSPHRASE + "\n")
    out = tmp_path / "nina.request.json"
    r = run(
        world,
        None,
        "--json",
        "user",
        "enroll",
        "--invite",
        str(invite),
        "--fingerprint",
        fingerprint,
        "--passphrase-file",
        str(secret),
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    secret.unlink()
    return out


def test_enrolment_end_to_end_the_admin_never_sees_the_passphrase(
    world: World, tmp_path: Path
) -> None:
    invite = tmp_path / "nina.invite.json"
    done = _invite(world, "nina", "staff", out=invite)
    assert NEW_PASSPHRASE not in invite.read_text()
    request = _enroll(world, invite, str(done["fingerprint"]), tmp_path)
    assert NEW_PASSPHRASE not in request.read_text()
    # The admin's process: its arguments and environment hold only the admin's secrets.
    r = run(world, "admin", "--json", "user", "add", "--request", str(request))
    assert r.exit_code == 0, r.output
    assert js(r)["user"]["name"] == "nina" and js(r)["user"]["roles"] == ["staff"]
    path = world.home / "identities" / "nina.id"
    with pytest.raises(WrongPassphrase):
        Identity.load(path, "admin-passphrase-1")
    nina = Identity.load(path, NEW_PASSPHRASE)
    assert nina.anchor is not None and nina.anchor == world.ids["admin"].anchor
    # Nina works: she writes a record; the log carries her verified registration.
    with Vault.open(world.home, identity=nina, clock=world.clock) as v:
        add_children(v, 1)
    with world.open("admin") as v:
        v.verify_audit()
        state = v._session.trust()
        assert state is not None and state.is_active("nina", "staff")
        entries = [
            _audit.decode_entry(e)
            for e in v._session.db.audit.entries_by_action(("user.invite", "user.add"))
        ]
    assert [e["action"] for e in entries][-2:] == ["user.invite", "user.add"]
    assert entries[-1]["detail"]["invite"] == entries[-2]["detail"]["invite"]


def test_a_reused_invite_is_refused(world: World, tmp_path: Path) -> None:
    invite = tmp_path / "nina.invite.json"
    done = _invite(world, "nina", "staff", out=invite)
    request = _enroll(world, invite, str(done["fingerprint"]), tmp_path)
    with world.open("admin") as v:
        v.add_user_from_request(request.read_bytes())
    # A second request made from the same invite, with other keys.
    second = Identity.generate("nina")
    from childvault.vault._registrations import enrol, read_invite

    again = enrol(read_invite(invite.read_bytes()), second, "2026-11-30T08:00:00Z")
    with world.open("admin") as v, pytest.raises(IntegrityError, match="used already"):
        v.add_user_from_request(again)


def test_a_tampered_request_is_refused(world: World, tmp_path: Path) -> None:
    invite = tmp_path / "w.invite.json"
    done = _invite(world, "nina", "staff", out=invite)
    request = _enroll(world, invite, str(done["fingerprint"]), tmp_path)
    doc = json.loads(request.read_text())
    # The person (or someone on the way) raises the role to admin: the invite is signed.
    doc["invite"]["invite"]["roles"] = ["admin"]
    with world.open("admin") as v, pytest.raises(IntegrityError, match="refused"):
        v.add_user_from_request(json.dumps(doc).encode())
    # Another key swapped into the registration: not signed by the key it registers.
    doc = json.loads(request.read_text())
    from childvault.vault._statements import Envelope

    reg = Envelope.from_json(doc["registration"]).statement()
    reg["enc_key"] = Identity.generate("x").public.encryption_key.hex()
    from childvault.vault._statements import sign

    doc["registration"] = sign(reg, [Identity.generate("nina")]).to_json()
    with world.open("admin") as v, pytest.raises(IntegrityError, match="refused"):
        v.add_user_from_request(json.dumps(doc).encode())
    with world.open("admin") as v:
        assert "nina" not in [u.name for u in v.users()]
        denied = [
            _audit.decode_entry(e)
            for e in v._session.db.audit.entries_by_action(("user.add",))
            if _audit.decode_entry(e)["outcome"] == "denied"
        ]
    assert len(denied) == 2
    assert "nina" not in KeySlots(world.home / "keyslots.json").users()


def test_an_expired_invite_is_refused(world: World, tmp_path: Path) -> None:
    with world.open("admin") as v:
        done = v.invite_user("nina", ["staff"], valid_for=timedelta(hours=1))
    request = Vault.enroll(done.invite, NEW_PASSPHRASE, tmp_path / "nina.id")
    world.clock.advance(hours=2)
    with world.open("admin") as v, pytest.raises(IntegrityError, match="expired"):
        v.add_user_from_request(request)


def test_an_invite_from_another_vault_is_refused(world: World, tmp_path: Path) -> None:
    other = tmp_path / "other"
    with Vault.init(
        other, institution="别处", admin="admin", admin_passphrase="other-admin-pass"
    ) as v:
        done = v.invite_user("nina", ["staff"])
    request = Vault.enroll(done.invite, NEW_PASSPHRASE, tmp_path / "nina.id")
    with world.open("admin") as v, pytest.raises(IntegrityError, match="another vault"):
        v.add_user_from_request(request)


def test_an_invite_not_in_the_log_is_refused(world: World, tmp_path: Path) -> None:
    """An admin's signed invite that was never logged (made offline) is refused."""
    import secrets

    from childvault.vault._registrations import anchor_of, make_invite

    anchor = anchor_of(world.ids["admin"])
    assert anchor is not None
    data = make_invite(
        world.ids["admin"],
        anchor,
        "nina",
        ["staff"],
        secrets.token_hex(32),
        "2099-01-01T00:00:00.000000Z",
    )
    request = Vault.enroll(data, NEW_PASSPHRASE, tmp_path / "nina.id")
    with world.open("admin") as v, pytest.raises(IntegrityError, match="not issued"):
        v.add_user_from_request(request)


def test_a_wrong_fingerprint_stops_enrolment_before_any_key_is_made(
    world: World, tmp_path: Path
) -> None:
    invite = tmp_path / "nina.invite.json"
    _invite(world, "nina", "staff", out=invite)
    r = run(
        world,
        None,
        "user",
        "enroll",
        "--invite",
        str(invite),
        "--fingerprint",
        "0000 0000 0000 0000 0000 0000 0000 0000",
        "--identity",
        str(tmp_path / "nina.id"),
    )
    assert r.exit_code == 4 and "fingerprint" in r.stderr
    assert not (tmp_path / "nina.id").exists()


def test_officer_by_request_waits_for_an_officers_countersignature(
    world: World, tmp_path: Path
) -> None:
    with world.open("admin") as v:
        done = v.invite_user("olga", ["officer"])
    request = Vault.enroll(done.invite, NEW_PASSPHRASE, world.home / "identities" / "olga.id")
    with world.open("admin") as v:
        info = v.add_user_from_request(request)
        state = v._session.trust()
        assert state is not None and not state.is_active("olga")
    assert not info.can_approve
    with world.open("officer1") as v:
        v.share_custodian("olga")
        state = v._session.trust()
        assert state is not None and state.is_active("olga", "officer")


def test_enroll_into_an_empty_workstation_home_makes_the_identities_folder(
    world: World, tmp_path: Path
) -> None:
    """Regression: `user enroll --home DIR` on a new workstation (no DIR/identities)
    ended in an internal FileNotFoundError."""
    from click.testing import CliRunner

    from childvault.cli.main import cli

    invite = tmp_path / "nina.invite.json"
    done = _invite(world, "nina", "staff", out=invite)
    station = tmp_path / "station"
    station.mkdir()
    secret = tmp_path / "nina-pass"
    secret.write_text(NEW_PASSPHRASE + "\n")
    args = ["--home", str(station), "user", "enroll", "--invite", str(invite)]
    args += ["--fingerprint", str(done["fingerprint"]), "--passphrase-file", str(secret)]
    args += ["--out", str(tmp_path / "nina.request.json")]
    r = CliRunner().invoke(cli, args, env={"LANG": "C.UTF-8"})
    assert r.exit_code == 0, r.output
    made = station / "identities" / "nina.id"
    assert Identity.load(made, NEW_PASSPHRASE).name == "nina"
    assert (made.parent.stat().st_mode & 0o777) == 0o700
    # An explicit --identity in a folder that does not exist: a usage error naming it.
    args = ["user", "enroll", "--invite", str(invite), "--fingerprint", str(done["fingerprint"])]
    args += ["--passphrase-file", str(secret), "--identity", str(tmp_path / "nope" / "n.id")]
    args += ["--out", str(tmp_path / "other.request.json")]
    r = CliRunner().invoke(cli, args, env={"LANG": "C.UTF-8"})
    assert r.exit_code == 2 and "nope" in r.output
    assert not (tmp_path / "other.request.json").exists()
