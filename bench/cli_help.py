"""``childvault --help`` wall time against ``python -c pass`` (process start-up floor).

Both are started as subprocesses (``subprocess.run``, output captured), interleaved,
``cfg.cli_reps`` times each after one warm-up; the figure is the median wall time.
The ``childvault`` console script is the one installed next to the interpreter.

- **diagnostic** (not a contender): ``python -c "import click"``, the start-up
  of any click command line before it defines a single command, to show how
  much of the gap is click's own import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench._common import Config, Figure, Result, loadavg, ratio

NAME = "cli_help"


def _script() -> list[str]:
    beside = Path(sys.executable).parent / "childvault"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("childvault")
    if found:
        return [found]
    # `python -m childvault` runs the command line; `-m childvault.cli.main`
    # would only import it (that module has no `__main__` block) and print nothing.
    return [sys.executable, "-m", "childvault"]


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True, env=env)
    return (time.perf_counter() - t0) * 1000


def run(cfg: Config, sys_path: list[str] | None = None) -> Result:
    env = dict(os.environ)
    if sys_path:
        env["PYTHONPATH"] = os.pathsep.join([*sys_path, env.get("PYTHONPATH", "")]).strip(
            os.pathsep
        )
    cv_cmd = [*_script(), "--help"]
    py_cmd = [sys.executable, "-c", "pass"]
    click_cmd = [sys.executable, "-c", "import click"]
    for cmd in (cv_cmd, py_cmd, click_cmd):
        _wall(cmd, env)
    cv, py, ck = [], [], []
    for _ in range(cfg.cli_reps):
        cv.append(_wall(cv_cmd, env))
        py.append(_wall(py_cmd, env))
        ck.append(_wall(click_cmd, env))
    f_cv = Figure(NAME, "`childvault --help` wall time", "ms", cv, higher_is_better=False)
    f_py = Figure(NAME, "`python -c pass` wall time", "ms", py, higher_is_better=False)
    f_ck = Figure(
        NAME,
        'diagnostic, not a contender: `python -c "import click"` wall time',
        "ms",
        ck,
        higher_is_better=False,
    )
    res = Result([f_cv, f_py, f_ck])
    # No target since the third round: `cli_session` times a real command instead.
    res.ratios.append(ratio(NAME, "childvault --help / python -c pass", f_cv, f_py))
    res.ratios.append(ratio(NAME, "diagnostic: import click / python -c pass", f_ck, f_py))
    res.ratios.append(ratio(NAME, "diagnostic: childvault --help / import click", f_cv, f_ck))
    res.notes.append(f"command: {' '.join(cv_cmd)}; load average at the end: {loadavg()}")
    return res
