"""Run every childvault benchmark in one process tree and write ``docs/benchmarks.md``.

Usage (from the repository root, with the project and its ``test`` extra installed)::

    .venv/bin/python -m bench            # the full run (about half an hour on 2 cores)
    .venv/bin/python -m bench --quick    # smaller sizes, a few minutes
    .venv/bin/python -m bench --only local_import,cli_help --out /tmp/b.md

``--product DIR`` benchmarks the ``vault``/``keys``/``cli`` packages found in
DIR instead of the installed ones (used to measure a tree before a fix).
Timings never go into the test suite; ``tests/test_bench_smoke.py`` runs every
benchmark at a tiny size only to keep this harness working.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

BENCHES = (
    "local_import",
    "vault_import",
    "approve_read",
    "audit_verify",
    "cli_help",
    "cli_session",
    "memory",
    "find_index",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    size.add_argument("--tiny", action="store_true", help="smoke-test sizes (seconds)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument(
        "--only", default="", help="comma-separated subset of: " + ", ".join(BENCHES)
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="scratch directory (default: a temp dir)"
    )
    parser.add_argument("--product", type=Path, default=None, help="benchmark the packages in DIR")
    parser.add_argument("--title", default=None, help="heading of the written report")
    parser.add_argument(
        "--include",
        type=Path,
        action="append",
        default=[],
        help="append this file (e.g. the summary of an earlier run) to the report",
    )
    args = parser.parse_args(argv)

    sys_path: list[str] = []
    if args.product is not None:
        sys_path = [str(args.product.resolve())]
        sys.path.insert(0, sys_path[0])

    from bench import _common, _report

    preset = _common.TINY if args.tiny else _common.QUICK if args.quick else _common.FULL
    chosen = [b for b in args.only.split(",") if b] or list(BENCHES)
    unknown = sorted(set(chosen) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    with tempfile.TemporaryDirectory(prefix="childvault-bench-", dir=args.workdir) as tmp:
        cfg = _common.Config(workdir=Path(tmp), **preset)  # type: ignore[arg-type]
        results, failures = run_all(cfg, chosen, sys_path)
    import childvault

    started = datetime.now(UTC)
    text = _report.render(
        cfg=dataclasses.replace(cfg, workdir=Path("(temporary)")),
        results=results,
        failures=failures,
        machine=_common.machine(),
        command=" ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        product=str(Path(childvault.__file__).parent.parent),
        when=started,
        title=args.title,
        includes=args.include,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 1 if failures else 0


def run_all(cfg, chosen, sys_path):  # type: ignore[no-untyped-def]
    """Run the chosen benchmarks; return ({name: Result}, {name: traceback})."""
    from bench import _bao, _common

    results: dict[str, object] = {}
    failures: dict[str, str] = {}
    local_tpl = None
    bao = None

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg} (load {_common.loadavg()})", file=sys.stderr)

    try:
        if set(chosen) & {"local_import", "approve_read", "audit_verify", "memory", "find_index"}:
            log("building the local-provider template home (Argon2id unlocks)")
            local_tpl = _common.build_template(cfg.workdir / "local-template" / "home")
        if set(chosen) & {"vault_import", "approve_read"}:
            log("starting the OpenBao dev server")
            bao = _bao.start(cfg.workdir / "vault")
        for name in chosen:
            log(f"running {name}")
            t0 = time.perf_counter()
            try:
                results[name] = _run_one(name, cfg, local_tpl, bao, sys_path)
            except Exception:
                failures[name] = traceback.format_exc()
                log(f"{name} FAILED")
                print(failures[name], file=sys.stderr)
            log(f"{name} took {time.perf_counter() - t0:.0f} s")
    finally:
        if bao is not None:
            bao.close()
    return results, failures


def _run_one(name, cfg, local_tpl, bao, sys_path):  # type: ignore[no-untyped-def]
    import importlib

    mod = importlib.import_module(f"bench.{name}")
    if name == "local_import":
        return mod.run(cfg, local_tpl)
    if name == "vault_import":
        return mod.run(cfg, bao)
    if name == "approve_read":
        return mod.run(cfg, bao, local_tpl)
    if name in ("audit_verify", "find_index"):
        return mod.run(cfg, local_tpl)
    if name == "memory":
        return mod.run(cfg, local_tpl, sys_path)
    if name in ("cli_help", "cli_session"):
        return mod.run(cfg, sys_path)
    raise AssertionError(name)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
