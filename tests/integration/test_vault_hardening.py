"""Issue 14 attack tests against a real OpenBao: rotation and revocation that reach Vault.

Each test first shows the attack working where the issue says it worked, then
that the hardened path stops it. The provider-level attacks (staff salt read,
salt write-back after shredding, setup without an audit device) are in
``test_vault_provider.py``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from childvault.cli.main import cli
from childvault.keys import ChildVaultError, Identity, Selection, VaultProvider
from childvault.keys._openbao._formats import parse_material
from childvault.vault import _tokens
from childvault.vault._audit import Event
from tests._insider import Insider
from tests.conftest import PASSPHRASES, ROLES, World, add_children, build_template, copy_world
from tests.integration.conftest import BaoServer, audited_server, module_server

pytestmark = pytest.mark.vault

POLICY = {"staff": "childvault-staff", "officer": "childvault-officer", "admin": "childvault-admin"}
KEY = "childvault-transit/keys/childvault-dek"


@pytest.fixture(scope="module")
def hard_bao(bao_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """A server of its own: the tests rotate and trim its Transit key."""
    with module_server(bao_binary, tmp_path_factory.mktemp("hard-bao")) as server:
        yield server


def world_on(server: BaoServer, tmp_path: Path) -> World:
    src = tmp_path / "template" / "home"
    settings = json.loads(server.settings.to_json())
    ids: dict[str, Identity] = build_template(src, provider="vault", vault_settings=settings)
    roles = {"admin": "admin", **{name: r[0] for name, r in ROLES.items()}}
    tokens = {n: server.token([POLICY[r]], ttl="2h") for n, r in roles.items()}
    return copy_world(src, ids, tmp_path / "live", tokens=tokens, provider="vault")


@pytest.fixture
def world(hard_bao: BaoServer, tmp_path: Path) -> World:
    return world_on(hard_bao, tmp_path)


def run_cli(world: World, user: str, *args: str) -> tuple[int, str]:
    assert world.tokens is not None
    env = {
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": user,
        "CHILDVAULT_PASSPHRASE": PASSPHRASES[user],
        "VAULT_TOKEN": world.tokens[user],
    }
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.output


def backup(world: World, dest: Path) -> World:
    shutil.copytree(world.home, dest)
    return World(dest, world.ids, world.clock, world.tokens, "vault")


def read_name(world: World, record_id: str) -> str:
    """worker1 asks, officer1 approves, worker1 reads: the full childvault path."""
    with world.open("worker1") as v:
        req = v.request_access([record_id], ["name"], "case_management", "backup check")
    with world.open("officer1") as v:
        token = v.approve(req).token
    with world.open("worker1") as v:
        return v.read_with_grant(token)[record_id]["name"]


def set_floor(server: BaoServer, version: int) -> int:
    """Root lowers (or raises) min_decryption_version; return OpenBao's status."""
    return server.api("POST", f"{KEY}/config", json={"min_decryption_version": version}).status_code


def test_rotate_trim_keeps_old_blobs_dead_even_when_root_lowers_the_floor(
    world: World, hard_bao: BaoServer, tmp_path: Path
) -> None:
    """Attack (issue 14, 4): after a rotation, the floor is lowered and old blobs open again."""
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
    name = read_name(world, rid)
    old = backup(world, tmp_path / "backup-v1")

    # Without --trim: the message no longer claims destruction, and the attack works.
    code, out = run_cli(world, "admin", "keys", "rotate")
    assert code == 0, out
    gen = hard_bao.api("GET", KEY).json()["data"]["latest_version"]
    assert f"key versions below {gen} retired" in out and "NOT destroyed" in out
    with pytest.raises(ChildVaultError):
        read_name(old, rid)
    assert set_floor(hard_bao, 1) in (200, 204)
    assert read_name(old, rid) == name  # retired, not destroyed
    # ... and the admin's doctor names the lowered floor.
    code, out = run_cli(world, "admin", "--json", "doctor")
    assert code == 1 and "min_decryption_version 1 is below" in out, out

    # With --trim: every older version is deleted from the server.
    older = backup(world, tmp_path / "backup-v2")
    code, out = run_cli(world, "admin", "keys", "rotate", "--trim")
    assert code == 0, out
    gen = hard_bao.api("GET", KEY).json()["data"]["latest_version"]
    assert f"key versions below {gen} deleted from the Vault server (trimmed)" in out, out
    info = hard_bao.api("GET", KEY).json()["data"]
    assert info["min_available_version"] == gen
    assert sorted(int(k) for k in info["keys"]) == [gen]
    # Root cannot bring them back: OpenBao refuses a floor below the trimmed
    # versions, and even if it did not, the key material is gone.
    for floor in (1, gen - 1):
        set_floor(hard_bao, floor)
        for backup_world in (old, older):
            with pytest.raises(ChildVaultError):
                read_name(backup_world, rid)
    assert set_floor(hard_bao, gen) in (200, 204)
    # The live record still reads.
    assert read_name(world, rid) == name
    code, out = run_cli(world, "admin", "--json", "doctor")
    assert "min_decryption_version" not in out, out


