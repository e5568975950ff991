"""Admin and officer operations over ``childvault serve`` (issue 13).

Enrolment (``user invite`` / ``user enroll`` / ``user add --request``),
``keys share``, ``keys rotate``, ``user disable`` and ``passphrase change``
run from workstations with ``--server`` exactly as they run locally. The
client does all cryptography and seals every key slot; the server stores a
slot only if the verified entries of the same transaction allow it
(docs/server.md). Attacks use the library client in this process to send
what an honest client never would: each is refused and nothing is stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from childvault.keys import AccessDenied, ChildVaultError, Identity, KeySlots, PublicIdentity
from childvault.keys._slots import sealed_slot
from childvault.vault import _statements
from childvault.vault._audit import Event
from childvault.vault._backend import UserRow
from childvault.vault._registrations import (
    anchor_of,
    append_with_statements,
    register_statement,
    user_detail,
    with_statement,
)
from childvault.vault._time import iso
from tests._sample import lasting
from tests.server._vaultserver import (
    CLI_TIMEOUT,
    VaultServer,
    passphrase,
    served_with_admin_workstation,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The test vault, served; the admin also gets a workstation; records imported."""
    yield from served_with_admin_workstation(tmp_path_factory.mktemp("admin-vault"))


def _slots(vs: VaultServer) -> list[str]:
    return KeySlots(vs.home / "keyslots.json").users()


def _fingerprint(vs: VaultServer) -> str:
    anchor = anchor_of(vs.identity("admin"))
    assert anchor is not None
    return anchor.fingerprint()


def _enrol(vs: VaultServer, name: str, role: str) -> None:
    """Invite (admin), enrol (the person, own process and directory), register (admin)."""
    invite = vs.root / f"{name}.invite.json"
    request = vs.root / f"{name}.request.json"
    vs.cli("admin", "user", "invite", name, "--role", role, "--out", str(invite))
    pw = vs.root / f"{name}.pw"
    pw.write_text(passphrase(name), encoding="utf-8")
    env = dict(os.environ)
    env.pop("CHILDVAULT_HOME", None)
    env.pop("CHILDVAULT_SERVER", None)
    (vs.workstation(name) / "identities").mkdir(parents=True, mode=0o700)
    cmd = [sys.executable, "-m", "childvault", "--home", str(vs.workstation(name))]
    cmd += ["user", "enroll", "--invite", str(invite), "--fingerprint", _fingerprint(vs)]
    cmd += ["--passphrase-file", str(pw), "--out", str(request)]
    done = subprocess.run(cmd, cwd=vs.root, env=env, capture_output=True, timeout=CLI_TIMEOUT)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    vs.cli("admin", "user", "add", "--request", str(request))


def test_enrolment_over_the_server(served: VaultServer) -> None:
    vs = served
    _enrol(vs, "worker5", "staff")
    assert "worker5" in _slots(vs)
    # The new person works from their own workstation right away.
    listing = vs.cli_json("worker5", "list")
    assert listing["records"]
    users = {u["name"]: u for u in vs.cli_json("admin", "user", "list")["users"]}
    assert users["worker5"]["roles"] == ["staff"]
    vs.cli("worker5", "audit", "verify")


def test_a_new_officer_is_enrolled_then_given_the_custodian_key(served: VaultServer) -> None:
    vs = served
    _enrol(vs, "officer3", "officer")
    info = {u["name"]: u for u in vs.cli_json("admin", "user", "list")["users"]}["officer3"]
    assert not info["can_approve"]
    vs.cli("officer1", "keys", "share", "officer3")
    info = {u["name"]: u for u in vs.cli_json("admin", "user", "list")["users"]}["officer3"]
    assert info["can_approve"]
    # officer3's slot on the server now holds the custodian key (sealed to them only).
    secrets_ = KeySlots(vs.home / "keyslots.json").open(vs.identity("officer3"), _vault_id(vs))
    assert any(k.startswith("custodian/") for k in secrets_)
    ids = lasting(vs.cli_json("worker1", "list")["records"], 1)
    req = vs.cli_json(
        "worker1", "request", "--record", ids[0], "--field", "name",
        "--purpose", "case_management", "--reason", "home visit",
    )  # fmt: skip
    token = vs.root / "officer3.token"
    vs.cli("officer3", "approve", req["request_id"], "--out", str(token))
    vs.cli("worker1", "read", ids[0], "--grant", f"@{token}")
    vs.cli("officer3", "audit", "verify")


