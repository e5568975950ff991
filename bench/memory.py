"""Peak memory of an import at two sizes, each in a fresh process (must stay constant).

Each run starts ``python -m bench._memory_child`` on a fresh copy of the
local-provider home, hands it the already unlocked staff identity on stdin (so
the child never runs Argon2id, whose 256 MiB would hide everything else),
imports the CSV file and reports its peak resident set: ``VmHWM`` of
``/proc/self/status``, because on Linux ``getrusage(RUSAGE_SELF).ru_maxrss``
inherits the parent's peak across fork and exec (measured: 281 MiB before the
child did anything). It covers the whole process: Python, SQLCipher's page
cache, libsodium. The import streams the file in batches of 500 records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench._common import (
    Config,
    Figure,
    Result,
    Template,
    build_template,
    loadavg,
    ratio,
    write_csv,
)

NAME = "memory"


def _child(tpl: Template, home: object, csv: object, sys_path: list[str]) -> dict[str, float]:
    ident = tpl.ids["worker1"]
    job = {
        "home": str(home),
        "csv": str(csv),
        "name": ident.name,
        "x25519": bytes(ident._x25519).hex(),
        "ed25519": ident.signing_seed().hex(),
        # The trust anchor: an identity without one is refused in a vault that has one.
        "anchor": ident.anchor,
        "sys_path": sys_path,
    }
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*sys_path, env.get("PYTHONPATH", "")]).strip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-m", "bench._memory_child"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(cfg: Config, tpl: Template | None = None, sys_path: list[str] | None = None) -> Result:
    work = cfg.workdir / NAME
    work.mkdir(parents=True, exist_ok=True)
    if tpl is None:
        tpl = build_template(work / "template" / "home")
    paths = list(sys_path or [])
    figures, rates, loads = [], [], []
    reps = max(1, cfg.reps - 2) if cfg.reps > 1 else 1
    for size in cfg.memory_sizes:
        csv = write_csv(work / f"records-{size}.csv", size)
        peaks, speeds = [], []
        for _ in range(reps):
            home = tpl.copy(work / "home")
            out = _child(tpl, home, csv, paths)
            assert out["imported"] == size
            peaks.append(out["peak_kib"] / 1024)
            speeds.append(size / out["s"])
        os.unlink(csv)
        figures.append(
            Figure(
                NAME,
                f"peak RSS importing {size:,} records (fresh process)",
                "MiB",
                peaks,
                higher_is_better=False,
            )
        )
        rates.append(
            Figure(NAME, f"(throughput of those imports, {size:,} records)", "records/s", speeds)
        )
        loads.append(loadavg())
    res = Result([*figures, *rates])
    small, large = cfg.memory_sizes
    res.ratios.append(
        ratio(NAME, f"peak at {large:,} / peak at {small:,}", figures[1], figures[0], at_most=1.2)
    )
    res.notes.append(f"load average after each size: {' | '.join(loads)}")
    return res