def test_revoke_revokes_the_wrapping_tokens_in_vault(world: World, hard_bao: BaoServer) -> None:
    """Attack (issue 14, 3): after `revoke`, the requester unwraps the tokens directly."""
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
        req = v.request_access([rid], ["name"], "case_management", "revoke check")
    with world.open("officer1") as v:
        approval = v.approve(req)
    # The approval entry records the wrapping accessors and Vault request ids.
    with world.open("officer1") as v:
        entry = next(
            e["entry"]
            for e in v.audit_entries()
            if e["entry"]["action"] == "request.approve"
            and e["entry"]["grant"] == approval.grant_id
        )
    accessors = entry["detail"]["vault_accessors"]
    assert accessors and all(accessors)
    assert isinstance(entry["detail"]["vault_request_ids"], list)  # empty on OpenBao 2.x
    # The requester can get the raw wrapping tokens out of the grant.
    claims = _tokens.verify(approval.token, world.ids["officer1"].public.signing_key)
    wraps = parse_material(world.ids["worker1"].unseal(claims.keys), claims.vault, claims.jti)
    assert world.tokens is not None
    staff_token = world.tokens["worker1"]
    lookup = hard_bao.api(
        "POST", "sys/wrapping/lookup", token=staff_token, json={"token": wraps[0][0]}
    )
    assert lookup.status_code == 200  # live before the revocation
    with world.open("officer1") as v:
        v.revoke(approval.grant_id)
    for token, _items in wraps:
        resp = hard_bao.api("POST", "sys/wrapping/unwrap", token=staff_token, json={"token": token})
        assert resp.status_code in (400, 403), resp.text
        assert "plaintext" not in resp.text
    with world.open("worker1") as v, pytest.raises(ChildVaultError):
        v.read_with_grant(approval.token)
    with world.open("officer1") as v, pytest.raises(ChildVaultError, match="already revoked"):
        v.revoke(approval.grant_id)


def test_revoke_takes_the_wrapping_tokens_from_the_signed_entry_not_the_meta_row(
    world: World, hard_bao: BaoServer
) -> None:
    """Insider (issue 12 rule, found in session 4): deleting the grant's
    ``vault_wrapping_accessors`` meta row made `revoke` skip the Vault tokens,
    so the requester could still unwrap them directly."""
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
        req = v.request_access([rid], ["name"], "case_management", "revoke check")
    with world.open("officer1") as v:
        approval = v.approve(req)
    claims = _tokens.verify(approval.token, world.ids["officer1"].public.signing_key)
    wraps = parse_material(world.ids["worker1"].unseal(claims.keys), claims.vault, claims.jti)
    with Insider(world, "worker1") as insider:
        removed = insider.delete("meta", where={"key": f"vault_wrapping_accessors:{claims.jti}"})
    assert removed == 1
    with world.open("officer1") as v:
        v.revoke(approval.grant_id)
    assert world.tokens is not None
    for token, _items in wraps:
        resp = hard_bao.api(
            "POST", "sys/wrapping/unwrap", token=world.tokens["worker1"], json={"token": token}
        )
        assert resp.status_code in (400, 403), resp.text


