"""``keys renew`` over ``childvault serve`` (issue 13).

The person's workstation makes the new identity (new key pairs, their new
passphrase, the anchor kept) and sends only the signed ``user.renew``
request with their key slot sealed to the new key; the admin approves from
their own workstation; the server stores the new public keys and the new
slot only after verifying the signed statements, and only the slot the
person's own signed request carries. After the approval the person runs
``keys renew --finish``: the new identity replaces the old file. Attacks
(an insider's edit of the pending request, an admin swapping the slot or
the keys) are refused and nothing is stored.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from childvault.keys import AccessDenied, ChildVaultError, Identity, KeySlots
from childvault.keys._slots import sealed_slot
from childvault.vault._remote._slots import RemoteSlots
from tests._insider import Insider
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
    yield from served_with_admin_workstation(tmp_path_factory.mktemp("renew-vault"))


def _cli(
    vs: VaultServer, user: str, secret: str, *args: str, expect: int | None = 0, lang: str = ""
) -> subprocess.CompletedProcess[bytes]:
    """``childvault --server URL --as USER ARGS`` on USER's workstation, unlocked by ``secret``."""
    env = dict(os.environ, CHILDVAULT_PASSPHRASE=secret)
    env.pop("CHILDVAULT_HOME", None)
    if lang:
        env["LANG"] = lang
        env.pop("LC_ALL", None)
        env.pop("LANGUAGE", None)
        env.pop("LC_MESSAGES", None)
    cmd = [sys.executable, "-m", "childvault", "--server", vs.url]
    cmd += ["--home", str(vs.workstation(user)), "--as", user, *args]
    done = subprocess.run(cmd, cwd=vs.root, env=env, capture_output=True, timeout=CLI_TIMEOUT)
    if expect is not None and done.returncode != expect:
        raise AssertionError(
            f"{' '.join(args)} as {user}: exit {done.returncode}, expected {expect}\n"
            f"{done.stdout.decode()}\n{done.stderr.decode()}"
        )
    return done


def _vault_id(vs: VaultServer) -> str:
    return str(json.loads((vs.home / "config.json").read_text(encoding="utf-8"))["vault_id"])


def _user_keys(vs: VaultServer, name: str) -> Any:
    with Insider(vs.home, vs.identity("worker4")) as insider:
        return insider.execute(f"SELECT enc_key, sign_key FROM users WHERE name = '{name}'")


def _new_pw(vs: VaultServer, user: str) -> tuple[str, Path]:
    secret = f"renewed-{user}-9876543210"
    path = vs.root / f"{user}.renewed.pw"
    path.write_text(secret, encoding="utf-8")
    return secret, path


