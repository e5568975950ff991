"""Part ``throughput`` of ``python -m bench.scale``: import and read through real
``childvault serve`` replicas over SQLCipher and PostgreSQL, one client and two at once.

The client processes are spawned with this module's :func:`_client` as their target.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench._common import FIELDS, PASSPHRASES, build_template, loadavg, write_csv
from bench._scale_common import ms, pg_vault, postgres_server


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