def test_revoke_of_a_grant_without_its_signed_approval_entry_is_refused_and_logged(
    world: World, hard_bao: BaoServer
) -> None:
    """A grant row an insider inserted has no signed approval entry: revoke
    cannot know its Vault tokens, so it refuses, and the refusal is logged."""
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
        req = v.request_access([rid], ["name"], "case_management", "revoke check")
    with world.open("officer1") as v:
        approval = v.approve(req)
    forged = "f" * 32
    with Insider(world, "worker1") as insider:
        insider.execute(
            "INSERT INTO grants (id, request_id, officer, requester, issued_at, expires_at, "
            "max_uses, uses) SELECT ?, request_id, officer, requester, issued_at, expires_at, "
            "max_uses, uses FROM grants WHERE id = ?",
            [forged, approval.grant_id],
        )
    with world.open("officer1") as v, pytest.raises(ChildVaultError, match="altered"):
        v.revoke(forged)
    with world.open("officer1") as v:
        refusals = [e["entry"] for e in v.audit_entries() if e["entry"]["action"] == "trust.refuse"]
    assert any(r["detail"]["on"] == "grant.revoke" for r in refusals)


def test_logged_accessors_take_no_approval_entry_by_a_non_officer(
    world: World, hard_bao: BaoServer
) -> None:
    """Insider (left alone in session 10): revoke took the grant's first
    ``request.approve`` entry whoever wrote it. A staff member forges a grant
    row and logs, in their own name and signed, an approval of it naming no
    Vault tokens: revoke used to accept it and revoke nothing in Vault; only an
    officer's entry counts, so the grant has none and revoke refuses (logged)."""
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
        req = v.request_access([rid], ["name"], "case_management", "revoke check")
    with world.open("officer1") as v:
        approval = v.approve(req)
    forged = "e" * 32
    with Insider(world, "worker1") as insider:
        insider.execute(
            "INSERT INTO grants (id, request_id, officer, requester, issued_at, expires_at, "
            "max_uses, uses) SELECT ?, request_id, officer, requester, issued_at, expires_at, "
            "max_uses, uses FROM grants WHERE id = ?",
            [forged, approval.grant_id],
        )
    staff_approval = Event(
        "worker1",
        "request.approve",
        request=req,
        grant=forged,
        detail={"vault_accessors": [], "vault_request_ids": []},
    )
    with world.open("worker1") as v:
        v._session.log([staff_approval], datetime.now(UTC))
    with world.open("officer1") as v, pytest.raises(ChildVaultError, match="altered"):
        v.revoke(forged)
    with world.open("officer1") as v:
        refusals = [e["entry"] for e in v.audit_entries() if e["entry"]["action"] == "trust.refuse"]
        assert any(r["detail"]["on"] == "grant.revoke" for r in refusals)
        # The officer's own approval still counts: the real grant is revoked in Vault.
        v.revoke(approval.grant_id)
        assert v._session.db.meta.get(f"vault_wrapping_accessors:{approval.grant_id}") is None


def test_reconcile_finds_an_officer_decrypting_around_childvault(
    bao_binary: str, tmp_path: Path
) -> None:
    """Attack (issue 14, 1): an officer's wrapped decrypt + self-unwrap, no approval."""
    with audited_server(bao_binary, tmp_path) as (server, audit_log):
        live = world_on(server, tmp_path)
        with live.open("worker1") as v:
            (rid,) = add_children(v, 1)
        name = read_name(live, rid)  # an approved, logged release
        code, out = run_cli(live, "admin", "audit", "reconcile", "--vault-audit", str(audit_log))
        assert code == 0, out
        assert "1 matched to childvault approvals, 0 unmatched" in out

        # The officer uses their own Vault token directly: wrapped decrypt, then
        # unwraps it themselves. No request, no approval, no childvault entry.
        assert live.tokens is not None
        officer = VaultProvider(server.settings, "any", token=live.tokens["officer1"])
        me = Identity.generate("officer1-self")
        with live.open("officer1") as v:
            blob = v._session.wrapped(rid)  # type: ignore[attr-defined]
        material = officer.release([Selection(blob, ["name"])], me.public, "self")
        assert officer.redeem(material, me, "self")[rid]["name"]
        officer.close()
        assert name

        code, out = run_cli(
            live, "admin", "--json", "audit", "reconcile", "--vault-audit", str(audit_log)
        )
        assert code == 4, out
        report = json.loads(out)
        assert report["matched"] == 1 and len(report["unmatched"]) == 1
        (found,) = report["unmatched"]
        assert found["path"] == "childvault-transit/decrypt/childvault-dek"
        assert found["wrapped"] is True
        assert "childvault-officer" in found["who"]["policies"]
        assert found["time"]

        # With a Vault identity per person (an AppRole role named after the
        # officer, docs/vault.md), the report names the person.
        api = server.api
        api("POST", "sys/auth/approle", json={"type": "approle"}).raise_for_status()
        api(
            "POST",
            "auth/approle/role/officer1",
            json={"token_policies": ["childvault-officer"], "token_ttl": "20m"},
        ).raise_for_status()
        role_id = api("GET", "auth/approle/role/officer1/role-id").json()["data"]["role_id"]
        secret = api("POST", "auth/approle/role/officer1/secret-id").json()["data"]["secret_id"]
        person = VaultProvider(server.settings, "any", approle=(role_id, secret))
        material = person.release([Selection(blob, ["name"])], me.public, "self-2")
        assert person.redeem(material, me, "self-2")[rid]["name"]
        person.close()
        code, out = run_cli(
            live, "admin", "--json", "audit", "reconcile", "--vault-audit", str(audit_log)
        )
        assert code == 4, out
        report = json.loads(out)
        assert len(report["unmatched"]) == 2
        assert report["unmatched"][1]["who"]["role_name"] == "officer1"
        assert report["unmatched"][1]["who"]["display_name"] == "approle"


