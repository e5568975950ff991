"""``childvault vault identity add`` against a real OpenBao: Vault's audit log names
the person (issue 14, per-person Vault identities)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from childvault.cli.main import cli
from childvault.vault import OpenBaoCredentials, Vault
from tests.conftest import PASSPHRASES, World, add_children
from tests.integration.conftest import BaoServer, audited_server
from tests.integration.test_vault_hardening import run_cli, world_on

pytestmark = pytest.mark.vault


def identity_add(world: World, server: BaoServer, *args: str) -> tuple[int, str]:
    """``vault identity add`` as the operator, with the root token."""
    env = {
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": "admin",
        "CHILDVAULT_PASSPHRASE": PASSPHRASES["admin"],
        "VAULT_TOKEN": server.root_token,
    }
    result = CliRunner().invoke(cli, ["--json", "vault", "identity", "add", *args], env=env)
    return result.exit_code, result.output


def unwrap_secret_id(server: BaoServer, wrapping_token: str) -> str:
    """What the person does with the wrapped secret id (``bao unwrap``)."""
    resp = server.api("POST", "sys/wrapping/unwrap", token=wrapping_token)
    resp.raise_for_status()
    return str(resp.json()["data"]["secret_id"])


def decrypts_in(audit_log: Path) -> list[dict[str, object]]:
    """The Transit decrypt responses in OpenBao's file audit log."""
    out = []
    for line in audit_log.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        path = entry.get("request", {}).get("path", "")
        if entry.get("type") == "response" and path.startswith("childvault-transit/decrypt/"):
            out.append(entry)
    return out


def test_a_person_s_decrypt_is_logged_by_vault_under_their_own_identity(
    bao_binary: str, tmp_path: Path
) -> None:
    with audited_server(bao_binary, tmp_path) as (server, audit_log):
        world = world_on(server, tmp_path)
        with world.open("worker1") as v:
            (rid,) = add_children(v, 1)
            request = v.request_access([rid], ["name"], "case_management", "visit")

        out_file = tmp_path / "officer1.approle.json"
        code, out = identity_add(
            world, server, "officer1", "--role", "officer", "--out", str(out_file)
        )
        assert code == 0, out
        made = json.loads(out)
        assert made["role_name"] == "officer1"
        assert made["entity_name"] == "childvault-user-officer1"
        assert made["group"] == "childvault-officer"
        assert oct(os.stat(out_file).st_mode & 0o777) == "0o600"
        assert json.loads(out_file.read_text())["role_id"] == made["role_id"]
        # The secret id is never printed, only a single-use wrapping token.
        secret_id = unwrap_secret_id(server, made["wrapped_secret_id"])
        assert secret_id not in out
        assert server.api(
            "POST", "sys/wrapping/unwrap", token=made["wrapped_secret_id"]
        ).status_code in (400, 403)

        # The policy comes from the identity group, not from the role itself.
        role = server.api("GET", "auth/approle/role/officer1").json()["data"]
        assert role["token_policies"] == []
        group = server.api("GET", "identity/group/name/childvault-officer").json()["data"]
        assert made["entity_id"] in group["member_entity_ids"]
        assert group["policies"] == ["childvault-officer"]

        # officer1 approves with their own AppRole login: a childvault decrypt.
        creds = OpenBaoCredentials(approle=(made["role_id"], secret_id))
        with Vault.open(
            world.home, identity=world.ids["officer1"], clock=world.clock, credentials=creds
        ) as v:
            approval = v.approve(request)
        with world.open("worker1") as v:
            assert v.read_with_grant(approval.token)[rid]["name"]

        (decrypt,) = decrypts_in(audit_log)
        auth = decrypt["auth"]
        assert isinstance(auth, dict)
        assert auth["entity_id"] == made["entity_id"]
        assert auth["metadata"]["role_name"] == "officer1"
        assert "childvault-officer" in auth["identity_policies"]
        code, out = run_cli(world, "admin", "audit", "reconcile", "--vault-audit", str(audit_log))
        assert code == 0, out

        # Running it again (a role change): the entity moves groups, the role id stays.
        code, out = identity_add(world, server, "officer1", "--role", "staff")
        assert code == 0, out
        again = json.loads(out)
        assert (again["role_id"], again["entity_id"]) == (made["role_id"], made["entity_id"])
        officers = server.api("GET", "identity/group/name/childvault-officer").json()["data"]
        staff = server.api("GET", "identity/group/name/childvault-staff").json()["data"]
        assert made["entity_id"] not in (officers.get("member_entity_ids") or [])
        assert made["entity_id"] in staff["member_entity_ids"]


def test_identity_add_refuses_without_a_token_and_for_bad_names(
    bao_binary: str, tmp_path: Path
) -> None:
    with BaoServer(bao_binary, tmp_path / "bao2") as server:
        (tmp_path / "bao2").mkdir()
        server.start()
        server.setup()
        world = world_on(server, tmp_path)
        code, out = identity_add(world, server, "Bad/../name", "--role", "officer")
        assert code == 2, out
        env = {"CHILDVAULT_HOME": str(world.home), "VAULT_TOKEN": ""}
        result = CliRunner().invoke(
            cli, ["vault", "identity", "add", "officer1", "--role", "officer"], env=env
        )
        assert result.exit_code == 2
        assert "VAULT_TOKEN" in result.output


def test_user_add_in_vault_mode_names_the_identity_command(bao_binary: str, tmp_path: Path) -> None:
    """``user add`` holds no root token, so it says what the operator runs next."""
    with BaoServer(bao_binary, tmp_path / "bao3") as server:
        (tmp_path / "bao3").mkdir()
        server.start()
        server.setup()
        world = world_on(server, tmp_path)
        secret = tmp_path / "wang.pass"
        secret.write_text("wang-passphrase-long-enough\n")
        code, out = run_cli(
            world,
            "admin",
            "--json",
            "user",
            "add",
            "wang",
            "--role",
            "staff",
            "--passphrase-file",
            str(secret),
        )
        assert code == 0, out
        doc = json.loads(out)
        assert doc["vault_identity_command"] == "childvault vault identity add wang --role staff"
