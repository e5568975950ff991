"""The command line, through click's CliRunner: every command, --json, the
environment variables and the exit codes of DESIGN section 7."""

from __future__ import annotations

import ast
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from childvault.cli.main import cli
from tests.conftest import PASSPHRASES, World, born_years_ago, years_ahead
from tests.test_records import marked_rows, write_csv


def run(
    world: World,
    user: str | None,
    *args: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> Result:
    base = {"CHILDVAULT_HOME": str(world.home)}
    if user:
        base["CHILDVAULT_USER"] = user
        base["CHILDVAULT_PASSPHRASE"] = PASSPHRASES.get(user, "")
    base.update(env or {})
    return CliRunner().invoke(cli, list(args), env=base, input=input, catch_exceptions=False)


def js(result: Result) -> dict:  # type: ignore[type-arg]
    return json.loads(result.stdout)


@pytest.fixture
def imported(world: World, tmp_path: Path) -> tuple[World, list[str]]:
    src = write_csv(tmp_path / "rows.csv", marked_rows(3))
    result = run(world, "worker1", "--json", "import", str(src))
    assert result.exit_code == 0, result.output
    ids = [r["id"] for r in js(run(world, "worker1", "--json", "list"))["records"]]
    return world, ids


# The commands of DESIGN section 8 that exist today (the trust-model and
# deployment additions listed there come later).
DESIGN_COMMANDS = [
    ("init",),
    ("user", "add"),
    ("user", "list"),
    ("record", "add"),
    ("import",),
    ("list",),
    ("find",),
    ("request",),
    ("requests",),
    ("approve",),
    ("deny",),
    ("revoke",),
    ("read",),
    ("correct",),
    ("delete",),
    ("consent", "withdraw"),
    ("retention", "sweep"),
    ("audit", "verify"),
    ("audit", "log"),
    ("audit", "checkpoint"),
    ("report", "subject"),
    ("report", "incident"),
    ("export", "anonymized"),
    ("keys", "rotate"),
    ("vault", "setup"),
    ("doctor",),
    ("demo",),
]


@pytest.mark.parametrize("path", DESIGN_COMMANDS, ids=" ".join)
def test_help_lists_every_design_command(path: tuple[str, ...]) -> None:
    """Each command of DESIGN section 8 is listed in its group's --help and has its own."""
    *group, name = path
    listing = CliRunner().invoke(cli, [*group, "--help"])
    assert listing.exit_code == 0, listing.output
    commands = listing.output.split("Commands:", 1)[1]
    assert any(line.split()[:1] == [name] for line in commands.splitlines()), listing.output
    own = CliRunner().invoke(cli, [*path, "--help"])
    assert own.exit_code == 0 and own.output.startswith(f"Usage: cli {' '.join(path)}")


CLI_PACKAGE = Path(__file__).resolve().parent.parent / "childvault" / "cli"


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (inside functions too), absolute."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(["childvault", "cli"][: 3 - node.level] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_command_modules_never_import_main() -> None:
    """main imports the command modules and registers them; no module imports main
    back (no cycle, no registration by import side effect)."""
    import childvault.cli.main as main

    modules = sorted(p for p in CLI_PACKAGE.glob("*.py") if p.name != "main.py")
    assert any(p.name.startswith("_cmd_") for p in modules)
    for path in modules:
        imported = _imported_modules(path)
        assert "childvault.cli.main" not in imported, path.name
        assert not any(m.startswith("childvault.cli.main.") for m in imported), path.name
    # Every command the modules define is reachable from the root.
    reachable: list[click.Command] = []
    pending: list[click.Command] = [main.cli]
    while pending:
        command = pending.pop()
        reachable.append(command)
        if isinstance(command, click.Group):
            pending.extend(command.commands.values())
    for path in modules:
        if path.name.startswith("_cmd_"):
            module = importlib.import_module(f"childvault.cli.{path.stem}")
            for name, value in vars(module).items():
                if isinstance(value, click.Command):
                    assert any(value is r for r in reachable), f"{path.name}: {name}"


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in [
        "init",
        "user",
        "record",
        "import",
        "list",
        "request",
        "requests",
        "approve",
        "deny",
        "revoke",
        "read",
        "audit",
        "doctor",
        "demo",
        "keys",
    ]:
        assert f"  {name}" in result.output


def test_init_user_add_and_list(tmp_path: Path) -> None:
    home = tmp_path / "h"
    pw = tmp_path / "pw"
    pw.write_text("a-long-passphrase\n")
    env = {"CHILDVAULT_HOME": str(home)}
    runner = CliRunner()
    r = runner.invoke(
        cli,
        [
            "--json",
            "init",
            "--institution",
            "福利院",
            "--admin",
            "boss",
            "--passphrase-file",
            str(pw),
        ],
        env=env,
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] and len(doc["vault_id"]) == 32 and doc["provider"] == "local"
    env |= {"CHILDVAULT_USER": "boss", "CHILDVAULT_PASSPHRASE": "a-long-passphrase"}
    r = runner.invoke(
        cli,
        ["--json", "user", "add", "ann", "--role", "officer", "--passphrase-file", str(pw)],
        env=env,
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["user"]["can_approve"] is True
    r = runner.invoke(cli, ["--json", "user", "list"], env=env)
    users = {u["name"]: u for u in json.loads(r.stdout)["users"]}
    assert set(users) == {"boss", "ann"}
    assert users["ann"]["vkey"].startswith(f"childvault/{doc['vault_id']}/ann+")
    # A second init into the same home is refused, nothing overwritten.
    r = runner.invoke(
        cli,
        ["init", "--institution", "x", "--admin", "boss", "--passphrase-file", str(pw)],
        env=env,
    )
    assert r.exit_code == 1 and "not empty" in r.output


def test_wrong_passphrase_exit_3_and_nothing_changes(world: World) -> None:
    before = (world.home / "vault.db").read_bytes()
    r = run(world, "worker1", "list", env={"CHILDVAULT_PASSPHRASE": "not-the-passphrase"})
    assert r.exit_code == 3 and "wrong passphrase" in r.stderr
    assert (world.home / "vault.db").read_bytes() == before


def test_unknown_user_is_clear(world: World) -> None:
    r = run(world, "nobody", "list", env={"CHILDVAULT_PASSPHRASE": "whatever-long"})
    assert r.exit_code == 1 and "unknown user 'nobody'" in r.stderr


def test_missing_home_and_user_are_usage_errors(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["list"], env={"CHILDVAULT_HOME": "", "CHILDVAULT_USER": ""})
    assert r.exit_code == 2
    r = CliRunner().invoke(
        cli,
        ["--home", str(tmp_path / "none"), "--as", "x", "list"],
        env={"CHILDVAULT_PASSPHRASE": "whatever-long"},
    )
    assert r.exit_code == 1 and "not a childvault home" in r.stderr


def test_record_add_and_field_not_in_schema(world: World) -> None:
    base = [
        "record",
        "add",
        "--consent-by",
        "guardian",
        "--purpose",
        "case_management",
        "--retain-until",
        years_ahead(5).isoformat(),
    ]
    # An eleven-year-old on the CLI's real clock (a fixed birthday would turn 14).
    born = born_years_ago(11).isoformat()
    fields = ["--field", "name=李四", "--field", f"date_of_birth={born}", "--field", "sex=男"]
    r = run(world, "worker1", "--json", *base, *fields)
    assert r.exit_code == 0, r.output
    assert len(js(r)["record_id"]) == 32
    r = run(world, "worker1", "--json", *base, *fields, "--field", "religion=x")
    assert r.exit_code == 2
    assert js(r)["error"]["type"] == "ValidationError" and "religion" in js(r)["error"]["message"]
    r = run(world, "worker1", *base, "--field", "name")
    assert r.exit_code == 2 and "NAME=VALUE" in r.output


def test_import_malformed_rows(world: World, tmp_path: Path) -> None:
    rows = marked_rows(4)
    src = write_csv(tmp_path / "rows.csv", rows)
    text = src.read_text().splitlines()
    text[2] = text[2] + ',"extra'  # unbalanced quote on data row 2
    text[3] = text[3].replace("female", "fem")
    src.write_text("\n".join(text) + "\n")
    r = run(world, "worker1", "import", str(src))
    assert r.exit_code == 1
    assert "row 2" in r.stderr and "nothing was imported" in r.stderr
    r = run(world, "worker1", "--json", "import", str(src), "--skip-invalid")
    assert r.exit_code == 0
    doc = js(r)
    assert doc["imported"] >= 1 and {e["row"] for e in doc["errors"]} >= {2}


def test_request_approve_read_deny_revoke(
    imported: tuple[World, list[str]], tmp_path: Path
) -> None:
    world, ids = imported
    r = run(
        world,
        "worker1",
        "--json",
        "request",
        "--record",
        ids[0],
        "--field",
        "name",
        "--purpose",
        "case_management",
        "--reason",
        "家访",
    )
    req = js(r)["request_id"]
    r = run(world, "officer1", "--json", "requests")
    assert [q["id"] for q in js(r)["requests"]] == [req]
    token_file = tmp_path / "t.token"
    r = run(world, "officer1", "--json", "approve", req, "--ttl", "30m", "--out", str(token_file))
    assert r.exit_code == 0, r.output
    grant = js(r)["grant_id"]
    assert "token" not in js(r) and token_file.stat().st_mode & 0o077 == 0
    r = run(world, "worker1", "--json", "read", ids[0], "--grant", f"@{token_file}")
    assert r.exit_code == 0, r.output
    assert js(r)["records"][ids[0]]["name"].startswith("鑫淼焱垚")
    r = run(world, "worker1", "read", ids[0], "--field", "address", "--grant", f"@{token_file}")
    assert r.exit_code == 3 and "not valid for this read" in r.stderr
    r = run(world, "officer1", "revoke", grant)
    assert r.exit_code == 0
    # Deny path and approving by staff.
    req2 = js(
        run(
            world,
            "worker1",
            "--json",
            "request",
            "--record",
            ids[1],
            "--field",
            "name",
            "--purpose",
            "case_management",
            "--reason",
            "x",
        )
    )["request_id"]
    assert run(world, "worker2", "approve", req2).exit_code == 3
    assert run(world, "officer1", "deny", req2, "--reason", "不必要").exit_code == 0


def test_audit_verify_log_checkpoint_and_tamper_exit_4(imported: tuple[World, list[str]]) -> None:
    world, ids = imported
    assert run(world, "worker1", "audit", "verify").exit_code == 0
    r = run(world, "officer1", "--json", "audit", "checkpoint")
    assert r.exit_code == 0 and js(r)["checkpoint"].startswith("childvault/")
    assert any(k.startswith("childvault/") for k in js(r)["vkeys"])
    r = run(world, "officer1", "--json", "audit", "log", "--record", ids[0])
    entries = js(r)["entries"]
    assert [e["entry"]["action"] for e in entries] == ["record.create"]
    assert len(entries[0]["hash"]) == 64
    from tests._insider import Insider

    with Insider(world, "worker1") as insider:
        # seq 9: the first record entry (issue 12 added the countersign entry before it)
        ((entry,),) = insider.rows("audit", ["entry"], where={"seq": 9})
        changed = bytes(entry).replace(b"worker1", b"worker9")
        insider.update("audit", {"entry": changed}, where={"seq": 9})
    r = run(world, "worker1", "audit", "verify")
    assert r.exit_code == 4 and "entry 9" in r.stderr, r.stderr


def test_doctor(world: World) -> None:
    r = run(world, "worker1", "--json", "doctor")
    doc = js(r)
    assert r.exit_code == 0 and doc["ok"]
    assert {c["name"] for c in doc["checks"]} >= {"config", "unlock", "audit", "custodian"}
    (world.home / "keyslots.json").write_text('{"format": "childvault-keyslots/1", "slo')
    r = run(world, "worker1", "--json", "doctor")
    assert r.exit_code == 1 and "damaged or truncated" in r.stdout


def test_json_error_document(world: World) -> None:
    r = run(world, "worker1", "--json", "revoke", "0" * 32)
    assert r.exit_code == 3
    assert js(r) == {
        "ok": False,
        "error": {"type": "AccessDenied", "exit_code": 3, "message": js(r)["error"]["message"]},
    }


def test_demo_runs_and_leaves_the_environment_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo gives each step its own environment: a caller's user, passphrase,
    token or home neither reach the steps nor are changed by them. Called
    without a test runner, so a change to os.environ would show."""
    caller = {
        "CHILDVAULT_HOME": str(tmp_path / "another-vault"),
        "CHILDVAULT_USER": "somebody-else",
        "CHILDVAULT_PASSPHRASE": "not-a-demo-passphrase",
        "VAULT_TOKEN": "not-a-token",
        "VAULT_ADDR": "https://vault.invalid:8200",
        "VAULT_CACERT": str(tmp_path / "no-such-ca.pem"),
    }
    for name, value in caller.items():
        monkeypatch.setenv(name, value)
    before = dict(os.environ)
    code = cli.main(["demo"], prog_name="childvault", standalone_mode=False)
    out = capsys.readouterr().out
    assert code in (None, 0), out
    assert "Demo complete." in out and "(exit code 3)" in out
    assert "$ childvault --as worker1 read" in out
    assert dict(os.environ) == before
    assert not (tmp_path / "another-vault").exists()


def test_help_is_fast_because_heavy_modules_load_lazily() -> None:
    """Not a timing test: checks which modules `--help` imports."""
    code = (
        "import sys; from childvault.cli.main import cli\n"
        "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('hvac', 'sqlcipher3', 'nacl', 'pyseto', 'argon2',"
        " 'childvault.vault', 'childvault.keys') if m in sys.modules]\nprint(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_console_script_is_installed() -> None:
    exe = shutil.which("childvault") or str(Path(sys.executable).parent / "childvault")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "version" in out.stdout