def test_reconcile_takes_no_approval_entry_by_a_non_officer_nor_for_a_missing_grant(
    bao_binary: str, tmp_path: Path
) -> None:
    """Insider (issue 14 audit, gap 2): reconcile took the accessors of any
    ``request.approve`` entry. An officer decrypts directly through Vault and a
    staff member logs, in their own name and signed, an approval naming that
    wrapping accessor: reconcile used to count the decrypt as approved. The
    rule ``revoke`` uses applies: only an officer's entry for an existing grant."""
    with audited_server(bao_binary, tmp_path) as (server, audit_log):
        live = world_on(server, tmp_path)
        with live.open("worker1") as v:
            (rid,) = add_children(v, 1)
            req = v.request_access([rid], ["name"], "case_management", "reconcile check")
        assert live.tokens is not None
        officer = VaultProvider(server.settings, "any", token=live.tokens["officer1"])
        me = Identity.generate("officer1-self")
        with live.open("officer1") as v:
            blob = v._session.wrapped(rid)  # type: ignore[attr-defined]
        material, receipt = officer.release_with_receipt(
            [Selection(blob, ["name"])], me.public, "self"
        )
        assert officer.redeem(material, me, "self")[rid]["name"]
        officer.close()
        (accessor,) = receipt["accessors"]

        def cover(user: str, grant: str) -> None:
            event = Event(
                user,
                "request.approve",
                request=req,
                grant=grant,
                detail={"vault_accessors": [accessor], "vault_request_ids": []},
            )
            with live.open(user) as v:
                v._session.log([event], datetime.now(UTC))

        # A staff member's entry, and an officer's for a grant that does not exist.
        cover("worker1", "d" * 32)
        cover("officer1", "c" * 32)
        code, out = run_cli(
            live, "admin", "--json", "audit", "reconcile", "--vault-audit", str(audit_log)
        )
        assert code == 4, out
        report = json.loads(out)
        assert (report["decrypts"], report["matched"], len(report["unmatched"])) == (1, 0, 1)
        assert "childvault-officer" in report["unmatched"][0]["who"]["policies"]


def _approved_wrapping_tokens(live: World, rid: str, why: str) -> tuple[str, list[str]]:
    """worker1 asks, officer1 approves: the grant token and its raw wrapping tokens.

    The test takes the tokens out of the grant with worker1's key; a
    misbehaving officer's client holds them before sealing them to worker1.
    """
    with live.open("worker1") as v:
        req = v.request_access([rid], ["name"], "case_management", why)
    with live.open("officer1") as v:
        approval = v.approve(req)
    claims = _tokens.verify(approval.token, live.ids["officer1"].public.signing_key)
    wraps = parse_material(live.ids["worker1"].unseal(claims.keys), claims.vault, claims.jti)
    return approval.token, [token for token, _items in wraps]


def reconcile(live: World, audit_log: Path) -> tuple[int, dict[str, object]]:
    code, out = run_cli(
        live, "admin", "--json", "audit", "reconcile", "--vault-audit", str(audit_log)
    )
    return code, json.loads(out)


