"""A consumer of the documented API type-checks strictly and runs (issue 18)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONSUMER = Path(__file__).with_name("consumer.py")


def test_consumer_script_passes_mypy_strict() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(CONSUMER)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_consumer_script_runs_from_outside_the_repository(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(CONSUMER)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
