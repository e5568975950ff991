"""Crash consistency: ``childvault import`` of 5,000 records, killed with SIGKILL
at seeded random moments.

The real CLI runs in a subprocess (home, user and passphrase from the
environment). Most kills are aimed at the writing phase: the driver waits
until the first batch has reached the write-ahead log, then a random extra
delay; a quarter are at any moment from the start. After every kill:

- the database opens and ``audit verify`` passes;
- every record is complete (all fields, key blob, index tags) with exactly
  one ``record.create`` entry naming those fields and its source row, or it is
  absent; committed rows are exactly rows 1..N of the file;
- a random sample of up to 50 committed records is approved and read, and
  decrypts to the values of its source row;
- re-running the import completes without duplicates (5,000 at the end).

The default variant chains 5 kills on one home (each re-run resumes the
previous one and is itself killed), then completes. The slow variant runs 30
independent trials, each on a fresh home, each resumed to completion.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from childvault.keys import Identity
from childvault.vault._importer import file_digest
from tests.conftest import World, copy_world
from tests.reliability._support import (
    check_import_state,
    childvault_cmd,
    cli_env,
    read_sample,
    record_result,
    run_cli,
    verify,
)
from tests.test_records import marked_rows, write_csv

TOTAL = 5000
SEED = 20261124


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]], str]:
    rows = marked_rows(TOTAL)
    path = write_csv(tmp_path_factory.mktemp("crash-src") / "children.csv", rows)
    return path, rows, file_digest(path)


def _import_seconds(world: World, src: Path) -> float:
    """How long one whole ``childvault import`` of ``src`` takes here, now."""
    began = time.monotonic()
    subprocess.run(
        [*childvault_cmd(), "--json", "import", str(src)],
        env=cli_env(world.home, "worker1"),
        capture_output=True,
        check=True,
    )
    return time.monotonic() - began


def _kill_import(
    world: World, src: Path, rng: random.Random, span: float | None = None
) -> dict[str, object]:
    """Start ``childvault import``, SIGKILL it at a random moment; describe what happened.

    ``span``: how long a whole import takes on this machine (:func:`_import_seconds`);
    the moments are drawn within it. Without it, within fixed windows (0-8 s from
    the start, or 0-2.5 s after the first write), which a fast import outlives.
    """
    wal = world.home / "vault.db-wal"
    start_size = wal.stat().st_size if wal.exists() else 0
    proc = subprocess.Popen(
        [*childvault_cmd(), "--json", "import", str(src)],
        env=cli_env(world.home, "worker1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    began = time.monotonic()
    anytime = rng.random() < 0.25
    if span is None:
        extra = rng.uniform(0.0, 8.0) if anytime else rng.uniform(0.0, 2.5)
    else:
        extra = rng.uniform(0.0, span) if anytime else rng.uniform(0.0, span / 2)
    if not anytime:
        # Aim at the writing phase: wait for the first write to reach the WAL.
        while proc.poll() is None and time.monotonic() - began < 120:
            if wal.exists() and wal.stat().st_size > start_size:
                break
            time.sleep(0.01)
    stop_at = time.monotonic() + extra
    while proc.poll() is None and time.monotonic() < stop_at:
        time.sleep(0.005)
    finished = proc.poll() is not None
    if not finished:
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    # The import may end between the poll and the signal (it got faster): then
    # it completed, exactly as if it had ended before the poll.
    finished = finished or proc.returncode == 0
    if finished:
        assert proc.returncode == 0, err.decode(errors="replace")
    else:
        assert proc.returncode == -signal.SIGKILL
    return {
        "mode": "anytime" if anytime else "writing",
        "after_s": round(time.monotonic() - began, 2),
        "completed_before_kill": finished,
    }


def _after_kill(
    world: World, rows: list[dict[str, str]], digest: str, seed: int
) -> tuple[int, int]:
    committed = check_import_state(world, digest, TOTAL)
    verify(world)
    read = read_sample(world, rows, seed=seed)
    verify(world)
    return committed, read


def _resume(world: World, src: Path, digest: str, committed: int) -> None:
    result = run_cli(world.home, "worker1", "--json", "import", str(src))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["already_done"] == committed
    assert report["imported"] == TOTAL - committed
    assert check_import_state(world, digest, TOTAL) == TOTAL
    verify(world)


def test_import_killed_5_times_chained_then_completes(
    template: tuple[Path, dict[str, Identity]],
    source: tuple[Path, list[dict[str, str]], str],
    tmp_path: Path,
) -> None:
    src, rows, digest = source
    # Kill moments within what a whole import takes here: since imports got
    # faster (an idle CI machine: ~1.3 s), fixed windows of seconds let most
    # imports finish first, and 20 tries sometimes held fewer than 5 kills.
    span = _import_seconds(copy_world(*template, tmp_path / "probe"), src)
    homes = 1
    world = copy_world(*template, tmp_path / "h1")
    rng = random.Random(SEED)
    trials = []
    committed = 0
    while sum(1 for t in trials if not t["completed_before_kill"]) < 5:
        outcome = _kill_import(world, src, rng, span)
        now, read = _after_kill(world, rows, digest, seed=len(trials))
        # A resumed import never goes backwards or duplicates.
        assert now >= committed
        committed = now
        trials.append({**outcome, "committed": now, "sample_read": read})
        if now == TOTAL:
            # Finished before the kill: keep killing on a fresh home.
            _resume(world, src, digest, committed)
            homes += 1
            world = copy_world(*template, tmp_path / f"h{homes}")
            committed = 0
        assert len(trials) < 20, "the import finishes before any kill lands"
    _resume(world, src, digest, committed)
    record_result(
        "test_import_killed_5_times_chained_then_completes",
        import_seconds=round(span, 2),
        trials=len(trials),
        kills=sum(1 for t in trials if not t["completed_before_kill"]),
        homes=homes,
        committed_after_each_kill=[t["committed"] for t in trials],
        completed_before_kill=sum(1 for t in trials if t["completed_before_kill"]),
        detail=trials,
    )


@pytest.mark.slow
def test_import_killed_30_independent_trials(
    template: tuple[Path, dict[str, Identity]],
    source: tuple[Path, list[dict[str, str]], str],
    tmp_path: Path,
) -> None:
    src, rows, digest = source
    rng = random.Random(SEED + 1)
    trials = []
    for trial in range(30):
        world = copy_world(*template, tmp_path / f"t{trial}")
        outcome = _kill_import(world, src, rng)
        committed, read = _after_kill(world, rows, digest, seed=trial)
        _resume(world, src, digest, committed)
        trials.append({**outcome, "committed": committed, "sample_read": read})
        shutil.rmtree(tmp_path / f"t{trial}")
    counts = [t["committed"] for t in trials]
    record_result(
        "test_import_killed_30_independent_trials",
        trials=len(trials),
        committed_after_each_kill=counts,
        mid_import=sum(1 for c in counts if 0 < c < TOTAL),
        before_first_commit=sum(1 for c in counts if c == 0),
        completed_before_kill=sum(1 for t in trials if t["completed_before_kill"]),
        records_sample_read=sum(int(t["sample_read"]) for t in trials),
        detail=trials,
    )
