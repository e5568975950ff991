"""One system user per vault home: another account is refused up front, naming
the owner and the fix; a PermissionError always names the file (issue 16)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from childvault.cli.main import _permission_message, cli
from childvault.keys import ConfigError
from childvault.vault._doctor import check_owner, owner_problem
from tests.conftest import PASSPHRASES, World


def _not_mine(path: Path) -> Path:
    """A directory owned by another system user than the one running the tests."""
    if os.geteuid() == 0:
        path.mkdir(exist_ok=True)
        os.chown(path, 65534, -1)  # nobody
        return path
    return Path("/")  # owned by root


def test_a_home_of_another_user_is_refused_with_the_fix(tmp_path: Path) -> None:
    home = _not_mine(tmp_path / "theirs")
    problem = owner_problem(home)
    assert problem is not None and "sudo -u" in problem and str(home) in problem
    with pytest.raises(ConfigError, match="shared-group homes are not supported"):
        check_owner(home)
    assert owner_problem(tmp_path) is None  # the test's own directory


def test_the_cli_refuses_before_opening_and_doctor_says_why(world: World) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the test home to another user")
    os.chown(world.home, 65534, -1)
    env = {
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": "worker1",
        "CHILDVAULT_PASSPHRASE": PASSPHRASES["worker1"],
        "LANG": "C.UTF-8",
        "LC_ALL": "",
    }
    result = CliRunner().invoke(cli, ["--json", "list"], env=env)
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "ConfigError" and "sudo -u nobody" in error["message"]
    zh = CliRunner().invoke(cli, ["list"], env={**env, "LANG": "zh_CN.UTF-8"})
    assert "不支持多个系统用户共用一个组" in zh.stderr
    doctor = CliRunner().invoke(cli, ["--json", "doctor"], env=env)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["owner"]["status"] == "fail"


def test_a_permission_error_names_the_file_and_the_fix() -> None:
    exc = PermissionError(errno.EACCES, "Permission denied", "/srv/vault/vault.db")
    message = _permission_message(exc)
    assert "/srv/vault/vault.db" in message and "childvault doctor" in message
    unnamed = _permission_message(PermissionError(errno.EACCES, "Permission denied"))
    assert "a file of the vault home" in unnamed
