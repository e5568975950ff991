"""Coverage-guided fuzzing with atheris (libFuzzer) of every parser that reads
untrusted input: signed checkpoints, witness files, schema files, approval
tokens, CSV and JSON Lines import files (targets in fuzz_targets.py).

Each target runs in its own process from a seed corpus of valid inputs, with
libFuzzer's memory limit (``-rss_limit_mb``) and per-input time limit
(``-timeout``): any exception other than the library's own error for that
input, any input using more memory or time than that, fails the test with
libFuzzer's crash report. Skipped, with the reason, where atheris does not
install.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability._support import ROOT, record_result

pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris)")

TARGETS = ["note", "witness", "schema", "token", "csv", "jsonl"]


def _fuzz(target: str, tmp_path: Path, runs: int, seconds: int) -> dict[str, object]:
    corpus = tmp_path / target
    module = [sys.executable, "-m", "tests.reliability.fuzz_targets", target]
    env = {**os.environ, "CV_FUZZ_SCRATCH": str(tmp_path / "scratch")}
    subprocess.run([*module, "--seeds", str(corpus)], cwd=ROOT, env=env, check=True, timeout=120)
    done = subprocess.run(
        [
            *module,
            f"-runs={runs}",
            f"-max_total_time={seconds}",
            "-seed=20261124",
            "-max_len=8192",
            "-timeout=20",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
            str(corpus),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 300,
        check=False,
    )
    report = "\n".join(
        line for line in done.stderr.splitlines() if not line.startswith("INFO: Instrumenting")
    )
    assert done.returncode == 0, f"atheris found a failure in {target}:\n{report[-6000:]}"
    executed = re.search(r"stat::number_of_executed_units:\s*(\d+)", report)
    coverage = re.findall(r"cov: (\d+)", report)
    return {
        "runs": int(executed.group(1)) if executed else None,
        "coverage_edges": int(coverage[-1]) if coverage else None,
        "corpus_files": sum(1 for _ in corpus.iterdir()),
    }


def test_fuzz_every_parser_briefly(tmp_path: Path) -> None:
    """Every target in one process, for 30,000 inputs or 15 seconds."""
    figures = _fuzz("all", tmp_path, runs=30_000, seconds=15)
    record_result("test_fuzz_every_parser_briefly", **figures)


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_parsers_long(target: str, tmp_path: Path) -> None:
    figures = _fuzz(target, tmp_path, runs=1_000_000, seconds=120)
    record_result(f"test_fuzz_parsers_long[{target}]", **figures)
