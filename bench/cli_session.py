"""A command on an unlocked session: ``childvault list`` and ``childvault requests``.

State: a local-provider vault holding ``cfg.session_records`` records (10,000
in the quick and full presets), imported by the staff user, who files
:data:`REQUESTS` access requests of three records each and then runs
``childvault unlock`` once (a session agent holds the unlocked identity, so no
command pays the Argon2id unlock). Each figure is the wall time of one whole
command as a subprocess (start-up, opening the vault through the agent, the
work, the output to a pipe), the console script installed next to the
interpreter, ``cfg.cli_reps`` times after one warm-up, interleaved with
``python -c pass``.

The product's modules are byte-compiled first (``compileall``), as ``pip
install`` does: without that, a run under ``PYTHONDONTWRITEBYTECODE`` would
time the compiler instead of the command.

- **list**: ``childvault list``: the first page (100 records) of bookkeeping,
  each record checked against its signed record statement, logged (since the
  third round; before it, every record's bookkeeping, unchecked).
- **requests**: ``childvault requests --all`` (the user's requests, logged).
- **floor**: ``python -c pass``, the interpreter's own start-up.
- **diagnostic, CPU**: the user + system CPU of each timed ``list`` and
  ``requests`` process (``getrusage`` of the children): what the command itself
  costs when the machine is shared and wall time is mostly waiting for a core.
"""

from __future__ import annotations

import compileall
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench._common import PASSPHRASES, Config, Figure, Result, build_template, loadavg, ratio
from bench._common import write_csv as _write_csv
from bench.cli_help import _script

NAME = "cli_session"
#: The target: a command on an unlocked session within 0.3 s.
TARGET_MS = 300.0
#: Access requests the staff user files before the timing (what `requests` lists).
REQUESTS = 20


def _wall(cmd: list[str], env: dict[str, str], cpu: list[float] | None = None) -> float:
    """Wall milliseconds of one run of ``cmd``; its CPU milliseconds (user + system
    of the process, not the agent's) appended to ``cpu`` if given."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True, env=env)
    wall = (time.perf_counter() - t0) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        cpu.append(used * 1000)
    return wall


def run(cfg: Config, sys_path: list[str] | None = None) -> Result:
    import childvault

    work = cfg.workdir / NAME
    work.mkdir(parents=True, exist_ok=True)
    tpl = build_template(work / "template" / "home")
    home = tpl.copy(work / "home")
    source = _write_csv(work / "records.csv", cfg.session_records)
    with tpl.open(home, "worker1") as v:
        # The generated rows repeat identity numbers past 6,000 records: this
        # benchmark times listing, not the duplicate check.
        ids = list(v.import_file(source, allow_duplicates=True).record_ids)
        # The tiny preset (the smoke test) has fewer than 3 x REQUESTS records.
        for i in range(min(REQUESTS, len(ids) // 3)):
            v.request_access(ids[3 * i : 3 * i + 3], ["name"], "case_management", f"home visit {i}")
    for package in [*(sys_path or []), str(Path(childvault.__file__).parent)]:
        compileall.compile_dir(package, quiet=1)
    env = dict(os.environ)
    if sys_path:
        env["PYTHONPATH"] = os.pathsep.join([*sys_path, env.get("PYTHONPATH", "")]).strip(
            os.pathsep
        )
    env.update(
        CHILDVAULT_HOME=str(home),
        CHILDVAULT_USER="worker1",
    )
    script = _script()
    unlock_env = {**env, "CHILDVAULT_PASSPHRASE": PASSPHRASES["worker1"]}
    subprocess.run(
        [*script, "unlock", "--for", "1h"], capture_output=True, check=True, env=unlock_env
    )
    try:
        list_cmd = [*script, "list"]
        req_cmd = [*script, "requests", "--all"]
        py_cmd = [sys.executable, "-c", "pass"]
        for cmd in (list_cmd, req_cmd, py_cmd):
            _wall(cmd, env)
        ls, rq, py = [], [], []
        ls_cpu: list[float] = []
        rq_cpu: list[float] = []
        for _ in range(cfg.cli_reps):
            ls.append(_wall(list_cmd, env, ls_cpu))
            rq.append(_wall(req_cmd, env, rq_cpu))
            py.append(_wall(py_cmd, env))
    finally:
        subprocess.run([*script, "lock"], capture_output=True, env=env)
    n = f"{cfg.session_records:,}"
    f_ls = Figure(
        NAME, f"`childvault list`, session, {n} records", "ms", ls, higher_is_better=False
    )
    f_rq = Figure(
        NAME,
        f"`childvault requests --all`, session, {n} records",
        "ms",
        rq,
        higher_is_better=False,
    )
    f_py = Figure(NAME, "`python -c pass` wall time", "ms", py, higher_is_better=False)
    # On a shared machine the wall time is mostly waiting for a core; the CPU the
    # command's own process used is what the code changes move (the agent's
    # turns, a few signatures and one unseal, are not in it).
    f_ls_cpu = Figure(
        NAME,
        "diagnostic: `childvault list`, CPU of the process",
        "ms",
        ls_cpu,
        higher_is_better=False,
    )
    f_rq_cpu = Figure(
        NAME,
        "diagnostic: `childvault requests --all`, CPU of the process",
        "ms",
        rq_cpu,
        higher_is_better=False,
    )
    target = Figure(NAME, "target", "ms", [TARGET_MS], higher_is_better=False)
    res = Result([f_ls, f_rq, f_py, f_ls_cpu, f_rq_cpu])
    res.ratios.append(ratio(NAME, "list / 0.3 s", f_ls, target, at_most=1.0))
    res.ratios.append(ratio(NAME, "requests / 0.3 s", f_rq, target, at_most=1.0))
    res.ratios.append(ratio(NAME, "diagnostic: list / python -c pass", f_ls, f_py))
    res.ratios.append(ratio(NAME, "diagnostic: list CPU / 0.3 s", f_ls_cpu, target))
    res.ratios.append(ratio(NAME, "diagnostic: requests CPU / 0.3 s", f_rq_cpu, target))
    res.notes.append(f"commands: {' '.join(list_cmd)}; load average at the end: {loadavg()}")
    return res