def test_disabling_a_user_over_the_server(served: VaultServer) -> None:
    vs = served
    assert "worker4" in _slots(vs)
    vs.cli("worker4", "list")
    vs.cli("admin", "user", "disable", "worker4", "--reason", "left the institution")
    assert "worker4" not in _slots(vs)
    refused = vs.cli("worker4", "list", expect=None)
    assert refused.returncode != 0
    vs.cli("admin", "audit", "verify")


def test_rotating_the_custodian_key_over_the_server(served: VaultServer) -> None:
    vs = served
    before = _custodian_generations(vs, "officer2")
    done = vs.cli_json("officer1", "keys", "rotate")
    assert done["generation"] == max(before) + 1
    # Every holder's slot holds exactly the new generation; no one else's holds any.
    assert _custodian_generations(vs, "officer2") == [done["generation"]]
    assert _custodian_generations(vs, "officer1") == [done["generation"]]
    assert _custodian_generations(vs, "worker1") == []
    vs.cli("officer2", "audit", "verify")
    ids = lasting(vs.cli_json("worker2", "list")["records"], 1)
    req = vs.cli_json(
        "worker2", "request", "--record", ids[0], "--field", "name",
        "--purpose", "case_management", "--reason", "after rotation",
    )  # fmt: skip
    token = vs.root / "rotated.token"
    vs.cli("officer2", "approve", req["request_id"], "--out", str(token))
    vs.cli("worker2", "read", ids[0], "--grant", f"@{token}")


def test_passphrase_change_on_a_workstation(served: VaultServer) -> None:
    vs = served
    new = vs.root / "worker3.newpw"
    new.write_text("a-new-passphrase-0123456789", encoding="utf-8")
    vs.cli("worker3", "passphrase", "change", "--passphrase-file", str(new))
    env = dict(os.environ, CHILDVAULT_PASSPHRASE="a-new-passphrase-0123456789")
    env.pop("CHILDVAULT_HOME", None)
    cmd = [sys.executable, "-m", "childvault", "--server", vs.url]
    cmd += ["--home", str(vs.workstation("worker3")), "--as", "worker3", "list", "--json"]
    done = subprocess.run(cmd, cwd=vs.root, env=env, capture_output=True, timeout=CLI_TIMEOUT)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["records"]
    # The old passphrase no longer opens the identity file.
    assert vs.cli("worker3", "list", expect=None).returncode != 0


def test_what_does_not_run_over_a_server_says_so(served: VaultServer) -> None:
    """Plain `user add` makes an identity file at the admin's desk: refused clearly, nothing
    logged (`keys renew` runs over a server now: tests/server/test_keys_renew_server.py)."""
    vs = served
    before = vs.cli_json("admin", "audit", "log", "--tail", "1")["entries"][-1]["entry"]["seq"]
    pw = vs.root / "nobody.pw"
    pw.write_text(passphrase("nobody"), encoding="utf-8")
    add = vs.cli(
        "admin", "user", "add", "nobody", "--role", "staff", "--passphrase-file", str(pw), expect=2
    )
    assert b"user invite" in add.stderr
    assert "nobody" not in _slots(vs)
    after = vs.cli_json("admin", "audit", "log", "--tail", "1")["entries"][-1]["entry"]["seq"]
    assert after == before
    assert sorted(p.name for p in (vs.workstation("worker1") / "identities").iterdir()) == [
        "worker1.id"
    ]


