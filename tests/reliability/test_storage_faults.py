"""Storage faults: a full disk (a real tmpfs where this machine lets us mount
one, and a portable variant with ``RLIMIT_FSIZE`` that always runs), during an
import and during log appends; the witness file on a device that is always
full; a corrupted database page; a truncated or altered key-slot file; a
wrong database key.

Each must fail with the library's own error and the right exit code, lose
nothing that was committed, write nothing half-way, and never decrypt to a
wrong value.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from childvault.keys import (
    ChildVaultError,
    ConfigError,
    DecryptionFailed,
    Identity,
    IntegrityError,
    KeySlots,
    StorageError,
)
from childvault.vault import Vault
from childvault.vault._importer import file_digest
from tests._insider import Insider
from tests.conftest import World, add_children, child_values, copy_world
from tests.reliability._support import (
    ROOT,
    audit_entries,
    check_import_state,
    cli_env,
    read_sample,
    record_result,
    run_cli,
    sha256_file,
    table_digests,
    verify,
)
from tests.test_records import marked_rows, write_csv

ROWS = 1500


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return marked_rows(ROWS)


@pytest.fixture
def csv_file(rows: list[dict[str, str]], tmp_path: Path) -> Path:
    return write_csv(tmp_path / "rows.csv", rows)


def _assert_full_disk_error(stderr: str, returncode: int) -> None:
    assert returncode == 1, stderr
    assert "full or failing" in stderr and "nothing was lost" in stderr, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr


def _resume(world: World, src: Path, rows: list[dict[str, str]], committed: int) -> None:
    result = run_cli(world.home, "worker1", "--json", "import", str(src))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["already_done"], report["imported"]) == (committed, ROWS - committed)
    assert check_import_state(world, file_digest(src), ROWS) == ROWS
    assert read_sample(world, rows, k=30) == 30
    verify(world)


# ------------------------------------------------- full disk, portable variant


def test_file_size_limit_during_import_exit_1_then_resume(
    template: tuple[Path, dict[str, Identity]],
    tmp_path: Path,
    csv_file: Path,
    rows: list[dict[str, str]],
) -> None:
    """The CLI runs with RLIMIT_FSIZE of 3 MB: a batch that would grow the
    database past it fails with EFBIG, exactly like ENOSPC on a full disk."""
    world = copy_world(*template, tmp_path / "w")
    result = run_cli(world.home, "worker1", "import", str(csv_file), limit_fsize=3_000_000)
    _assert_full_disk_error(result.stderr, result.returncode)
    committed = check_import_state(world, file_digest(csv_file), ROWS)
    assert committed < ROWS
    verify(world)
    _resume(world, csv_file, rows, committed)
    record_result("test_file_size_limit_during_import_exit_1_then_resume", committed=committed)


@pytest.fixture
def prepared(template: tuple[Path, dict[str, Identity]], tmp_path: Path) -> dict[str, object]:
    """A world with records, a pending request and an issued, unused token."""
    world = copy_world(*template, tmp_path / "w")
    with world.open("worker1") as v:
        ids = add_children(v, 4)
        granted = v.request_access(ids[:2], ["name"], "case_management", "for the token")
        pending = v.request_access(ids[2:], ["name"], "case_management", "left pending")
    with world.open("officer1") as v:
        token = v.approve(granted).token
    return {"world": world, "records": ids, "token": token, "request": pending}


def _limited(world: World, user: str, spec: dict[str, object], tmp: Path) -> dict[str, dict]:
    path = tmp / f"limited-{user}.json"
    path.write_text(json.dumps({**spec, "home": str(world.home), "user": user}))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.reliability._limited", str(path)],
        cwd=ROOT,
        env=cli_env(world.home, None),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_no_room_for_log_appends_nothing_happens(
    prepared: dict[str, object], tmp_path: Path
) -> None:
    """With no byte of room, every operation that must log fails closed with
    StorageError (exit 1): nothing is listed, read, approved, corrected or
    deleted, and the database is exactly as before. Afterwards all of it works."""
    world = prepared["world"]
    assert isinstance(world, World)
    spec = {k: prepared[k] for k in ("records", "token", "request")}
    before = table_digests(world, (*_tables(), "audit"))
    outcomes = {}
    for user in ("worker1", "officer1"):
        for op, result in _limited(world, user, spec, tmp_path).items():
            outcomes[f"{user}:{op}"] = result
            assert result.get("error") == "StorageError", (user, op, result)
            assert result["exit"] == 1 and "full or failing" in result["message"]
    assert table_digests(world, (*_tables(), "audit")) == before
    verify(world)
    # The fault gone, the same operations succeed (the token was not used up).
    with world.open("worker1") as v:
        assert len(v.read_with_grant(str(prepared["token"]))) == 2
    with world.open("officer1") as v:
        v.approve(str(prepared["request"]))
        records = prepared["records"]
        assert isinstance(records, list)
        v.correct(records[0], "name", "改正")
        v.delete(records[1], "after the fault")
    verify(world)
    record_result("test_no_room_for_log_appends_nothing_happens", operations=len(outcomes))


def _tables() -> tuple[str, ...]:
    from tests.reliability._support import DATA_TABLES

    return DATA_TABLES


def test_witness_on_a_full_disk_withdraws_the_approval(
    prepared: dict[str, object], tmp_path: Path
) -> None:
    """The witness lives on a full file system: the approval's checkpoint cannot be
    appended, so the approval fails with StorageError (exit 1), no token is handed
    out and the grant is revoked: no approval exists that the outside record does
    not show. Once there is room, approving works again."""
    world = prepared["world"]
    assert isinstance(world, World)
    with _tmpfs(tmp_path / "witness-fs", "64k") as mnt:
        witness = mnt / "witness.jsonl"
        shutil.copy(world.witness, witness)
        # Blank lines (ignored by readers) up to a page boundary, so the next
        # append needs a new page of the full file system.
        with witness.open("ab") as fh:
            fh.write(b"\n" * (-witness.stat().st_size % 4096))
        config_path = world.home / "config.json"
        config = json.loads(config_path.read_text())
        config["witness"] = str(witness)
        config_path.write_text(json.dumps(config))
        _fill(mnt)
        with world.open("officer1") as v, pytest.raises(StorageError) as info:
            v.approve(str(prepared["request"]))
        assert "witness" in str(info.value) and info.value.exit_code == 1
        approvals = [e for e in audit_entries(world) if e["request"] == prepared["request"]]
        assert [(e["action"], e["outcome"]) for e in approvals][-2:] == [
            ("request.approve", "ok"),
            ("grant.revoke", "ok"),
        ]
        grant = approvals[-1]["grant"]
        with Insider(world, "worker1") as insider:
            (revoked,) = insider.rows("grants", ["revoked_at"], where={"id": grant})
        assert revoked[0] is not None
        verify(world)
        # Room again: a new request is approved and witnessed.
        (mnt / "filler").unlink()
        with world.open("worker1") as v:
            records = prepared["records"]
            assert isinstance(records, list)
            again = v.request_access(records[2:], ["name"], "case_management", "retry")
        with world.open("officer1") as v:
            token = v.approve(again).token
        with world.open("worker1") as v:
            assert len(v.read_with_grant(token)) == 2
        verify(world)


# --------------------------------------------------- full disk, real tmpfs


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    if not shutil.which("mount") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8); the RLIMIT_FSIZE variant runs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the RLIMIT variant runs")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def _fill(directory: Path) -> int:
    """Write a filler file until the file system is full; return its size."""
    written = 0
    with contextlib.suppress(OSError), (directory / "filler").open("wb") as fh:
        while True:
            fh.write(b"\0" * 65536)
            fh.flush()
            written += 65536
    return written


def test_full_tmpfs_during_import_and_log_appends(
    template: tuple[Path, dict[str, Identity]],
    tmp_path: Path,
    csv_file: Path,
    rows: list[dict[str, str]],
) -> None:
    with _tmpfs(tmp_path / "mnt", "3m") as mnt:
        world = copy_world(*template, mnt)
        result = run_cli(world.home, "worker1", "import", str(csv_file))
        _assert_full_disk_error(result.stderr, result.returncode)
        committed = check_import_state(world, file_digest(csv_file), ROWS)
        assert committed < ROWS
        verify(world)
        # Room again; empty the WAL so the next append must take new pages;
        # fill the file system; then try operations that append to the log.
        subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)
        before = table_digests(world, (*_tables(), "audit"))
        outcomes = []
        with world.open("worker1") as v:
            v._session.db.compact()
            assert (world.home / "vault.db-wal").stat().st_size == 0
            _fill(mnt)
            for op in (lambda: list(v.list_records()), v.requests):
                try:
                    op()
                    outcomes.append("ok")
                except StorageError as exc:
                    assert "full or failing" in str(exc) and exc.exit_code == 1
                    outcomes.append("StorageError")
        assert outcomes == ["StorageError", "StorageError"]
        assert table_digests(world, (*_tables(), "audit")) == before
        verify(world)
        (mnt / "filler").unlink()
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        _resume(world, csv_file, rows, committed)
    record_result(
        "test_full_tmpfs_during_import_and_log_appends",
        committed_when_full=committed,
        appends_on_full_disk=outcomes,
    )


# -------------------------------------------------------- corrupted pages


@pytest.fixture(scope="module")
def corruption_base(
    template: tuple[Path, dict[str, Identity]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[World, list[str], dict[str, dict[str, str]], str]:
    """A world with 300 records and one unused 10-use token, its WAL merged."""
    world = copy_world(*template, tmp_path_factory.mktemp("corrupt-base"))
    with world.open("worker1") as v:
        ids = add_children(v, 300)
        req = v.request_access(ids[:40], ["name", "address"], "case_management", "校验")
    with world.open("officer1") as v:
        token = v.approve(req, uses=10).token
    expected = {
        rid: {"name": child_values(i)["name"], "address": child_values(i)["address"]}
        for i, rid in enumerate(ids[:40])
    }
    # Every connection closed: the WAL is checkpointed into vault.db and removed.
    assert not (world.home / "vault.db-wal").exists()
    return world, ids, expected, token


def _corrupt_and_use(
    base: World, expected: dict[str, dict[str, str]], token: str, page: int, dest: Path, rng
) -> str:  # type: ignore[no-untyped-def]
    world = World(dest / "home", base.ids, clock=base.clock)
    shutil.copytree(base.home, world.home)
    if base.witness.exists():
        shutil.copy(base.witness, dest / "home.witness.jsonl")
    db = world.home / "vault.db"
    data = bytearray(db.read_bytes())
    offset = page * 4096 + rng.randrange(4096)
    data[offset] ^= 1 << rng.randrange(8)
    db.write_bytes(bytes(data))
    detected = []
    try:
        with world.open("worker1") as v:
            for step in ("list", "verify", "read"):
                try:
                    if step == "list":
                        assert len(list(v.list_records())) == 300
                    elif step == "verify":
                        v.verify_audit()
                    else:
                        values = v.read_with_grant(token)
                        # Never a wrong value: either the right plaintext or an error.
                        assert values == expected
                except ChildVaultError as exc:
                    assert exc.exit_code in (1, 3, 4), exc
                    detected.append(f"{step}:{type(exc).__name__}")
    except ChildVaultError as exc:
        assert exc.exit_code in (1, 4), exc
        detected.append(f"open:{type(exc).__name__}")
    shutil.rmtree(dest)
    return ",".join(detected) or "not read"


def _corruption_trials(base_data, tmp_path: Path, pages: list[int], seed: int) -> dict:  # type: ignore[no-untyped-def]
    base, _ids, expected, token = base_data
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    for n, page in enumerate(pages):
        outcome = _corrupt_and_use(base, expected, token, page, tmp_path / f"c{n}", rng)
        key = outcome.split(",")[0]
        outcomes[key] = outcomes.get(key, 0) + 1
    return outcomes


def test_regression_damaged_page_met_while_fetching_rows_escaped_as_raw_sqlite_error(
    corruption_base: tuple[World, list[str], dict[str, dict[str, str]], str], tmp_path: Path
) -> None:
    """Every page of the database damaged in turn (one flipped bit at a random
    offset): opening, listing, verifying and reading give the right answer or
    the library's IntegrityError, never a wrong value.

    Bug found here: ``Store._q`` translated SQLite errors raised by ``execute``
    but not those raised while fetching rows, so a damaged page met mid-query
    escaped as a raw ``sqlcipher3.DatabaseError`` ("internal error", exit 1)
    instead of IntegrityError (exit 4)."""
    pages = (corruption_base[0].home / "vault.db").stat().st_size // 4096
    outcomes = _corruption_trials(corruption_base, tmp_path, list(range(pages)), seed=11)
    assert outcomes.get("not read", 0) < pages
    record_result(
        "test_regression_damaged_page_met_while_fetching_rows_escaped_as_raw_sqlite_error",
        trials=pages,
        first_error_by_step_and_type=outcomes,
    )


@pytest.mark.slow
def test_every_page_corrupted_at_four_offsets(
    corruption_base: tuple[World, list[str], dict[str, dict[str, str]], str], tmp_path: Path
) -> None:
    pages = (corruption_base[0].home / "vault.db").stat().st_size // 4096
    outcomes = _corruption_trials(corruption_base, tmp_path, list(range(pages)) * 4, seed=12)
    record_result(
        "test_every_page_corrupted_at_four_offsets",
        trials=4 * pages,
        first_error_by_step_and_type=outcomes,
    )


def test_corrupted_database_cli_exit_4(
    corruption_base: tuple[World, list[str], dict[str, dict[str, str]], str], tmp_path: Path
) -> None:
    base = corruption_base[0]
    home = tmp_path / "home"
    shutil.copytree(base.home, home)
    db = home / "vault.db"
    data = bytearray(db.read_bytes())
    data[100] ^= 0xFF  # inside the first page (after SQLCipher's salt)
    db.write_bytes(bytes(data))
    result = run_cli(home, "worker1", "audit", "verify")
    assert result.returncode == 4, result.stderr
    assert "damaged" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------- key slots


def test_truncated_key_slot_file_is_refused_and_nothing_written(
    template: tuple[Path, dict[str, Identity]], tmp_path: Path
) -> None:
    world = copy_world(*template, tmp_path / "w")
    slots = world.home / "keyslots.json"
    original = slots.read_bytes()
    db_digest = sha256_file(world.home / "vault.db")
    outcomes: dict[str, int] = {}
    cuts = sorted({*range(0, len(original), 23), len(original) - 1, len(original) - 2})
    for cut in cuts:
        slots.write_bytes(original[:cut])
        try:
            with world.open("worker1") as v:
                assert original[:cut].strip() == original.strip(), f"opened when cut at {cut}"
                v.verify_audit()
            kind = "opened (only whitespace removed)"
        except ConfigError as exc:
            assert "damaged or truncated" in str(exc) and exc.exit_code == 1
            kind = "ConfigError"
        except DecryptionFailed as exc:
            assert exc.exit_code == 4
            kind = "DecryptionFailed"
        outcomes[kind] = outcomes.get(kind, 0) + 1
        if kind.startswith("opened"):
            # A vault that opened ran `audit verify`, which keeps the verifier's
            # signed "verified up to N" state (issue 18): only refusals write nothing.
            db_digest = sha256_file(world.home / "vault.db")
        assert sha256_file(world.home / "vault.db") == db_digest
    slots.write_bytes(original[: len(original) // 2])
    result = run_cli(world.home, "worker1", "list")
    assert result.returncode == 1 and "restore it from backup" in result.stderr, result.stderr
    slots.write_bytes(original)
    verify(world)
    record_result(
        "test_truncated_key_slot_file_is_refused_and_nothing_written",
        trials=len(cuts),
        outcomes=outcomes,
    )


def test_altered_key_slot_is_decryption_failed(
    template: tuple[Path, dict[str, Identity]], tmp_path: Path
) -> None:
    world = copy_world(*template, tmp_path / "w")
    slots = world.home / "keyslots.json"
    doc = json.loads(slots.read_text())
    import base64

    sealed = bytearray(base64.b64decode(doc["slots"]["worker1"]))
    rng = random.Random(3)
    for _ in range(20):
        altered = bytearray(sealed)
        altered[rng.randrange(len(altered))] ^= 1 << rng.randrange(8)
        doc["slots"]["worker1"] = base64.b64encode(bytes(altered)).decode()
        slots.write_text(json.dumps(doc))
        with pytest.raises(DecryptionFailed) as info:
            world.open("worker1")
        assert info.value.exit_code == 4
    # Another user's slot, moved to worker1's name, does not open either.
    doc["slots"]["worker1"] = doc["slots"]["worker2"]
    slots.write_text(json.dumps(doc))
    with pytest.raises(DecryptionFailed):
        world.open("worker1")


def test_wrong_database_key_is_an_integrity_error(
    template: tuple[Path, dict[str, Identity]], tmp_path: Path
) -> None:
    """A key slot holding another 32-byte key (an insider's edit, or a mix-up of
    backups) opens nothing and changes nothing; so does another vault's database."""
    world = copy_world(*template, tmp_path / "w")
    with world.open("worker1") as v:
        add_children(v, 2)
        vault_id = v.vault_id
        index_key = v._session.secrets["index"]
    db = world.home / "vault.db"
    digest = sha256_file(db)
    KeySlots(world.home / "keyslots.json").add(
        world.ids["worker1"].public, vault_id, {"db": os.urandom(32), "index": index_key}
    )
    with pytest.raises(IntegrityError) as info:
        world.open("worker1")
    assert info.value.exit_code == 4 and "cannot be read with its key" in str(info.value)
    result = run_cli(world.home, "worker1", "list")
    assert result.returncode == 4 and "cannot be read with its key" in result.stderr
    assert sha256_file(db) == digest
    # Another vault's database in place of this one (its key slot still ours).
    other = tmp_path / "other"
    with Vault.init(
        other, institution="另一家", admin="admin", admin_passphrase="another-admin-pass"
    ):
        pass
    shutil.copy(other / "vault.db", db)
    foreign = sha256_file(db)
    with pytest.raises(IntegrityError):
        world.open("worker2")
    assert sha256_file(db) == foreign
