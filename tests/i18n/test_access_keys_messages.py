"""Access, keys, server and remote messages read in Chinese (issue 16), and the
root's ``--version`` help follows the run's language, not the import's.

Each error is triggered for real (through the library, the CLI or a served
vault); the English text (``str()``, ``--json``, logs) stays exactly as before.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from childvault.cli.main import cli
from childvault.keys import ChildVaultError, NotFound, UsageError
from childvault.vault._remote import RemoteBackend
from tests.conftest import World, add_children
from tests.i18n._helpers import user_env
from tests.i18n.test_marked import unmarked
from tests.server._vaultserver import VaultServer, make_vault

PACKAGE = Path(__file__).resolve().parents[2] / "childvault"
ROOT = PACKAGE.parent

#: The modules of this task whose messages are all marked (the opaque details of
#: DecryptionFailed / ApprovalInvalid excepted, as in test_marked).
MODULES = sorted(
    [
        PACKAGE / "vault" / "_svc_access.py",
        PACKAGE / "vault" / "_facade.py",
        PACKAGE / "vault" / "_check.py",
        PACKAGE / "vault" / "_svc_rotation.py",
        PACKAGE / "vault" / "_svc_vaultgc.py",
        PACKAGE / "vault" / "_keyring.py",
        *(PACKAGE / "vault" / "_remote").glob("*.py"),
        *(PACKAGE / "vault" / "_sqlcipher").glob("*.py"),
        *(PACKAGE / "vault" / "_postgres").glob("*.py"),
        *(PACKAGE / "keys").glob("*.py"),
        PACKAGE / "server" / "_vault.py",
        PACKAGE / "server" / "_host_base.py",
        PACKAGE / "server" / "_host_common.py",
        PACKAGE / "server" / "_calls.py",
        PACKAGE / "server" / "_submitted.py",
        PACKAGE / "server" / "_grants.py",
        PACKAGE / "server" / "_bindings.py",
        PACKAGE / "server" / "_reads.py",
        PACKAGE / "server" / "_witnessing.py",
        PACKAGE / "server" / "_auth.py",
        PACKAGE / "server" / "_run.py",
        PACKAGE / "server" / "_nonces.py",
        PACKAGE / "console" / "_app.py",
        PACKAGE / "testing.py",
    ]
)


def _has_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_message_of_these_modules_is_marked(path: Path) -> None:
    problems = unmarked(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE)))
    assert not problems, "\n".join(problems)


def test_access_errors_read_in_chinese_and_stay_english(world: World) -> None:
    with world.open("officer1") as officer:
        with pytest.raises(NotFound) as no_request:
            officer.approve("0" * 32)
        assert str(no_request.value) == f"no request {'0' * 32}"
        assert no_request.value.localized("zh_CN") == f"没有申请 {'0' * 32}"

        with pytest.raises(NotFound) as no_grant:
            officer.revoke("1" * 32)
        assert str(no_grant.value) == f"no grant {'1' * 32}"
        assert no_grant.value.localized("zh_CN") == f"没有授权 {'1' * 32}"

    with world.open("worker1") as staff:
        (rid,) = add_children(staff, 1)
        with pytest.raises(UsageError) as empty:
            staff.request_access([], [], "case_management", "a home visit next week")
        assert str(empty.value) == "a request names at least one record and one field"
        assert empty.value.localized("zh_CN") == "申请至少要包含一份档案和一个字段"

        with pytest.raises(UsageError) as unknown_field:
            staff.request_access([rid], ["shoe_size"], "case_management", "a home visit")
        english = str(unknown_field.value)
        assert english.startswith("field 'shoe_size' is not in the child schema: choose from ")
        chinese = unknown_field.value.localized("zh_CN")
        assert chinese.startswith("字段 'shoe_size' 不在 child 模式中：")
        # The field names offered are values: never translated.
        # Issue 16: listed with the Chinese separator "、".
        assert english.split("choose from ", 1)[1].replace(", ", "、") in chinese

        # A wrong argument type: the expected kind is itself a translated message.
        with pytest.raises(UsageError) as wrong_type:
            staff.request_access(rid, ["name"], "case_management", "a home visit")  # type: ignore[arg-type]
        assert str(wrong_type.value) == (
            "Vault.request_access: 'records' must be a list of strings, not str"
        )
        assert wrong_type.value.localized("zh_CN") == (
            "Vault.request_access：'records' 必须是字符串列表，而不是 str"
        )


@pytest.mark.locale("zh_CN.UTF-8")
def test_cli_errors_of_access_and_startup_in_chinese(world: World) -> None:
    env = user_env(world, "officer1")
    approve = CliRunner().invoke(cli, ["approve", "0" * 32], env=env)
    assert approve.exit_code != 0
    assert f"没有申请 {'0' * 32}" in approve.stderr
    # --json stays English.
    as_json = CliRunner().invoke(cli, ["--json", "approve", "0" * 32], env=env)
    assert f"no request {'0' * 32}" in as_json.stdout

    # A server URL that is not http(s), and a server that does not answer.
    ftp = CliRunner().invoke(cli, ["--server", "ftp://example.com", "list"], env=env)
    assert ftp.exit_code != 0
    assert "服务器 URL 'ftp://example.com' 必须以 https:// 开头" in ftp.stderr
    down = CliRunner().invoke(cli, ["--server", "http://127.0.0.1:1", "list"], env=env)
    assert down.exit_code == 5
    assert "childvault 服务器 http://127.0.0.1:1 没有响应" in down.stderr


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    vs = make_vault(tmp_path_factory.mktemp("vault"), people=("officer1", "worker1"))
    vs.start()
    try:
        yield vs
    finally:
        vs.stop()


def test_errors_through_a_served_vault_read_in_chinese(served: VaultServer) -> None:
    with served.connect("officer1") as officer:
        # The access service runs on the client, over the server's rows.
        with pytest.raises(NotFound) as no_request:
            officer.approve("0" * 32)
        assert str(no_request.value) == f"no request {'0' * 32}"
        assert no_request.value.localized("zh_CN") == f"没有申请 {'0' * 32}"

        # The server refuses an oversized key slot: the refusal's reason reads in
        # the client's language, and so does the server's detail (issue 16: it
        # crosses the wire with its template, like a library error's message).
        backend = officer._session.db
        assert isinstance(backend, RemoteBackend)
        with pytest.raises(ChildVaultError) as too_large, backend.transaction():
            backend.call("slots", "put", ("officer1", "x" * 20000), {})
    assert str(too_large.value) == (
        "the server could not read the request (slots.put: the key slot is too large)"
    )
    assert too_large.value.localized("zh_CN") == ("服务器无法读取该请求（slots.put：密钥槽过大）")


_VERSION_HELP = """
import os, sys
os.environ["LANG"] = sys.argv[1]
from click.testing import CliRunner
from childvault.cli.main import cli
run = sys.argv[2]
help_text = CliRunner().invoke(cli, ["--help"], env={"LANG": run}).output
version = CliRunner().invoke(cli, ["--version"], env={"LANG": run}).output
print([line.strip() for line in help_text.splitlines() if "--version" in line][0])
print(version.strip())
"""


@pytest.mark.parametrize(
    ("imported", "shown", "help_line", "version_line"),
    [
        ("zh_CN.UTF-8", "C", "--version Show the version and exit.", "version"),
        ("C", "zh_CN.UTF-8", "--version 显示版本并退出。", "版本"),
    ],
)
def test_version_help_follows_the_run_not_the_import(
    imported: str, shown: str, help_line: str, version_line: str
) -> None:
    # A process that imports the CLI in one language and runs it in another (a
    # long-lived caller, a test session) shows the run's language everywhere.
    done = subprocess.run(
        [sys.executable, "-c", _VERSION_HELP, imported, shown],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    help_out, version_out = done.stdout.splitlines()
    # (The column width depends on the other options' translated names.)
    assert " ".join(help_out.split()) == help_line
    assert version_line in version_out
    assert _has_chinese(help_out + version_out) == (shown != "C")
