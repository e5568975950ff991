"""The command line's rough edges (issue 16): broken pipes, global options after
the command, what `requests` shows, usage errors of `read`, non-regular input
files, `audit log` filters and terminal escaping of data typed by people."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASES, World
from tests.test_cli import js, run
from tests.test_records import marked_rows, write_csv

ESCAPES = "家访\x1b]0;pwned\x07\x1b[2J\rfake line\u202e"


@pytest.fixture
def imported(world: World, tmp_path: Path) -> tuple[World, list[str]]:
    """A world with three imported records (as in tests/test_cli.py)."""
    src = write_csv(tmp_path / "rows.csv", marked_rows(3))
    assert run(world, "worker1", "import", str(src)).exit_code == 0
    ids = [r["id"] for r in js(run(world, "worker1", "--json", "list"))["records"]]
    return world, ids


def _audit_size(world: World) -> int:
    with world.open("admin") as v:
        return len(list(v.audit_entries()))


def test_list_into_a_closed_pipe_exits_quietly(imported: tuple[World, list[str]]) -> None:
    world, _ids = imported
    env = {
        **os.environ,
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": "worker1",
        "CHILDVAULT_PASSPHRASE": PASSPHRASES["worker1"],
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "childvault", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    # The reader goes away before childvault writes anything: every write fails.
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait()
    assert "internal error" not in err and "Traceback" not in err and err == "", err
    assert code == 141


def test_global_options_after_the_command_name(imported: tuple[World, list[str]]) -> None:
    world, ids = imported
    base = {"CHILDVAULT_PASSPHRASE": PASSPHRASES["worker1"]}
    r = run(world, None, "list", "--json", "--as", "worker1", "--home", str(world.home), env=base)
    assert r.exit_code == 0, r.output
    assert sorted(x["id"] for x in js(r)["records"]) == sorted(ids)
    # In a nested group too, and the root form still works.
    r = run(world, "officer1", "audit", "log", "--json", "--record", ids[0])
    assert r.exit_code == 0 and js(r)["entries"][0]["entry"]["action"] == "record.create"
    r = run(world, "worker1", "--json", "list")
    assert r.exit_code == 0 and len(js(r)["records"]) == len(ids)


def _request(world: World, record: str, reason: str) -> str:
    r = run(
        world,
        "worker1",
        "--json",
        "request",
        "--record",
        record,
        "--field",
        "name",
        "--purpose",
        "case_management",
        "--reason",
        reason,
    )
    assert r.exit_code == 0, r.output
    return str(js(r)["request_id"])


def test_requests_shows_requester_decider_reason_records_and_local_time(
    imported: tuple[World, list[str]],
) -> None:
    world, ids = imported
    req = _request(world, ids[0], ESCAPES)
    r = run(world, "officer1", "requests")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "requested by worker1" in out and ids[0] in out
    # Beijing time to the second, without microseconds.
    assert "+0800" in out and ".000" not in out
    # The reason reaches the terminal escaped: no ESC, BEL, CR or bidi override.
    assert "家访\\x1b]0;pwned\\x07\\x1b[2J\\x0dfake line\\u202e" in out
    assert not any(ch in out for ch in "\x1b\x07\r\u202e")
    assert run(world, "officer1", "deny", req, "--reason", "不必要\x1b[2J").exit_code == 0
    r = run(world, "officer1", "requests", "--all")
    assert "requested by worker1" in r.stdout
    assert "decided by officer1: denied (不必要\\x1b[2J)" in r.stdout
    assert "\x1b" not in r.stdout
    # The JSON shape is unchanged: raw values, JSON-escaped.
    doc = js(run(world, "officer1", "--json", "requests", "--all"))
    (item,) = [q for q in doc["requests"] if q["id"] == req]
    assert item["reason"] == ESCAPES and item["decided_by"] == "officer1"


def test_read_usage_errors_are_not_logged_denials(
    imported: tuple[World, list[str]], tmp_path: Path
) -> None:
    world, ids = imported
    req = _request(world, ids[0], "家访")
    token_file = tmp_path / "t.token"
    r = run(world, "officer1", "approve", req, "--out", str(token_file))
    assert r.exit_code == 0 and "+0800" in r.stdout, r.output
    before = _audit_size(world)
    # A forgotten @: the file name is taken as the token.
    r = run(world, "worker1", "read", ids[0], "--grant", str(token_file))
    assert r.exit_code == 2 and f"did you mean --grant @{token_file}" in r.stderr, r.output
    r = run(world, "worker1", "read", ids[0], "--grant", "v4.public.nonsense")
    assert r.exit_code == 2 and "not an approval token" in r.stderr
    r = run(world, "worker1", "read", ids[0], "--field", "nmae", "--grant", f"@{token_file}")
    assert r.exit_code == 2 and "no field nmae" in r.stderr
    r = run(world, "worker1", "read", "not-an-id", "--grant", f"@{token_file}")
    assert r.exit_code == 2 and "not a record id" in r.stderr
    assert _audit_size(world) == before
    # The token still works: nothing was used up by the typos.
    r = run(world, "worker1", "--json", "read", ids[0], "--grant", f"@{token_file}")
    assert r.exit_code == 0 and set(js(r)["records"][ids[0]]) == {"name"}


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_grant_and_import_refuse_non_regular_files(
    imported: tuple[World, list[str]], tmp_path: Path
) -> None:
    world, ids = imported
    r = run(world, "worker1", "read", ids[0], "--grant", "@/dev/zero")
    assert r.exit_code == 2 and "not a regular file" in r.stderr, r.output
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = run(world, "worker1", "read", ids[0], "--grant", f"@{fifo}")
    assert r.exit_code == 2 and "not a regular file" in r.stderr, r.output
    big = tmp_path / "big"
    with big.open("wb") as fh:
        fh.truncate((1 << 20) + 10)
    r = run(world, "worker1", "read", ids[0], "--grant", f"@{big}")
    assert r.exit_code == 2 and "more than" in r.stderr, r.output
    r = run(world, "worker1", "read", ids[0], "--grant", "@-", input="x" * ((1 << 20) + 5))
    assert r.exit_code == 2 and "more than" in r.stderr, r.output
    r = run(world, "worker1", "import", "/dev/zero")
    assert r.exit_code == 2 and "not a regular file" in r.stderr, r.output


def test_audit_log_filters(imported: tuple[World, list[str]]) -> None:
    world, ids = imported
    _request(world, ids[1], "家访")
    every = js(run(world, "officer1", "--json", "audit", "log"))["entries"]

    def seqs(*args: str) -> list[int]:
        r = run(world, "officer1", "--json", "audit", "log", *args)
        assert r.exit_code == 0, r.output
        return [e["entry"]["seq"] for e in js(r)["entries"]]

    by_worker = [e["entry"]["seq"] for e in every if e["entry"]["actor"] == "worker1"]
    assert by_worker and seqs("--user", "worker1") == by_worker
    creates = [e["entry"]["seq"] for e in every if e["entry"]["action"] == "record.create"]
    assert len(creates) == len(ids) and seqs("--action", "record.create") == creates
    assert seqs("--action", "record.") == [
        e["entry"]["seq"] for e in every if e["entry"]["action"].startswith("record.")
    ]
    assert seqs("--tail", "2") == [e["entry"]["seq"] for e in every[-2:]]
    assert seqs("--since", "2000-01-01", "--until", "2000-01-02") == []
    assert seqs("--since", "2000-01-01", "--tail", "1") == [every[-1]["entry"]["seq"]]
    r = run(world, "officer1", "audit", "log", "--since", "yesterday-ish")
    assert r.exit_code == 2
    r = run(world, "officer1", "audit", "log", "--user", "worker1", "--action", "request.create")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 1 and "worker1" in r.stdout


def test_permission_error_names_the_file_and_the_fix(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Error handling only: the refused open is simulated (the tests may run as root)."""
    from childvault.cli._context import Ctx

    denied = world.home / "vault.db"

    def refuse(self: Ctx) -> None:
        raise PermissionError(13, "Permission denied", str(denied))

    monkeypatch.setattr(Ctx, "open", refuse)
    r = run(world, "worker1", "list")
    assert r.exit_code == 1 and "internal error" not in r.output
    assert str(denied) in r.stderr and "owns the vault home" in r.stderr, r.stderr
    r = run(world, "worker1", "--json", "list")
    assert js(r)["error"]["type"] == "PermissionError" and str(denied) in r.stdout


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_library_import_refuses_a_device(world: World) -> None:
    from childvault.keys import ImportFailed

    with world.open("worker1") as v, pytest.raises(ImportFailed, match="not a regular file"):
        v.import_file(Path("/dev/zero"))
