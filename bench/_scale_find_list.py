"""Part ``find_list`` of ``python -m bench.scale``: ``find`` and ``list`` on PostgreSQL
with a million synthetic records (the module docstring of :mod:`bench.scale` says how).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import loadavg, write_csv
from bench._raw import synthetic_id_number
from bench._scale_common import OWNER, ms, open_vault, pct, pg_vault, postgres_server

CHUNK = 100_000


def fill_pg(server: Any, database: str, worker: Any, total: int, say: Callable[[str], None]) -> int:
    """Copy the one real record's bookkeeping to ``total`` synthetic rows (COPY)."""
    import psycopg

    dsn = server.dsn(OWNER, database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT type, version, created_at, created_by, updated_at, consent, "
            "retain_until, metadata FROM records LIMIT 1"
        ).fetchone()
        assert row is not None, "the real record is missing"
        have = int(conn.execute("SELECT count(*) FROM records").fetchone()[0])  # type: ignore[index]
    began = time.monotonic()
    index = 0
    while have < total:
        n = min(CHUNK, total - have)
        ids = [secrets.token_hex(16) for _ in range(n)]
        values = [synthetic_id_number(index + i) for i in range(n)]
        tags = worker.index_tags("id_number", values)
        with psycopg.connect(dsn) as conn, conn.cursor() as cur:
            with cur.copy(
                "COPY records (id, type, version, created_at, created_by, updated_at, consent, "
                "retain_until, metadata) FROM STDIN"
            ) as copy:
                for rid in ids:
                    copy.write_row((rid, *row))
            with cur.copy("COPY blind_index (field, tag, record_id) FROM STDIN") as copy:
                for tag, rid in zip(tags, ids, strict=True):
                    copy.write_row(("id_number", tag, rid))
        have += n
        index += n
        say(f"  {have:,} rows ({time.monotonic() - began:.0f} s)")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE records")
        conn.execute("VACUUM ANALYZE blind_index")
    return index


def part_find_list(work: Path, total: int, lookups: int, say: Callable[[str], None]) -> list[str]:
    import random

    work.mkdir(parents=True, exist_ok=True)
    out = [f"### find and list at {total:,} records (PostgreSQL 18)", ""]
    with postgres_server() as server:
        home, ids = pg_vault(server, work / "pg-million", "cv_million")
        csv = write_csv(work / "one.csv", 1)
        with open_vault(home, ids, "worker1") as worker:
            worker.import_file(csv)
            t0 = time.monotonic()
            synthetic = fill_pg(server, "cv_million", worker, total, say)
            fill_s = time.monotonic() - t0
            rng = random.Random(total)
            for _ in range(5):  # warm the caches
                worker.find("id_number", synthetic_id_number(rng.randrange(synthetic)))
            times = []
            for _ in range(lookups):
                value = synthetic_id_number(rng.randrange(synthetic))
                t0 = time.perf_counter()
                found = worker.find("id_number", value)
                times.append(time.perf_counter() - t0)
                assert found, value
            say(f"  find p50 {ms(pct(times, 0.5))}")
            t0 = time.perf_counter()
            listing = worker.list_records()
            first = [next(listing) for _ in range(100)]
            first_s = time.perf_counter() - t0
            count = len(first) + sum(1 for _ in listing)
            all_s = time.perf_counter() - t0
            assert count == synthetic + 1, count
            say(f"  list of {count:,} in {all_s:.1f} s")
            size = _pg_size(server, "cv_million")
    out += [
        "| what | measured |",
        "| --- | --- |",
        f"| building the state (COPY of {total:,} rows + index rows, tags by the product) "
        f"| {fill_s:.0f} s |",
        f"| database size after VACUUM ANALYZE | {size} |",
        f"| `find` by blind index, p50 / p95 / max of {lookups} | {ms(pct(times, 0.5))} / "
        f"{ms(pct(times, 0.95))} / {ms(max(times))} |",
        f"| `list`: first 100 records (includes `count(*)` and the logged entry) | {ms(first_s)} |",
        f"| `list`: all {count:,} records (keyset pages of 1,000) | {all_s:.1f} s "
        f"({count / all_s:,.0f} records/s) |",
        "",
        f"Load average at the end: {loadavg()}. The synthetic rows have no field "
        "ciphertexts and no key blobs (see the module docstring).",
        "",
    ]
    return out


def _pg_size(server: Any, database: str) -> str:
    import psycopg

    with psycopg.connect(server.superuser_dsn) as conn:
        row = conn.execute("SELECT pg_size_pretty(pg_database_size(%s))", (database,)).fetchone()
    return str(row[0]) if row else "?"
