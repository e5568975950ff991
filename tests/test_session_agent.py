"""`childvault unlock` / `lock`: the per-user session agent (issue 16)."""

from __future__ import annotations

import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from childvault.cli.main import cli
from childvault.keys import ConfigError
from childvault.keys._agent import connect, serve, socket_dir, socket_path
from tests.conftest import PASSPHRASES, World
from tests.test_cli import js, run
from tests.test_records import marked_rows, write_csv


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private XDG_RUNTIME_DIR with a short path (Unix socket paths are short)."""
    path = Path(tempfile.mkdtemp(prefix="cv"))
    path.chmod(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run_nopass(world: World, user: str, *args: str) -> Result:
    """Run as ``user`` without CHILDVAULT_PASSPHRASE and without a terminal:
    only a session can open the vault."""
    env = {
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": user,
        "CHILDVAULT_PASSPHRASE": None,
    }
    return CliRunner().invoke(cli, list(args), env=env)


def test_unlock_serves_commands_without_passphrase_and_lock_ends_it(
    world: World, runtime: Path, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "rows.csv", marked_rows(2))
    assert run(world, "worker1", "import", str(src)).exit_code == 0
    ids = [r["id"] for r in js(run(world, "worker1", "--json", "list"))["records"]]
    try:
        # Without a session and a passphrase: a usage error.
        r = _run_nopass(world, "officer1", "list")
        assert r.exit_code == 2 and "no passphrase" in r.stderr
        r = run(world, "officer1", "--json", "unlock", "--for", "10m")
        assert r.exit_code == 0, r.output
        sock = Path(js(r)["socket"])
        assert sock.parent == runtime / "childvault"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        r = run(world, "worker1", "unlock")
        assert r.exit_code == 0, r.output
        # Nothing secret on disk: the directory holds the two sockets only.
        assert all(stat.S_ISSOCK(p.lstat().st_mode) for p in sock.parent.iterdir())

        r = _run_nopass(world, "officer1", "--json", "list")
        assert r.exit_code == 0, r.output
        r = _run_nopass(
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
        assert r.exit_code == 0, r.output
        req = js(r)["request_id"]
        # The approval token is signed inside the agent, and verifies.
        r = _run_nopass(world, "officer1", "--json", "approve", req)
        assert r.exit_code == 0, r.output
        token = js(r)["token"]
        r = _run_nopass(world, "worker1", "--json", "read", ids[0], "--grant", token)
        assert r.exit_code == 0, r.output
        assert js(r)["records"][ids[0]]["name"]
        r = _run_nopass(world, "officer1", "--json", "audit", "verify")
        assert r.exit_code == 0, r.output

        held = connect(world.home, "officer1")
        assert held is not None and held.name == "officer1"
        with pytest.raises(Exception, match="stays in the session agent"):
            held.signing_seed()

        r = run(world, "officer1", "--json", "lock")
        assert r.exit_code == 0 and js(r)["locked"] is True
        assert not sock.exists() and connect(world.home, "officer1") is None
        r = _run_nopass(world, "officer1", "list")
        assert r.exit_code == 2 and "no passphrase" in r.stderr
        r = run(world, "officer1", "--json", "lock")
        assert r.exit_code == 0 and js(r)["locked"] is False
    finally:
        run(world, "officer1", "lock")
        run(world, "worker1", "lock")


def test_unlock_checks_passphrase_and_duration(world: World, runtime: Path) -> None:
    r = run(world, "officer1", "unlock", "--for", "9h")
    assert r.exit_code == 2 and "at most 8 hours" in r.stderr
    r = run(world, "officer1", "unlock", env={"CHILDVAULT_PASSPHRASE": "wrong passphrase!"})
    assert r.exit_code == 3, r.output
    assert not (runtime / "childvault").exists() or not any((runtime / "childvault").iterdir())
    assert PASSPHRASES["officer1"]


def test_expired_session_removes_its_socket(world: World, runtime: Path) -> None:
    """A session whose time is up ends at once (the deadline is checked before serving)."""
    with world.open("officer1") as v:
        identity = v._session.me
    path = socket_path(world.home, "officer1")
    serve(identity, path, 0)
    assert not path.exists() and connect(world.home, "officer1") is None


def test_session_directory_must_be_private_and_not_a_symlink(runtime: Path, tmp_path: Path) -> None:
    base = runtime / "childvault"
    base.mkdir(mode=0o755)
    base.chmod(0o755)
    with pytest.raises(ConfigError, match="mode 0700"):
        socket_dir()
    base.rmdir()
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    base.symlink_to(target)
    with pytest.raises(ConfigError, match="symlink"):
        socket_dir()
    base.unlink()
    assert socket_dir() == base and stat.S_IMODE(base.stat().st_mode) == 0o700
