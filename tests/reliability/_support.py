"""Helpers shared by the reliability tests: running the real CLI in a
subprocess, snapshotting a database, and checking that an import left the
vault in a consistent state (every record complete with its log entry, or
absent)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests._insider import Insider
from tests.conftest import PASSPHRASES, World

ROOT = Path(__file__).resolve().parents[2]
#: Tables whose content must not change when an operation is rejected.
#: (The audit table may gain a ``denied`` entry: refusals are logged by design.)
DATA_TABLES = (
    "meta",
    "users",
    "custodians",
    "custodian_holders",
    "records",
    "fields",
    "keyblobs",
    "tombstones",
    "requests",
    "grants",
    "imports",
    "blind_index",
)
ALL_FIELDS = (
    "name",
    "sex",
    "date_of_birth",
    "id_number",
    "address",
    "school",
    "guardian_name",
    "guardian_phone",
    "difficulty_category",
    "health",
    "case_notes",
)


def childvault_cmd() -> list[str]:
    """The installed ``childvault`` console script (the real CLI), or its module form."""
    beside = Path(sys.executable).parent / "childvault"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [sys.executable, "-c", "from childvault.cli.main import main; main()"]


def cli_env(home: Path, user: str | None, **extra: str) -> dict[str, str]:
    """A clean environment for one CLI process acting as ``user`` on ``home``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHILDVAULT_", "VAULT_", "BAO_", "PYTEST_", "COV_"))
    }
    env["CHILDVAULT_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT)
    if user is not None:
        env["CHILDVAULT_USER"] = user
        env["CHILDVAULT_PASSPHRASE"] = PASSPHRASES[user]
    env.update(extra)
    return env


def run_cli(
    home: Path,
    user: str | None,
    *args: str,
    timeout: float = 300,
    limit_fsize: int | None = None,
    **extra: str,
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess; optionally with ``RLIMIT_FSIZE`` (writes
    past the limit fail with EFBIG, SIGXFSZ ignored)."""
    return subprocess.run(
        [*childvault_cmd(), *args],
        env=cli_env(home, user, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        preexec_fn=(lambda: limit_file_size(limit_fsize)) if limit_fsize is not None else None,
        check=False,
    )


def limit_file_size(limit: int) -> None:
    """In this process (and what it execs): file writes past ``limit`` bytes fail with EFBIG."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))


@contextlib.contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """A generous guard against hangs (not a speed claim): fail if ``seconds`` pass."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"{what} did not finish within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def table_digests(world: World, tables: Sequence[str] = DATA_TABLES) -> dict[str, str]:
    """A digest of every row of each table (what "nothing was written" compares)."""
    with Insider(world, "worker1") as insider:
        out = {}
        for table in tables:
            rows = insider.rows(table)
            digest = hashlib.sha256(repr(sorted(map(repr, rows))).encode()).hexdigest()
            out[table] = f"{len(rows)}:{digest[:16]}"
        return out


def audit_entries(world: World) -> list[dict[str, Any]]:
    """Every log entry, decoded, in sequence order (read with an insider's key)."""
    with Insider(world, "worker1") as insider:
        rows = insider.rows("audit", ["seq", "entry"], order_by="seq")
    entries = [json.loads(bytes(e)) for _, e in rows]
    assert [s for s, _ in rows] == list(range(len(rows))), "log sequence has gaps"
    return entries


def check_import_state(world: World, source: str, total: int) -> int:
    """Assert the vault is consistent after an import of ``total`` rows from
    ``source`` was interrupted at any point; return the number committed.

    Every record is complete (all its fields, its key blob and its index tags)
    and has exactly one ``record.create`` entry naming the same fields and
    source row; committed rows are exactly rows 1..N of the file; the stored
    import progress says N.
    """
    with Insider(world, "worker1") as insider:
        records = {
            str(r): (s, int(n) if n is not None else None)
            for r, s, n in insider.rows("records", ["id", "source", "source_row"])
        }
        fields: dict[str, set[str]] = {}
        for rid, name in insider.rows("fields", ["record_id", "name"]):
            fields.setdefault(str(rid), set()).add(str(name))
        blobs = {str(r) for (r,) in insider.rows("keyblobs", ["record_id"])}
        tags: dict[str, int] = {}
        for (rid,) in insider.rows("blind_index", ["record_id"]):
            tags[str(rid)] = tags.get(str(rid), 0) + 1
        found = insider.rows("imports", ["rows_done", "finished_at"], where={"source": source})
        progress = found[0] if found else None
    creates = [e for e in audit_entries(world) if e["action"] == "record.create"]
    n = len(records)
    assert all(s == source for s, _ in records.values()), "a record from another source"
    rows = sorted(row for _, row in records.values())
    assert rows == list(range(1, n + 1)), f"committed rows are not a prefix 1..{n}: gaps/dups"
    assert len(creates) == n, f"{len(creates)} record.create entries for {n} records"
    by_record = {e["records"][0]: e for e in creates}
    assert set(by_record) == set(records), "log and records name different records"
    for rid, (_, row) in records.items():
        entry = by_record[rid]
        assert entry["outcome"] == "ok"
        assert entry["detail"]["row"] == row and entry["detail"]["source"] == source[:16]
        assert fields.get(rid, set()) == set(entry["fields"]), f"record {rid} is incomplete"
        assert set(entry["fields"]) == set(ALL_FIELDS)
    assert blobs == set(records), "a record without its key blob (or a stray blob)"
    assert all(tags.get(rid) == 2 for rid in records), "index tags missing for a record"
    assert set(tags) <= set(records), "index tags for a record that does not exist"
    if progress is None:
        assert n == 0, "records committed without import progress"
    else:
        assert int(progress[0]) == n, f"progress says {progress[0]} rows, {n} committed"
        if progress[1] is not None:
            assert n == total, "import marked finished before every row was committed"
    return n


def read_sample(
    world: World,
    rows: Sequence[Mapping[str, str]],
    *,
    k: int = 50,
    seed: int = 0,
    requester: str = "worker1",
    officer: str = "officer1",
) -> int:
    """Approve and read up to ``k`` random committed records (all fields); assert
    each decrypts to the values of its source row. Returns how many were read."""
    with Insider(world, "worker1") as insider:
        committed = sorted(
            (str(r), int(n)) for r, n in insider.rows("records", ["id", "source_row"])
        )
    if not committed:
        return 0
    sample = random.Random(seed).sample(committed, min(k, len(committed)))
    with world.open(requester) as v:
        req = v.request_access([r for r, _ in sample], ALL_FIELDS, "case_management", "抽查")
    with world.open(officer) as v:
        token = v.approve(req).token
    with world.open(requester) as v:
        values = v.read_with_grant(token)
        schema = v.schema
    for rid, row in sample:
        source = rows[row - 1]
        expected = schema.validate_record("child", {f: source[f] for f in ALL_FIELDS})
        assert values[rid] == expected, f"record {rid} (row {row}) decrypts to other values"
    return len(sample)


def verify(world: World, who: str = "worker1") -> int:
    """Open the vault and verify its log against the stored and witnessed checkpoints."""
    with world.open(who) as v:
        return v.verify_audit().entries


def record_result(test: str, **figures: Any) -> None:
    """Append a test's figures (trial counts, outcomes) as a JSON line to the file
    named by ``CHILDVAULT_RELIABILITY_LOG``, if set; docs/reliability.md quotes them."""
    target = os.environ.get("CHILDVAULT_RELIABILITY_LOG")
    line = json.dumps({"test": test, **figures}, sort_keys=True, default=str)
    print(line)  # visible with -s / -rA
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