def test_renewal_over_the_server(served: VaultServer) -> None:
    vs = served
    ids_ = vs.workstation("worker1") / "identities"
    old_file = (ids_ / "worker1.id").read_bytes()
    secret, pw = _new_pw(vs, "worker1")
    slots_before = (vs.home / "keyslots.json").read_bytes()
    asked = json.loads(
        vs.cli("worker1", "keys", "renew", "--passphrase-file", str(pw), "--json").stdout
    )
    # The new identity waits on the workstation, never in the server's home.
    assert Path(asked["identity"]) == ids_ / "worker1.renewing.id"
    assert not (vs.home / "identities" / "worker1.renewing.id").exists()
    new = Identity.load(ids_ / "worker1.renewing.id", secret)
    assert new.anchor == vs.identity("worker1").anchor
    # Until the approval nothing changes: the current identity still works.
    assert (vs.home / "keyslots.json").read_bytes() == slots_before
    vs.cli("worker1", "list")
    # Not approved yet: --finish refuses and leaves both files.
    early = _cli(vs, "worker1", secret, "keys", "renew", "--finish", expect=2)
    assert b"keys renew --approve worker1" in early.stderr
    assert (ids_ / "worker1.id").read_bytes() == old_file

    done = vs.cli("admin", "keys", "renew", "--approve", "worker1")
    assert b"--finish" in done.stdout
    # The server stored the new public keys and the slot sealed to them.
    ((enc, sign),) = _user_keys(vs, "worker1")
    assert (bytes(enc), bytes(sign)) == (new.public.encryption_key, new.public.signing_key)
    assert KeySlots(vs.home / "keyslots.json").open(new, _vault_id(vs))["db"]
    # The old identity opens no session any more.
    refused = vs.cli("worker1", "list", expect=None)
    assert refused.returncode != 0

    _cli(vs, "worker1", secret, "keys", "renew", "--finish")
    assert not (ids_ / "worker1.renewing.id").exists()
    assert (ids_ / "worker1.id").read_bytes() != old_file
    # A copy of the old file still opens with the old passphrase, and opens nothing.
    (ids_ / "old.id").write_bytes(old_file)
    old = Identity.load(ids_ / "old.id", passphrase("worker1"))
    (ids_ / "old.id").unlink()
    with pytest.raises(AccessDenied):
        _connect_and_list(vs, old)

    # Request, approval and read with the new identity: sealed to the new key.
    ids = lasting(vs.cli_json("worker2", "list")["records"], 1)
    req = json.loads(
        _cli(
            vs, "worker1", secret, "request", "--record", ids[0], "--field", "name",
            "--purpose", "case_management", "--reason", "home visit", "--json",
        ).stdout
    )  # fmt: skip
    token = vs.root / "renewed.token"
    vs.cli("officer1", "approve", req["request_id"], "--out", str(token))
    _cli(vs, "worker1", secret, "read", ids[0], "--grant", f"@{token}")
    _cli(vs, "worker1", secret, "audit", "verify")
    vs.cli("officer2", "audit", "verify")


def _connect_and_list(vs: VaultServer, identity: Identity) -> None:
    """Connect as ``identity`` and list (raises what the server answers)."""
    from childvault.vault import Vault

    with Vault.connect(vs.url, identity) as v:
        v.list_page(limit=1)


def test_staff_cannot_approve_a_renewal(served: VaultServer) -> None:
    vs = served
    _, pw = _new_pw(vs, "worker2")
    vs.cli("worker2", "keys", "renew", "--passphrase-file", str(pw))
    before = _user_keys(vs, "worker2")
    refused = vs.cli("worker3", "keys", "renew", "--approve", "worker2", expect=None)
    assert refused.returncode != 0
    # The library client sending the write directly: refused by the server's policy.
    with vs.connect("worker3") as staff:
        db = staff._session.db
        key = bytes(32)
        with pytest.raises(AccessDenied, match=r"may not call users\.set_keys"), db.transaction():
            db.call("users", "set_keys", ("worker3", key, key), {})  # type: ignore[attr-defined]
    assert _user_keys(vs, "worker2") == before


def test_an_insider_edit_of_the_pending_request_is_refused(served: VaultServer) -> None:
    vs = served
    secret, pw = _new_pw(vs, "worker3")
    asked = vs.cli_json("worker3", "keys", "renew", "--passphrase-file", str(pw))
    seq = int(asked["request"])
    before = _user_keys(vs, "worker3")
    slots = (vs.home / "keyslots.json").read_bytes()
    with Insider(vs.home, vs.identity("worker4")) as insider:
        ((entry,),) = insider.execute(f"SELECT entry FROM audit WHERE seq = {seq}")
        ((envelope,),) = insider.execute(f"SELECT envelope FROM statements WHERE seq = {seq}")
        mallory = Identity.generate("worker3")
        # The pending request's slot swapped for one sealed to the insider's key.
        doc = json.loads(entry)
        doc["detail"]["slot"] = sealed_slot(mallory.public, _vault_id(vs), {"db": bytes(32)})
        forged = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        insider.update("audit", {"entry": forged}, where={"seq": seq})
        refused = vs.cli("admin", "keys", "renew", "--approve", "worker3", expect=None)
        assert refused.returncode != 0, refused.stdout
        insider.update("audit", {"entry": entry}, where={"seq": seq})
        # The new public key swapped: the statement names the insider's keys.
        new_key = Identity.load(
            vs.workstation("worker3") / "identities" / "worker3.renewing.id", secret
        ).public.signing_key.hex()
        outer = json.loads(envelope)
        payload = base64.b64decode(outer["payload"]).decode()
        outer["payload"] = base64.b64encode(
            payload.replace(new_key, mallory.public.signing_key.hex()).encode()
        ).decode()
        swapped = json.dumps(outer, separators=(",", ":")).encode()
        assert swapped != bytes(envelope)
        insider.update("statements", {"envelope": swapped}, where={"seq": seq})
        refused = vs.cli("admin", "keys", "renew", "--approve", "worker3", expect=None)
        assert refused.returncode != 0, refused.stdout
        insider.update("statements", {"envelope": envelope}, where={"seq": seq})
    assert _user_keys(vs, "worker3") == before
    assert (vs.home / "keyslots.json").read_bytes() == slots
    # Restored, the same request is approved: the refusals were the edits'.
    vs.cli("admin", "keys", "renew", "--approve", "worker3")
    _cli(vs, "worker3", secret, "keys", "renew", "--finish")
    _cli(vs, "worker3", secret, "list")


