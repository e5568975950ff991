"""``childvault serve`` against the embedded mode, over loopback (issue 13).

Run by hand: ``python -m bench.server [--rows N] [--reps R] [--calls C]``. It
is not part of ``python -m bench`` (it starts a server process and opens
sockets); it prints a Markdown table. Figures:

- **import**: ``Vault.import_file`` of the same N-row CSV by a staff user,
  embedded (SQLCipher in process) vs through the server (``Vault.connect``);
  rows/s, and the ratio server / embedded (issue target >= 0.7); then the
  import's CPU seconds, embedded and through the server per side (client:
  this process, all its threads; server: its process, from ``/proc``).
- **approve + read**: an officer approves a request for 10 records x 2 fields
  and the requester reads them; median seconds of R repetitions each way, and
  the ratio server / embedded (target <= 1.5).
- **list / requests with 8 clients**: 8 client processes each make C calls of
  ``list_records`` (then ``requests``) through the server; requests per second
  over the wall time, and p50 / p95 of one call.

Both vaults are opened before timing (no Argon2id unlock in the figures).
``--trips`` also prints the HTTP round trips each server-mode step made
(counted at the client): the import, and one request, approval and read.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench._common import write_csv
from childvault.keys import Identity
from childvault.vault import Vault

PASS = {"admin": "bench-admin-pass-123", "officer1": "bench-officer-123", "worker1": "bench-w-123"}


def _vault(home: Path) -> None:
    with Vault.init(home, institution="bench", admin="admin", admin_passphrase=PASS["admin"]) as v:
        v.add_user("officer1", ["officer"], PASS["officer1"])
        v.add_user("worker1", ["staff"], PASS["worker1"])


def _ident(home: Path, user: str) -> Identity:
    return Identity.load(home / "identities" / f"{user}.id", PASS[user])


def _serve(home: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, CHILDVAULT_PASSPHRASE=PASS["admin"])
    cmd = [sys.executable, "-m", "childvault", "--home", str(home), "--as", "admin", "serve"]
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [*cmd, "--listen", f"127.0.0.1:{port}"], stdout=fh, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start:\n{log.read_text()}")


#: The first ``"repo":..,"method":..`` of a request body (the client's compact JSON).
_FIRST_CALL = re.compile(rb'"repo":"([a-z_]+)","method":"([a-z_]+)"')


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _counting(v: Vault) -> dict[str, int]:
    """Count the HTTP requests ``v``'s remote backend sends (``total``), by the first
    repository call each carries (``repo.method``; ``commit`` for a bare commit)."""
    backend: Any = v._session.db
    counts: dict[str, int] = {"total": 0}
    send = backend._send

    def counted(path: str, body: bytes, *, raw: bool = False) -> Any:
        counts["total"] += 1
        # The first call's name from the body's start: parsing a whole import
        # batch (megabytes) here would be timed as the server's (it was, before
        # round 2 session 8).
        first = _FIRST_CALL.search(body[:400])
        name = f"{first[1].decode()}.{first[2].decode()}" if first else "commit"
        counts[name] = counts.get(name, 0) + 1
        return send(path, body, raw=raw)

    backend._send = counted
    return counts


def _trips(url: str, served: Path, ids: list[str]) -> None:
    """Print the round trips of one request, approval and read through the server."""
    with (
        Vault.connect(url, _ident(served, "worker1")) as worker,
        Vault.connect(url, _ident(served, "officer1")) as officer,
    ):
        steps = []
        for name, v, step in (
            (
                "request",
                worker,
                lambda: worker.request_access(
                    ids, ["name", "guardian_phone"], "case_management", "bench"
                ),
            ),
            ("approve", officer, lambda: officer.approve(steps[0][1]).token),
            ("read", worker, lambda: worker.read_with_grant(steps[1][1])),
        ):
            counts = _counting(v)
            steps.append((name, step(), dict(counts)))
            del v._session.db._send  # the class's own again
    for name, _, counts in steps:
        detail = ", ".join(f"{k} {n}" for k, n in sorted(counts.items()) if k != "total")
        print(f"- {name}: {counts['total']} round trips ({detail})")


def _server_cpu(pid: int | None) -> float:
    """CPU seconds (user + system, every thread) process ``pid`` has used; 0 for None."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _approve_read(
    worker: Vault, officer: Vault, ids: list[str], pid: int | None = None
) -> tuple[float, float]:
    """Wall seconds of one approve + read, and the CPU seconds it took: this
    process's (both clients, or the embedded vault) plus the server's (``pid``)."""
    req = worker.request_access(ids, ["name", "guardian_phone"], "case_management", "bench")
    c0, s0 = time.process_time(), _server_cpu(pid)
    t0 = time.perf_counter()
    out = worker.read_with_grant(officer.approve(req).token)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0 + _server_cpu(pid) - s0
    assert len(out) == len(ids)
    return seconds, cpu


