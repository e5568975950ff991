"""The Vault server going away mid-run: a clear exit 5, a consistent database,
and a clean resume once it is back (a persistent OpenBao, stopped and
restarted for real)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from childvault.cli.main import cli
from childvault.keys import Identity, ProviderUnavailable
from tests.conftest import PASSPHRASES, ROLES, World, build_template, copy_world
from tests.integration.conftest import BaoServer, module_server
from tests.test_records import marked_rows, write_csv

POLICY = {"staff": "childvault-staff", "officer": "childvault-officer", "admin": "childvault-admin"}


@pytest.fixture(scope="module")
def persistent_bao(
    bao_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BaoServer]:
    with module_server(
        bao_binary, tmp_path_factory.mktemp("persistent-bao"), persistent=True
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def outage_template(
    persistent_bao: BaoServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Identity]]:
    home = tmp_path_factory.mktemp("outage-template") / "home"
    settings = json.loads(persistent_bao.settings.to_json())
    return home, build_template(home, provider="vault", vault_settings=settings)


@pytest.fixture
def outage_world(
    persistent_bao: BaoServer, outage_template: tuple[Path, dict[str, Identity]], tmp_path: Path
) -> Iterator[World]:
    if not persistent_bao.running:
        persistent_bao.start(same_port=True)
    roles = {"admin": "admin", **{name: r[0] for name, r in ROLES.items()}}
    tokens = {n: persistent_bao.token([POLICY[r]], ttl="2h") for n, r in roles.items()}
    src, ids = outage_template
    yield copy_world(src, ids, tmp_path, tokens=tokens, provider="vault")
    if not persistent_bao.running:
        persistent_bao.start(same_port=True)


def test_server_stopped_mid_import_then_resume(
    outage_world: World, persistent_bao: BaoServer, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "rows.csv", marked_rows(1200))

    def stop_after_first_batch(done: int, total: int) -> None:
        if persistent_bao.running:
            persistent_bao.stop()

    with outage_world.open("worker1") as v:
        with pytest.raises(ProviderUnavailable) as info:
            v.import_file(src, progress=stop_after_first_batch)
        assert persistent_bao.addr in str(info.value)
        # Consistent: exactly the committed batch, a verifying log, nothing half-written.
        assert sum(1 for _ in v.list_records()) == 500
        v.verify_audit()
    persistent_bao.start(same_port=True)
    with outage_world.open("worker1") as v:
        report = v.import_file(src)
        assert (report.already_done, report.imported) == (500, 700)
        assert sum(1 for _ in v.list_records()) == 1200
        v.verify_audit()
    # Every record written across the outage still reads after approval.
    with outage_world.open("worker1") as v:
        ids = [r.id for r in v.list_records()][:50]
        req = v.request_access(ids, ["name"], "case_management", "after outage")
    with outage_world.open("officer1") as v:
        token = v.approve(req).token
    with outage_world.open("worker1") as v:
        assert len(v.read_with_grant(token)) == 50


def test_cli_exit_5_names_the_server(
    outage_world: World, persistent_bao: BaoServer, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "rows.csv", marked_rows(3))
    persistent_bao.stop()
    env = {
        "CHILDVAULT_HOME": str(outage_world.home),
        "CHILDVAULT_USER": "worker1",
        "CHILDVAULT_PASSPHRASE": PASSPHRASES["worker1"],
        "VAULT_TOKEN": outage_world.tokens["worker1"],
    }
    result = CliRunner().invoke(cli, ["import", str(src)], env=env)
    assert result.exit_code == 5, result.output
    assert persistent_bao.addr in result.stderr
    persistent_bao.start(same_port=True)
    result = CliRunner().invoke(cli, ["--json", "import", str(src)], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["imported"] == 3


def test_doctor_reports_a_live_and_a_dead_server(
    outage_world: World, persistent_bao: BaoServer
) -> None:
    env = {
        "CHILDVAULT_HOME": str(outage_world.home),
        "CHILDVAULT_USER": "worker1",
        "CHILDVAULT_PASSPHRASE": PASSPHRASES["worker1"],
        "VAULT_TOKEN": outage_world.tokens["worker1"],
    }
    result = CliRunner().invoke(cli, ["--json", "doctor"], env=env)
    doc = json.loads(result.stdout)
    assert result.exit_code == 0 and doc["ok"], result.output
    token_line = next(c for c in doc["checks"] if c["name"] == "vault token")
    assert "acts as staff" in token_line["message"]
    persistent_bao.stop()
    result = CliRunner().invoke(cli, ["--json", "doctor"], env=env)
    doc = json.loads(result.stdout)
    assert result.exit_code == 1 and not doc["ok"]
    assert any("unreachable" in c["message"] for c in doc["checks"] if c["status"] == "fail")


def test_cli_approle_login_with_secret_id_file(
    outage_world: World, persistent_bao: BaoServer, tmp_path: Path
) -> None:
    """`--role-id` with the secret id read from a file (never from argv)."""
    api = persistent_bao.api
    if "approle/" not in api("GET", "sys/auth").json()["data"]:
        api("POST", "sys/auth/approle", json={"type": "approle"}).raise_for_status()
    api(
        "POST",
        "auth/approle/role/cv-worker",
        json={"token_policies": ["childvault-staff"], "token_ttl": "20m"},
    ).raise_for_status()
    role_id = api("GET", "auth/approle/role/cv-worker/role-id").json()["data"]["role_id"]
    secret = api("POST", "auth/approle/role/cv-worker/secret-id").json()["data"]["secret_id"]
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    src = write_csv(tmp_path / "rows.csv", marked_rows(2))
    env = {
        "CHILDVAULT_HOME": str(outage_world.home),
        "CHILDVAULT_USER": "worker1",
        "CHILDVAULT_PASSPHRASE": PASSPHRASES["worker1"],
        "VAULT_TOKEN": "",
    }
    args = ["--json", "--role-id", role_id, "--secret-id-file", str(secret_file)]
    result = CliRunner().invoke(cli, [*args, "import", str(src)], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["imported"] == 2
    secret_file.write_text("not-the-secret\n")
    other = write_csv(tmp_path / "more.csv", marked_rows(3))
    result = CliRunner().invoke(cli, [*args, "import", str(other)], env=env)
    assert result.exit_code == 5, result.output
    assert secret not in result.output
