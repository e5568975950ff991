"""The fixed cost of one signed round trip to ``childvault serve`` (issue 13).

Run by hand: ``python -m bench.trip [--n N] [--rounds R] [--profile DIR]``. Not part of
``python -m bench`` (it starts a server process). One server on loopback, one
client (``Vault.connect`` as a staff user, identity unlocked before timing), and
N requests of each kind, the kinds interleaved in R rounds so that a change of
machine load hits all of them alike:

- **echo**: ``POST /v1/whoami`` with a 200-byte JSON body: the transport alone
  (sign, send, limits, verify, nonce, access log, answer), no vault.
- **read**: ``POST /v1/rpc`` ``meta.get`` outside a transaction, as the remote
  backend sends it (``_post``): the transport plus one read on the DB thread.
- **txn**: ``POST /v1/txn/begin`` then ``/v1/txn/rollback``: two trips that
  open and end a write transaction, nothing stored (counted per trip).

For each kind: ms per trip (p50 / p95 / mean of wall time); CPU per trip of
the client process (``os.times``) and of the server process (utime + stime
from ``/proc/PID/stat``, all its threads), the system part in brackets; and
the voluntary context switches per trip of each ("waits": a wake-up for each
send of the other side it had to wait for, a hand-over to the DB thread), so
the figures say where the time goes even on a loaded machine. ``--profile DIR`` also records
the server with py-spy (``DIR/server-KIND.txt``, collapsed stacks) and the
client with cProfile (``DIR/client-KIND.prof``) in a separate pass.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.server import _ident, _serve, _vault
from childvault.vault import Vault

KINDS = ("echo", "read", "txn")


def _server_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user, system; every thread) the process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _switches(pid: int | str) -> int:
    """Voluntary context switches of every thread of ``pid``: each is a wait, most
    of them for the other side of a round trip (a wake-up per send received)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def _trip(backend: Any, kind: str) -> Callable[[], int]:
    """A function making one request (two for ``txn``) of ``kind``; returns the trips."""
    echo = b'{"pad":"' + b"x" * 190 + b'"}'
    read = {
        "txn": None,
        "repo": "meta",
        "method": "get",
        "args": ["vault_id"],
        "kwargs": {"$o": []},
    }

    def one_echo() -> int:
        r = backend._http.post(
            backend.url + "/v1/whoami",
            data=echo,
            headers={"Content-Type": "application/json"},
            timeout=30,
            allow_redirects=False,
        )
        assert r.status_code == 200, r.text
        return 1

    def one_read() -> int:
        backend._post("/v1/rpc", read)
        return 1

    def one_txn() -> int:
        txn = backend._post("/v1/txn/begin", {})
        backend._post("/v1/txn/rollback", {"txn": txn})
        return 2

    return {"echo": one_echo, "read": one_read, "txn": one_txn}[kind]


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * int(q * 100) // 100) - 1)]


def main(argv: list[str] | None = None) -> int:
    """Print the per-trip figures as Markdown."""
    ap = argparse.ArgumentParser(prog="python -m bench.trip")
    ap.add_argument("--n", type=int, default=1000, help="requests of each kind")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--profile", type=Path, help="also profile both sides into DIR")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="childvault-bench-trip-"))
    proc = None
    try:
        home = tmp / "served"
        _vault(home)
        proc, url = _serve(home, tmp / "server.log")
        with Vault.connect(url, _ident(home, "worker1")) as v:
            backend: Any = v._session.db
            trips = {k: _trip(backend, k) for k in KINDS}
            for k in KINDS:  # warm up: connection, caches, first nonce-store purge
                for _ in range(20):
                    trips[k]()
            wall: dict[str, list[float]] = {k: [] for k in KINDS}
            cpu_c = dict.fromkeys(KINDS, 0.0)
            sys_c = dict.fromkeys(KINDS, 0.0)
            cpu_s = dict.fromkeys(KINDS, 0.0)
            sys_s = dict.fromkeys(KINDS, 0.0)
            waits_c = dict.fromkeys(KINDS, 0)
            waits_s = dict.fromkeys(KINDS, 0)
            count = dict.fromkeys(KINDS, 0)
            per_round = max(1, args.n // args.rounds)
            for _ in range(args.rounds):
                for k in KINDS:
                    w0 = _switches("self"), _switches(proc.pid)
                    s0, c0 = _server_cpu(proc.pid), os.times()
                    for _ in range(per_round):
                        t0 = time.perf_counter()
                        n = trips[k]()
                        wall[k].append((time.perf_counter() - t0) / n)
                        count[k] += n
                    c1, s1 = os.times(), _server_cpu(proc.pid)
                    w1 = _switches("self"), _switches(proc.pid)
                    waits_c[k] += w1[0] - w0[0]
                    waits_s[k] += w1[1] - w0[1]
                    cpu_c[k] += (c1.user - c0.user) + (c1.system - c0.system)
                    sys_c[k] += c1.system - c0.system
                    cpu_s[k] += (s1[0] - s0[0]) + (s1[1] - s0[1])
                    sys_s[k] += s1[1] - s0[1]
            print(f"Machine load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
            print(
                "| trip | n | p50 ms | p95 ms | mean ms | client CPU ms/trip (system) "
                "| server CPU ms/trip (system) | waits/trip client, server |"
            )
            print("| --- | --- | --- | --- | --- | --- | --- | --- |")
            for k in KINDS:
                w, per = wall[k], 1000 / count[k]
                print(
                    f"| {k} | {count[k]} | {statistics.median(w) * 1000:.2f} | "
                    f"{_p(w, 0.95) * 1000:.2f} | {statistics.fmean(w) * 1000:.2f} | "
                    f"{cpu_c[k] * per:.2f} ({sys_c[k] * per:.2f}) | "
                    f"{cpu_s[k] * per:.2f} ({sys_s[k] * per:.2f}) | "
                    f"{waits_c[k] / count[k]:.2f}, {waits_s[k] / count[k]:.2f} |"
                )
            if args.profile is not None:
                _profile(args.profile, proc.pid, trips, args.n)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _profile(out: Path, pid: int, trips: dict[str, Callable[[], int]], n: int) -> None:
    """Record each kind's server side with py-spy and client side with cProfile."""
    out.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    for k in KINDS:
        record = ["record", "--pid", str(pid), "--format", "raw", "--rate", "1000"]
        rec = subprocess.Popen(
            [spy, *record, "--nonblocking", "--output", str(out / f"server-{k}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # py-spy attaches
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n):
            trips[k]()
        prof.disable()
        prof.dump_stats(str(out / f"client-{k}.prof"))
        rec.send_signal(2)  # SIGINT: py-spy writes what it sampled
        rec.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