def test_reconcile_finds_an_officer_unwrapping_an_approved_grant(
    bao_binary: str, tmp_path: Path
) -> None:
    """Attack (issue 14 audit, gap 1): the decrypt of an approved grant is
    matched, but an officer unwraps its wrapping token directly, instead of or
    before the requester's read. Reconcile used to look only at decrypts and
    said nothing (exit 0); it now matches every unwrap to the requester's read."""
    with audited_server(bao_binary, tmp_path) as (server, audit_log):
        live = world_on(server, tmp_path)
        assert live.tokens is not None
        with live.open("worker1") as v:
            rid_a, rid_b, rid_c = add_children(v, 3)
        assert read_name(live, rid_a)  # the honest path: decrypt and unwrap both matched
        code, report = reconcile(live, audit_log)
        assert code == 0, report
        assert (report["decrypts"], report["unwraps"], report["unmatched_unwraps"]) == (1, 1, [])

        def officer_unwraps(token: str, vault_token: str) -> None:
            resp = server.api(
                "POST", "sys/wrapping/unwrap", token=vault_token, json={"token": token}
            )
            assert resp.status_code == 200 and "batch_results" in resp.text, resp.text

        # Instead of the requester: the requester never reads.
        _grant, (token_b,) = _approved_wrapping_tokens(live, rid_b, "instead")
        officer_unwraps(token_b, live.tokens["officer1"])
        code, report = reconcile(live, audit_log)
        assert code == 4, report
        assert report["unmatched"] == [] and report["matched"] == 2
        (found,) = report["unmatched_unwraps"]  # type: ignore[misc]
        assert found["reason"] == "unwrap-no-read"
        assert found["path"] == "sys/wrapping/unwrap"
        assert "childvault-officer" in found["who"]["policies"]

        # Before the requester: their read then fails, and is no alibi.
        grant_c, (token_c,) = _approved_wrapping_tokens(live, rid_c, "before")
        officer_unwraps(token_c, live.tokens["officer1"])
        with live.open("worker1") as v, pytest.raises(ChildVaultError):
            v.read_with_grant(grant_c)
        code, report = reconcile(live, audit_log)
        assert code == 4, report
        reasons = [u["reason"] for u in report["unmatched_unwraps"]]  # type: ignore[attr-defined]
        assert reasons == ["unwrap-no-read", "unwrap-no-read"]
        code, out = run_cli(live, "admin", "audit", "reconcile", "--vault-audit", str(audit_log))
        assert code == 4 and "3 unwrap(s) of their wrapping tokens: 2 not accounted" in out, out

        # With a Vault identity per person, an unwrap under another person's
        # AppRole role is named as such, even if the requester reads afterwards.
        api = server.api
        api("POST", "sys/auth/approle", json={"type": "approle"}).raise_for_status()
        api(
            "POST",
            "auth/approle/role/officer1",
            json={"token_policies": ["childvault-officer"], "token_ttl": "20m"},
        ).raise_for_status()
        role_id = api("GET", "auth/approle/role/officer1/role-id").json()["data"]["role_id"]
        secret = api("POST", "auth/approle/role/officer1/secret-id").json()["data"]["secret_id"]
        login = api("POST", "auth/approle/login", json={"role_id": role_id, "secret_id": secret})
        person = login.json()["auth"]["client_token"]
        rid_d = add_children_one(live)
        _grant, (token_d,) = _approved_wrapping_tokens(live, rid_d, "as a person")
        officer_unwraps(token_d, person)
        code, report = reconcile(live, audit_log)
        assert code == 4, report
        last = report["unmatched_unwraps"][-1]  # type: ignore[index]
        assert last["reason"] == "unwrap-not-requester"
        assert last["who"]["role_name"] == "officer1"

        # And the officer's own decrypt around childvault: its unwrap is no approval's.
        officer = VaultProvider(server.settings, "any", token=live.tokens["officer1"])
        me = Identity.generate("officer1-self")
        with live.open("officer1") as v:
            blob = v._session.wrapped(rid_a)  # type: ignore[attr-defined]
        material = officer.release([Selection(blob, ["name"])], me.public, "self")
        assert officer.redeem(material, me, "self")[rid_a]["name"]
        officer.close()
        code, report = reconcile(live, audit_log)
        assert code == 4, report
        assert report["unmatched_unwraps"][-1]["reason"] == "unwrap-not-approved"  # type: ignore[index]


def add_children_one(live: World) -> str:
    with live.open("worker1") as v:
        (rid,) = add_children(v, 1)
    return rid
