"""The docs/library.md example runs from outside the repository (issue 18).

``tests/test_docs.py`` runs it inside the test process; here it runs as a
separate program in a temporary directory, so it can only use what an
installed childvault offers (no import of the repository's ``tests`` or
files relative to the checkout).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.test_docs import ROOT, _example


def test_library_example_runs_outside_the_repository(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_example(), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr
    assert not str(tmp_path).startswith(str(ROOT))