# -- attacks: each refused by the server, nothing stored


@pytest.mark.parametrize(
    ("repo", "method", "args"),
    [
        ("slots", "put", ("worker2", "AAAA")),
        ("users", "add", ()),
        ("custodians", "add_holder", (1, "worker1")),
    ],
)
def test_staff_cannot_call_admin_operations(
    served: VaultServer, repo: str, method: str, args: tuple[object, ...]
) -> None:
    vs = served
    with vs.connect("worker2") as staff:
        db = staff._session.db
        with pytest.raises(AccessDenied, match=rf"may not call {repo}\.{method}"), db.transaction():
            db.call(repo, method, args, {})  # type: ignore[attr-defined]
    assert any(r["reason"] == "role" and r["claimed_user"] == "worker2" for r in vs.refusals())


def test_an_admin_cannot_overwrite_another_users_slot(served: VaultServer) -> None:
    vs = served
    before = (vs.home / "keyslots.json").read_bytes()
    mallory = Identity.generate("worker2")
    with vs.connect("admin") as admin:
        db = admin._session.db
        slot = sealed_slot(mallory.public, _vault_id(vs), {"db": b"x" * 32})
        with pytest.raises(ChildVaultError, match="may not write the key slot"), db.transaction():
            db.call("slots", "put", ("worker2", slot), {})  # type: ignore[attr-defined]
    assert (vs.home / "keyslots.json").read_bytes() == before


def test_a_forged_registration_is_refused_and_nothing_stored(served: VaultServer) -> None:
    """A registration not signed by the key it registers does not verify at commit."""
    vs = served
    before = (vs.home / "keyslots.json").read_bytes()
    fake = Identity.generate("intruder")
    other = Identity.generate("intruder")
    with vs.connect("admin") as admin:
        s = admin._session
        moment = s.now()
        at = iso(moment)
        # Signed by the admin and a key other than the one registered.
        envelope = _statements.sign(
            register_statement(s.vault_id, at, "intruder", ("staff",), fake.public),
            [other, s.me],
        )
        detail = with_statement(user_detail("intruder", ("staff",), fake.public), envelope)
        refused = pytest.raises(ChildVaultError, match="refused, nothing stored")
        with refused, s.db.transaction():
            s.db.users.add(
                UserRow(
                    "intruder",
                    ("staff",),
                    fake.public.encryption_key,
                    fake.public.signing_key,
                    at,
                    "admin",
                )
            )
            s.key_slots().add(
                PublicIdentity("intruder", fake.public.encryption_key, fake.public.signing_key),
                s.vault_id,
                {"db": s.secrets["db"]},
            )
            append_with_statements(
                s.db, [(Event("admin", "user.add", detail=detail), envelope)], moment
            )
    assert (vs.home / "keyslots.json").read_bytes() == before
    with vs.connect("admin") as admin:
        assert admin._session.db.users.get("intruder") is None


def test_an_unsigned_disable_is_refused_and_the_slot_kept(served: VaultServer) -> None:
    """Removing a slot needs the user to be disabled by a verified statement."""
    vs = served
    assert "worker2" in _slots(vs)
    with vs.connect("admin") as admin:
        db = admin._session.db
        with pytest.raises(ChildVaultError, match="may not write the key slot"), db.transaction():
            admin._session.key_slots().remove("worker2")
    assert "worker2" in _slots(vs)


def _vault_id(vs: VaultServer) -> str:
    return str(json.loads((vs.home / "config.json").read_text(encoding="utf-8"))["vault_id"])


def _custodian_generations(vs: VaultServer, user: str) -> list[int]:
    ident = Identity.load(vs.workstation(user) / "identities" / f"{user}.id", passphrase(user))
    found = KeySlots(vs.home / "keyslots.json").open(ident, _vault_id(vs))
    return sorted(int(k.split("/")[1]) for k in found if k.startswith("custodian/"))
