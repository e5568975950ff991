"""Request, approve and read one step at a time, embedded and through ``childvault serve``.

``python -m bench.steps [--rows N] [--cycles N]``: two fresh vaults (bench.server's
helpers), the same synthetic rows imported into each, then ``--cycles`` rounds of
request -> approve -> read of 10 records x 2 fields, first on the embedded vault,
then through a server on loopback. For each step it prints the median wall time
and client CPU (``time.process_time``) and the mean server CPU (``/proc/PID/stat``,
in 10 ms ticks: only a mean over many cycles means anything) of the cycles after
the first three (the first ones fill caches and the trust state).

It splits what ``python -m bench.server`` reports as one approve + read figure
into its steps and sides: where a change to the client or to the server shows.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench import server as bs
from bench._common import write_csv
from childvault.vault import Vault

#: Steps of one cycle, in order.
STEPS = ("request", "approve", "read")


def main(argv: list[str] | None = None) -> int:
    """Run the cycles and print one line per mode and step."""
    ap = argparse.ArgumentParser(prog="python -m bench.steps")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--cycles", type=int, default=25)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="childvault-bench-steps-"))
    served, embedded = tmp / "served", tmp / "embedded"
    bs._vault(served)
    bs._vault(embedded)
    source = write_csv(tmp / "rows.csv", args.rows)
    proc, url = bs._serve(served, tmp / "server.log")
    try:
        for mode in ("embedded", "server"):
            if mode == "server":
                worker = Vault.connect(url, bs._ident(served, "worker1"))
                officer = Vault.connect(url, bs._ident(served, "officer1"))
                pid: int | None = proc.pid
            else:
                worker = Vault.open(embedded, identity=bs._ident(embedded, "worker1"))
                officer = Vault.open(embedded, identity=bs._ident(embedded, "officer1"))
                pid = None
            with worker, officer:
                worker.import_file(source)
                ids = [r.id for r in worker.list_records()][:10]
                samples: dict[str, list[tuple[float, float, float]]] = {s: [] for s in STEPS}
                request = token = None
                for _ in range(args.cycles):
                    for step in STEPS:
                        c0, s0 = time.process_time(), bs._server_cpu(pid)
                        t0 = time.perf_counter()
                        if step == "request":
                            request = worker.request_access(
                                ids, ["name", "guardian_phone"], "case_management", "bench"
                            )
                        elif step == "approve":
                            assert request is not None
                            token = officer.approve(request).token
                        else:
                            assert token is not None
                            assert len(worker.read_with_grant(token)) == len(ids)
                        samples[step].append(
                            (
                                time.perf_counter() - t0,
                                time.process_time() - c0,
                                bs._server_cpu(pid) - s0,
                            )
                        )
            for step in STEPS:
                kept = samples[step][3:]
                wall = statistics.median(x[0] for x in kept) * 1000
                cpu = statistics.median(x[1] for x in kept) * 1000
                server = statistics.fmean(x[2] for x in kept) * 1000
                print(
                    f"{mode:8} {step:7} wall {wall:5.1f}  client cpu {cpu:5.1f}  "
                    f"server cpu {server:5.1f} ms"
                )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