def _client(url: str, ident_file: str, calls: int, what: str, q: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    # Always answer: a client that raised and put nothing left the parent waiting
    # out its hour-long timeout (found in session 10). The error goes back instead.
    try:
        ident = Identity.load(Path(ident_file), PASS["worker1"])
        with Vault.connect(url, ident) as v:
            times = []
            for _ in range(calls):
                t0 = time.perf_counter()
                if what == "list":
                    list(v.list_records())
                else:
                    v.requests()
                times.append(time.perf_counter() - t0)
    except BaseException as exc:
        q.put(f"{what} client failed: {type(exc).__name__}: {exc}")
        raise
    q.put(times)


def _parallel(url: str, ident_file: Path, calls: int, what: str) -> tuple[float, float, float]:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(url, str(ident_file), calls, what, q)) for _ in range(8)
    ]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    times: list[float] = []
    for _ in procs:
        answer = q.get(timeout=3600)
        if isinstance(answer, str):
            for p in procs:
                p.kill()
            raise RuntimeError(answer)
        times += answer
    wall = time.perf_counter() - t0
    for p in procs:
        p.join(timeout=60)
    times.sort()
    return len(times) / wall, times[len(times) // 2], times[int(len(times) * 0.95) - 1]


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * 95 // 100) - 1)]


def main(argv: list[str] | None = None) -> int:
    """Run the figures and print them as Markdown."""
    ap = argparse.ArgumentParser(prog="python -m bench.server")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--trips", action="store_true", help="also count round trips")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="childvault-bench-server-"))
    proc = None
    try:
        embedded, served = tmp / "embedded", tmp / "served"
        _vault(embedded)
        _vault(served)
        # Distinct synthetic children (bench._common): the import checks for
        # duplicates as a person's import does, and every record can be approved.
        source = write_csv(tmp / "rows.csv", args.rows)
        proc, url = _serve(served, tmp / "server.log")
        with Vault.open(embedded, identity=_ident(embedded, "worker1")) as w:
            c0, t0 = time.process_time(), time.perf_counter()
            w.import_file(source)
            emb_import = time.perf_counter() - t0
            emb_cpu = time.process_time() - c0
        with Vault.connect(url, _ident(served, "worker1")) as w:
            import_trips = _counting(w)
            s0, c0, t0 = _cpu_of(proc.pid), time.process_time(), time.perf_counter()
            w.import_file(source)
            srv_import = time.perf_counter() - t0
            # CPU per side (all threads): the wall-clock ratio on a shared machine
            # measures the machine; these measure the import.
            cli_cpu, srv_cpu = time.process_time() - c0, _cpu_of(proc.pid) - s0
        lat: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        for mode in ("embedded", "server"):
            home = embedded if mode == "embedded" else served
            if mode == "embedded":
                worker = Vault.open(home, identity=_ident(home, "worker1"))
                officer = Vault.open(home, identity=_ident(home, "officer1"))
            else:
                worker = Vault.connect(url, _ident(home, "worker1"))
                officer = Vault.connect(url, _ident(home, "officer1"))
            with worker, officer:
                ids = [r.id for r in worker.list_records()][:10]
                pid = proc.pid if mode == "server" else None
                runs = [_approve_read(worker, officer, ids, pid) for _ in range(args.reps)]
                lat[mode], cpu[mode] = [w for w, _ in runs], [c for _, c in runs]
        ident_file = served / "identities" / "worker1.id"
        listing = _parallel(url, ident_file, args.calls, "list")
        reqs = _parallel(url, ident_file, args.calls, "requests")
        e_med, s_med = statistics.median(lat["embedded"]), statistics.median(lat["server"])
        e_p95, s_p95 = _p95(lat["embedded"]), _p95(lat["server"])
        print(f"Machine load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
        print("| figure | embedded | server | server / embedded |")
        print("| --- | --- | --- | --- |")
        print(
            f"| import {args.rows} rows (rows/s) | {args.rows / emb_import:.0f} | "
            f"{args.rows / srv_import:.0f} | {emb_import / srv_import:.2f} |"
        )
        print(
            f"| approve + read, 10 records x 2 fields (p50 s of {args.reps}) | "
            f"{e_med:.3f} | {s_med:.3f} | {s_med / e_med:.2f} |"
        )
        print(
            f"| approve + read, 10 records x 2 fields (p95 s of {args.reps}) | "
            f"{e_p95:.3f} | {s_p95:.3f} | {s_p95 / e_p95:.2f} |"
        )
        # CPU, not wall: less moved by other jobs on a shared machine. Ticks of
        # 10 ms on the server side: a mean over the repetitions.
        e_cpu, s_cpu = statistics.fmean(cpu["embedded"]), statistics.fmean(cpu["server"])
        print(
            f"| approve + read CPU, client + server (mean ms of {args.reps}) | "
            f"{e_cpu * 1000:.1f} | {s_cpu * 1000:.1f} | {s_cpu / e_cpu:.2f} |"
        )
        for name, (rps, p50, p95) in (("list", listing), ("requests", reqs)):
            print(
                f"| `{name}` with 8 clients x {args.calls} calls | - | {rps:.1f} req/s, "
                f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms | - |"
            )
        print(
            f"\nImport CPU (s): embedded {emb_cpu:.3f}; through the server: client "
            f"{cli_cpu:.3f}, server {srv_cpu:.3f}"
        )
        if args.trips:
            print(f"\nRound trips through the server:\n\n- import: {import_trips['total']}")
            _trips(url, served, ids)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
