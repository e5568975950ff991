"""Part ``checkpoints`` of ``python -m bench.scale``: the checkpoints table's look-ups
without and with migration 6's indexes, on SQLCipher and on PostgreSQL.
"""

from __future__ import annotations

import functools
import secrets
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench._common import loadavg
from bench._scale_common import OWNER, postgres_server

#: What migration 6 adds (the same names on both stores); dropped for "before".
CHECKPOINT_INDEXES = ("checkpoints_signer_size", "checkpoints_size")
SIGNERS = 20
#: Calls timed per query, store and size (alternating before and after).
CHECKPOINT_CALLS = 30


def _checkpoint_rows(n: int) -> Iterator[tuple[int, bytes, str, str, str, bytes]]:
    """``n`` checkpoint rows as approvals leave them: signers in turn, sizes growing
    (about 5 log entries an approval), a note and a Merkle state of real length."""
    for i in range(n):
        size = 5 * (i + 1)
        state = secrets.token_bytes(32 * max(1, size.bit_length()))
        note = f"childvault/test\n{size}\n{'A' * 44}\n\n\u2014 officer {'B' * 88}\n"
        yield size, secrets.token_bytes(32), note, f"officer{i % SIGNERS}", "2026-12-01", state


def _median_per_call(
    calls: Sequence[Callable[[], object]], clock: Callable[[], float]
) -> list[float]:
    """Each of ``calls`` run :data:`CHECKPOINT_CALLS` times, in turn; the median
    ``clock`` time of one call of each."""
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(CHECKPOINT_CALLS):
        for i, call in enumerate(calls):
            t0 = clock()
            call()
            times[i].append(clock() - t0)
    return [statistics.median(t) for t in times]


def _sqlcipher_checkpoints(work: Path, n: int) -> list[str]:
    from childvault.vault._sqlcipher import SQLCipherBackend

    stores = []
    rows = list(_checkpoint_rows(n))
    for name in ("before", "after"):
        store = SQLCipherBackend(work / f"{name}-{n}.db", secrets.token_bytes(32), create=True)
        with store.transaction():
            store._conn.many(
                "INSERT INTO checkpoints (size, root, note, signer, created_at, resume_state) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            if name == "before":
                for index in CHECKPOINT_INDEXES:
                    store._conn.q(f"DROP INDEX {index}")
        stores.append(store)
    try:
        claimed = 5 * (n - SIGNERS)
        assert stores[0].checkpoints.latest_by("officer7") == stores[1].checkpoints.latest_by(
            "officer7"
        )
        assert stores[0].checkpoints.since(claimed) == stores[1].checkpoints.since(claimed)
        assert len(stores[1].checkpoints.since(claimed)) == SIGNERS + 1
        lines = []
        for what, call in (
            ("latest_by", lambda s: s.checkpoints.latest_by("officer7")),
            ("since", lambda s: s.checkpoints.since(claimed)),
        ):
            before, after = _median_per_call(
                [functools.partial(call, s) for s in stores], time.process_time
            )
            lines.append(
                f"| SQLCipher | {n:,} | `{what}` | {before * 1e3:,.3f} ms CPU "
                f"| {after * 1e3:,.3f} ms CPU | {before / max(after, 1e-9):,.0f} x |"
            )
        return lines
    finally:
        for store in stores:
            store.close()


def _pg_checkpoints(server: Any, n: int, tag: str) -> list[str]:
    import psycopg

    from childvault.vault._postgres import PostgresBackend

    stores = []
    dsns = []
    rows = list(_checkpoint_rows(n))
    for name in ("before", "after"):
        database = f"cv_checkpoints_{name}_{tag}"
        with psycopg.connect(server.superuser_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}" OWNER {OWNER}')
        dsn = server.dsn(OWNER, database)
        PostgresBackend(dsn, create=True).close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            with conn.cursor().copy(
                "COPY checkpoints (size, root, note, signer, created_at, resume_state) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
            if name == "before":
                for index in CHECKPOINT_INDEXES:
                    conn.execute(f"DROP INDEX {index}")
            conn.execute("VACUUM ANALYZE checkpoints")
        dsns.append(dsn)
        stores.append(PostgresBackend(dsn))
    try:
        claimed = 5 * (n - SIGNERS)
        assert stores[0].checkpoints.latest_by("officer7") == stores[1].checkpoints.latest_by(
            "officer7"
        )
        assert stores[0].checkpoints.since(claimed) == stores[1].checkpoints.since(claimed)
        queries = {
            "latest_by": (
                "SELECT note, resume_state FROM checkpoints WHERE signer = %s "
                "AND length(resume_state) > 0 ORDER BY size DESC, id DESC LIMIT 1",
                ("officer7",),
            ),
            "since": (
                "SELECT id, size, root, note, signer, created_at FROM checkpoints "
                "WHERE size >= %s ORDER BY size, id",
                (claimed,),
            ),
        }
        lines = []
        for what, call in (
            ("latest_by", lambda s: s.checkpoints.latest_by("officer7")),
            ("since", lambda s: s.checkpoints.since(claimed)),
        ):
            before, after = _median_per_call(
                [functools.partial(call, s) for s in stores], time.perf_counter
            )
            plans = []
            for dsn in dsns:
                # The server's own time, least of 5 (TIMING OFF: no per-row clock reads).
                with psycopg.connect(dsn, autocommit=True) as conn:
                    found = []
                    for _ in range(5):
                        row = conn.execute(
                            "EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + queries[what][0],
                            queries[what][1],
                        ).fetchone()
                        assert row is not None
                        found.append(row[0][0])
                plan = min(found, key=lambda p: float(p["Execution Time"]))
                node = plan["Plan"]
                while node.get("Plans") and node["Node Type"] in {"Limit", "Sort", "Gather"}:
                    node = node["Plans"][0]
                plans.append((plan["Execution Time"], node["Node Type"], node.get("Index Name")))
            (b_exec, b_node, _), (a_exec, a_node, a_index) = plans
            lines.append(
                f"| PostgreSQL | {n:,} | `{what}` | {before * 1e3:,.3f} ms wall, "
                f"{b_exec:,.3f} ms server ({b_node}) | {after * 1e3:,.3f} ms wall, "
                f"{a_exec:,.3f} ms server ({a_node} {a_index}) "
                f"| {before / max(after, 1e-9):,.0f} x |"
            )
        return lines
    finally:
        for store in stores:
            store.close()


def part_checkpoints(work: Path, sizes: Sequence[int], say: Callable[[str], None]) -> list[str]:
    """``latest_by`` and ``since`` without and with migration 6's indexes, both stores."""
    work.mkdir(parents=True, exist_ok=True)
    lines = [
        "### The checkpoints table's look-ups (without / with migration 6's indexes)",
        "",
        f"{SIGNERS} signers in turn; `latest_by` of one of them, `since` the size of its "
        f"last checkpoint but {SIGNERS} ({SIGNERS + 1} rows); median of {CHECKPOINT_CALLS} "
        f"calls each, before and after alternated. Load average {loadavg()}.",
        "",
        "| store | checkpoints | call | without the indexes | with them | ratio |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for n in sizes:
        say(f"  SQLCipher, {n:,} checkpoints")
        lines += _sqlcipher_checkpoints(work, n)
    with postgres_server() as server:
        for n in sizes:
            say(f"  PostgreSQL, {n:,} checkpoints")
            lines += _pg_checkpoints(server, n, str(n))
    lines += ["", f"Load average at the end {loadavg()}.", ""]
    return lines
