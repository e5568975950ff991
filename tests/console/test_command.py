"""``childvault console`` as a command: who may start it and how it reports refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from childvault.keys import Identity
from tests.conftest import PASSPHRASES, copy_world
from tests.console.conftest import LAUNCHER, start_console, stop_console


@pytest.fixture(scope="module")
def home(
    template: tuple[Path, dict[str, Identity]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    src, ids = template
    return copy_world(src, ids, tmp_path_factory.mktemp("console-cmd")).home


def _run(*args: str, passphrase: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase)
    return subprocess.run(
        [sys.executable, "-c", LAUNCHER, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_staff_cannot_start_the_console(home: Path) -> None:
    done = _run(
        "console", "--home", str(home), "--as", "worker1", passphrase=PASSPHRASES["worker1"]
    )
    assert done.returncode == 2
    assert "not an officer" in done.stderr
    assert done.stdout == ""  # no URL printed


def test_a_wrong_passphrase_is_refused_with_exit_code_3(home: Path) -> None:
    done = _run("console", "--home", str(home), "--as", "officer1", passphrase="wrong passphrase")
    assert done.returncode == 3
    assert done.stdout == ""


def test_an_unknown_user_is_refused(home: Path) -> None:
    done = _run("console", "--home", str(home), "--as", "nobody", passphrase="x")
    assert done.returncode != 0
    assert "unknown user 'nobody'" in done.stderr


def test_any_officer_can_start_it_in_english(home: Path) -> None:
    started = start_console(home, "officer2", "--lang", "en")
    err = stop_console(started.proc)
    # -9: it did not stop within a minute of Ctrl+C and was killed; err says where it was.
    assert started.proc.returncode == 0, err
    assert started.login_url.startswith("http://127.0.0.1:")
    assert "childvault console for officer2" in err


def test_root_group_options_reach_the_command(home: Path) -> None:
    env = dict(os.environ, CHILDVAULT_PASSPHRASE=PASSPHRASES["worker2"])
    env.pop("CHILDVAULT_HOME", None)
    env.pop("CHILDVAULT_USER", None)
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, "--home", str(home), "--as", "worker2", "console"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    # worker2 came from the root group's --as: refused as staff, not "no acting user".
    assert done.returncode == 2
    assert "worker2 is not an officer" in done.stderr