def test_an_admin_cannot_install_another_slot_or_other_keys(served: VaultServer) -> None:
    """What an honest admin's client never sends: refused at commit, nothing stored."""
    vs = served
    _, pw = _new_pw(vs, "worker4")
    vs.cli("worker4", "keys", "renew", "--passphrase-file", str(pw))
    before = _user_keys(vs, "worker4")
    slots = (vs.home / "keyslots.json").read_bytes()
    mallory = Identity.generate("worker4")
    with vs.connect("admin") as admin:
        db = admin._session.db
        # Keys without a verified renewal.
        with pytest.raises(ChildVaultError, match=r"no verified user\.renew"), db.transaction():
            db.call(  # type: ignore[attr-defined]
                "users",
                "set_keys",
                ("worker4", mallory.public.encryption_key, mallory.public.signing_key),
                {},
            )
    with vs.connect("admin") as admin:
        # The approval with a slot sealed to another key than the person's request carries.
        backend: Any = admin._session.db
        fake = sealed_slot(mallory.public, _vault_id(vs), {"db": bytes(32)})

        class Swapping(RemoteSlots):
            def install(self, name: str, vault_id: str, sealed: str | None) -> str | None:
                return super().install(name, vault_id, fake if name == "worker4" else sealed)

        backend.key_slots = Swapping(backend.key_slots.path, backend, "admin")
        with pytest.raises(ChildVaultError, match="may not write the key slot of worker4"):
            admin.approve_key_renewal("worker4")
    assert _user_keys(vs, "worker4") == before
    assert (vs.home / "keyslots.json").read_bytes() == slots


def test_renewal_reads_in_chinese(served: VaultServer) -> None:
    vs = served
    secret, pw = _new_pw(vs, "officer2")
    asked = _cli(
        vs, "officer2", passphrase("officer2"), "keys", "renew", "--passphrase-file", str(pw),
        lang="zh_CN.UTF-8",
    )  # fmt: skip
    assert "keys renew --approve officer2" in asked.stdout.decode()
    assert "新" in asked.stdout.decode()
    early = _cli(vs, "officer2", secret, "keys", "renew", "--finish", expect=2, lang="zh_CN.UTF-8")
    assert "服务器" in early.stderr.decode()
    done = _cli(
        vs, "admin", passphrase("admin"), "keys", "renew", "--approve", "officer2",
        lang="zh_CN.UTF-8",
    )  # fmt: skip
    assert "--finish" in done.stdout.decode() and "officer2" in done.stdout.decode()
    finished = _cli(vs, "officer2", secret, "keys", "renew", "--finish", lang="zh_CN.UTF-8")
    assert "officer2" in finished.stdout.decode() and "新" in finished.stdout.decode()
    # The renewed officer still holds the custodian key: their slot was resealed whole.
    ident = Identity.load(vs.workstation("officer2") / "identities" / "officer2.id", secret)
    found = KeySlots(vs.home / "keyslots.json").open(ident, _vault_id(vs))
    assert any(k.startswith("custodian/") for k in found)
