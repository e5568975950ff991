"""Measure `childvault list` and `requests` with and without a session (issue 16).

Builds a vault with N records (default 10,000) from the test fixtures'
synthetic rows, starts a session for officer1 with `childvault unlock`, and
times whole CLI processes (interpreter start included), the median of REPS
runs each. Run from the repository root:

    python tools/bench_session.py [N] [REPS]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from childvault.vault import Vault  # noqa: E402
from tests.conftest import PASSPHRASES, build_template  # noqa: E402
from tests.test_records import marked_rows, write_csv  # noqa: E402


def timed(argv: list[str], env: dict[str, str], reps: int) -> float:
    """Median wall time of ``reps`` runs of ``childvault argv``."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "childvault", *argv],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Build, unlock, measure, lock; print one line per measurement."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with tempfile.TemporaryDirectory(prefix="cvb") as tmp:
        home = Path(tmp) / "home"
        ids = build_template(home)
        src = write_csv(Path(tmp) / "rows.csv", marked_rows(n))
        with Vault.open(home, identity=ids["worker1"]) as v:
            v.import_file(src)
            records = [r.id for r in v.list_records()][:20]
            for rid in records:
                v.request_access([rid], ["name"], "case_management", "家访")
        base = {
            **os.environ,
            "CHILDVAULT_HOME": str(home),
            "CHILDVAULT_USER": "officer1",
            "XDG_RUNTIME_DIR": tmp,
        }
        with_pass = {**base, "CHILDVAULT_PASSPHRASE": PASSPHRASES["officer1"]}
        no_pass = {k: v for k, v in base.items() if k != "CHILDVAULT_PASSPHRASE"}
        for cmd in (["list"], ["requests"]):
            print(f"{' '.join(cmd)}, {n} records, passphrase: {timed(cmd, with_pass, reps):.3f} s")
        subprocess.run([sys.executable, "-m", "childvault", "unlock"], env=with_pass, check=True)
        try:
            for cmd in (["list"], ["requests"], ["--help"]):
                print(f"{' '.join(cmd)}, {n} records, session: {timed(cmd, no_pass, reps):.3f} s")
        finally:
            subprocess.run([sys.executable, "-m", "childvault", "lock"], env=no_pass, check=True)


if __name__ == "__main__":
    main()
