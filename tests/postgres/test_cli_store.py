"""``childvault init --store postgresql``: the DSN from a file or CHILDVAULT_DSN, never argv."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from childvault.cli.main import cli
from tests.fixtures.postgres import PostgresServer
from tests.postgres.conftest import OWNER, new_database, write_dsn

PASSPHRASE = "a-long-passphrase"


def _init(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> object:
    pw = tmp_path / "pw"
    pw.write_text(PASSPHRASE + "\n")
    args = ["--json", "init", "--institution", "福利院", "--admin", "boss"]
    args += ["--passphrase-file", str(pw), *extra]
    base = {"CHILDVAULT_HOME": str(tmp_path / "h"), **(env or {})}
    return CliRunner().invoke(cli, args, env=base, catch_exceptions=False)


def test_init_with_a_dsn_file_then_verify(tmp_path: Path, postgres: PostgresServer) -> None:
    dsn_file = write_dsn(tmp_path / "dsn", postgres.dsn(OWNER, new_database(postgres)))
    r = _init(tmp_path, "--store", "postgresql", "--dsn-file", str(dsn_file))
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    doc = json.loads(r.stdout)  # type: ignore[attr-defined]
    assert doc["store"] == "postgresql" and doc["ok"]
    config = json.loads((tmp_path / "h" / "config.json").read_text())
    assert config["store"] == {"kind": "postgresql", "dsn_file": str(dsn_file)}
    assert "password" not in (tmp_path / "h" / "config.json").read_text()
    assert not (tmp_path / "h" / "vault.db").exists()
    env = {
        "CHILDVAULT_HOME": str(tmp_path / "h"),
        "CHILDVAULT_USER": "boss",
        "CHILDVAULT_PASSPHRASE": PASSPHRASE,
    }
    r = CliRunner().invoke(cli, ["--json", "audit", "verify"], env=env, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["entries"] == 2
    r = CliRunner().invoke(cli, ["--json", "doctor"], env=env, catch_exceptions=False)
    checks = json.loads(r.stdout)["checks"]
    assert not [c for c in checks if "vault.db" in json.dumps(c)], checks


def test_init_with_childvault_dsn(tmp_path: Path, postgres: PostgresServer) -> None:
    dsn = postgres.dsn(OWNER, new_database(postgres))
    r = _init(tmp_path, "--store", "postgresql", env={"CHILDVAULT_DSN": dsn})
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    config = json.loads((tmp_path / "h" / "config.json").read_text())
    assert config["store"] == {"kind": "postgresql", "dsn_file": None}


def test_a_dsn_on_the_command_line_is_refused_without_echoing_it(tmp_path: Path) -> None:
    secret = "postgresql://cv:s3cret-pw@127.0.0.1/cv"
    r = _init(tmp_path, "--store", secret)
    assert r.exit_code == 2  # type: ignore[attr-defined]
    assert "s3cret-pw" not in r.output and "CHILDVAULT_DSN" in r.output  # type: ignore[attr-defined]
    assert not (tmp_path / "h").exists()


def test_postgresql_without_a_dsn_is_a_usage_error(tmp_path: Path) -> None:
    r = _init(tmp_path, "--store", "postgresql", env={"CHILDVAULT_DSN": ""})
    assert r.exit_code == 2 and "--dsn-file or CHILDVAULT_DSN" in r.output  # type: ignore[attr-defined]
