"""Backup and restore (issue 16): `childvault backup`, `audit rebaseline
--from-backup`, and a witness that went missing or shorter failing loudly.
This is the procedure of docs/operators.md, step by step."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

from tests.conftest import World
from tests.test_cli import js, run
from tests.test_records import marked_rows, write_csv


def _request(world: World, record: str) -> str:
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
        "家访",
    )
    assert r.exit_code == 0, r.output
    return str(js(r)["request_id"])


def _restore(backup: Path, home: Path) -> None:
    """Step 2 of the procedure: put the backed-up files back (the witness stays)."""
    for name in ("vault.db-wal", "vault.db-shm"):
        (home / name).unlink(missing_ok=True)
    for name in ("vault.db", "keyslots.json", "config.json", "schema.toml"):
        shutil.copy2(backup / name, home / name)


def test_backup_restore_rebaseline(world: World, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "rows.csv", marked_rows(3))
    assert run(world, "worker1", "import", str(src)).exit_code == 0
    ids = [r["id"] for r in js(run(world, "worker1", "--json", "list"))["records"]]
    assert run(world, "officer1", "audit", "checkpoint").exit_code == 0

    # Staff may not take a copy of everything.
    assert run(world, "worker1", "backup", "--out", str(tmp_path / "nope")).exit_code == 3
    out = tmp_path / "backup"
    r = run(world, "admin", "--json", "backup", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert {"vault.db", "keyslots.json", "config.json", "schema.toml", "witness.jsonl"} <= set(
        js(r)["files"]
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "vault.db").stat().st_mode) == 0o600
    # Not into a directory that holds something.
    assert run(world, "admin", "backup", "--out", str(out)).exit_code == 2

    # Work goes on after the backup: approvals witness larger trees.
    req = _request(world, ids[0])
    assert run(world, "officer1", "approve", req).exit_code == 0
    assert run(world, "officer1", "audit", "checkpoint").exit_code == 0
    witnessed_before = world.witness.read_text()

    # The disk dies; the backup is restored, the witness (other media) is not.
    _restore(out, world.home)
    assert run(world, "worker1", "--json", "list").exit_code == 0
    req2 = _request(world, ids[1])
    r = run(world, "officer1", "approve", req2)
    assert r.exit_code == 4 and "diverged" in r.stderr, r.output
    assert run(world, "officer1", "audit", "verify").exit_code == 4

    # Only officers rebaseline, and only when told it is a restore.
    assert run(world, "admin", "audit", "rebaseline", "--from-backup").exit_code == 3
    assert run(world, "officer1", "audit", "rebaseline").exit_code == 2
    r = run(world, "officer1", "--json", "audit", "rebaseline", "--from-backup")
    assert r.exit_code == 0, r.output
    done = js(r)
    assert done["lost_from"] == done["restored_at"] < done["lost_to"]
    assert "childvault-restore: witnessed entries" in done["note"]
    # The loss stays visible in the witness; nothing before it was rewritten.
    witness = world.witness.read_text()
    assert witness.startswith(witnessed_before) and "childvault-restore" in witness
    r = run(world, "officer1", "--json", "audit", "log", "--action", "audit.rebaseline")
    assert [(e["entry"]["actor"], e["entry"]["outcome"]) for e in js(r)["entries"]] == [
        ("admin", "denied"),
        ("officer1", "ok"),
    ]

    # Approvals resume; the whole log verifies against the witness.
    assert run(world, "officer1", "approve", req2).exit_code == 0
    r = run(world, "officer1", "audit", "verify")
    assert r.exit_code == 0, r.output
    # Nothing is lost any more: a second rebaseline is refused.
    assert run(world, "officer1", "audit", "rebaseline", "--from-backup").exit_code == 2


def test_missing_or_shorter_witness_fails_loudly(world: World, tmp_path: Path) -> None:
    assert run(world, "officer1", "audit", "checkpoint").exit_code == 0
    older = tmp_path / "older.jsonl"
    shutil.copy2(world.witness, older)
    assert run(world, "officer1", "audit", "checkpoint").exit_code == 0
    current = tmp_path / "current.jsonl"
    shutil.copy2(world.witness, current)

    world.witness.unlink()
    r = run(world, "officer1", "audit", "verify")
    assert r.exit_code == 4 and "missing or empty" in r.stderr, r.output
    r = run(world, "officer1", "--json", "doctor")
    assert r.exit_code != 0 and "missing or empty" in r.stdout, r.output

    world.witness.write_text("")
    r = run(world, "officer1", "audit", "verify")
    assert r.exit_code == 4 and "missing or empty" in r.stderr, r.output
    r = run(world, "officer1", "--json", "doctor")
    assert r.exit_code != 0 and "missing or empty" in r.stdout, r.output

    shutil.copy2(older, world.witness)
    r = run(world, "officer1", "audit", "verify")
    assert r.exit_code == 4 and "shorter than before" in r.stderr, r.output
    r = run(world, "officer1", "--json", "doctor")
    assert r.exit_code != 0 and "shorter than before" in r.stdout, r.output

    # A symlink planted at the witness path is not followed when appending...
    world.witness.unlink()
    world.witness.symlink_to(current)
    r = run(world, "officer1", "audit", "checkpoint")
    assert r.exit_code != 0 and current.read_bytes() == world.witness.read_bytes()
    # ...nor when reading, even to a complete copy: verify and doctor fail.
    r = run(world, "officer1", "audit", "verify")
    assert r.exit_code == 4 and "not a regular file" in r.stderr, r.output
    r = run(world, "officer1", "--json", "doctor")
    assert r.exit_code != 0, r.output
    witness_check = [c for c in js(r)["checks"] if c["name"] == "witness"]
    assert [c["status"] for c in witness_check] == ["fail"], witness_check

    world.witness.unlink()
    shutil.copy2(current, world.witness)
    assert run(world, "officer1", "audit", "verify").exit_code == 0
