"""A connection's cost (round 2 session 11): ``VaultHost.describe`` with a
witness file of its own, as the stored checkpoints grow.

In process, on a SQLCipher vault made by the server tests' helper: N
checkpoints (``Vault.checkpoint`` in a loop), then a host with
``witness=`` (what ``serve --witness-file`` gives) answers describe. Reported:
CPU seconds (``time.process_time``) of the first describe (a fresh process
reads every row once), of later ones, and of one with the host's mark
forgotten (what every describe cost before: every row read and verified, the
witness file read; "forgotten" with the note memory of
``_note.open_note`` warm, "cold" with it cleared, as when more than its 4,096
notes are stored), the stored checkpoints read by the catch-up and the
answer's JSON size and (round 2 session 12) how many times it read the
witness file; each as [CPU s, rows read, answer bytes, witness reads]. Also
``one_new``: a describe after one more checkpoint stored by another writer,
and ``held_bytes``: what the host keeps in memory to notice a witness cut
short (the set of note bodies before; a count and a digest now).
Run: ``python -m bench.connect 0 200 1000``; the same against an older tree
(``PYTHONPATH``) gives the figures from before.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from childvault.server._vault import VaultHost, unlock_home_as
from childvault.vault import Vault, _audit, _note
from tests.server._vaultserver import make_vault, passphrase


def _counted(host: VaultHost) -> list[int]:
    """Count the checkpoint rows the host's catch-up reads (all / after)."""
    seen = [0]
    repo = host.db.checkpoints
    every = repo.all
    # A tree from before this change (PYTHONPATH) has no ``after``: only ``all``.
    after = getattr(repo, "after", None)

    def all_() -> Any:
        rows = every()
        seen[0] += len(rows)
        return rows

    def after_(last: int) -> Any:
        assert after is not None
        rows = after(last)
        seen[0] += len(rows)
        return rows

    repo.all = all_  # type: ignore[method-assign]
    if after is not None:
        repo.after = after_  # type: ignore[method-assign]
    return seen


def _count_reads() -> list[int]:
    """Count the witness file reads (every reader goes through ``witness_lines``)."""
    seen = [0]
    lines = _audit.witness_lines

    def counted(path: Path) -> list[dict[str, Any]]:
        seen[0] += 1
        return lines(path)

    _audit.witness_lines = counted  # type: ignore[assignment]
    return seen


def _held_bytes(held: Any) -> int:
    """The memory of the host's record of what its witness held (bytes)."""
    if held is None:
        return 0
    if isinstance(held, set):  # a tree from before: every note body
        return sys.getsizeof(held) + sum(sys.getsizeof(b) for b in held)
    return sys.getsizeof(held) + sum(sys.getsizeof(x) for x in held)


def run(n: int, root: Path) -> dict[str, Any]:
    """Figures for ``n`` stored checkpoints."""
    vs = make_vault(root, ("officer1", "worker1"))
    with Vault.open(vs.home, "officer1", passphrase("officer1")) as v:
        for _ in range(n):
            v.checkpoint()
    key, anchor, _ = unlock_home_as(vs.home, "admin", passphrase("admin"))
    host = VaultHost(vs.home, key, anchor, witness=root / "own.jsonl")
    seen = _counted(host)
    reads = _count_reads()
    loop = asyncio.new_event_loop()
    out: dict[str, Any] = {"checkpoints": n}
    try:

        def describe() -> tuple[float, int, int, int]:
            before, read, t0 = seen[0], reads[0], time.process_time()
            answer = loop.run_until_complete(host.describe("officer1"))
            cpu = time.process_time() - t0
            return cpu, seen[0] - before, len(json.dumps(answer)), reads[0] - read

        out["first"] = describe()
        later = [describe() for _ in range(5)]
        out["later"] = (min(c for c, *_ in later), *later[-1][1:])
        with Vault.open(vs.home, "officer1", passphrase("officer1")) as v:
            v.checkpoint()
        out["one_new"] = describe()
        out["held_bytes"] = _held_bytes(host._witness_held)
        forgot = []
        for _ in range(3):
            host._witness_mark = None
            forgot.append(describe())
        out["forgotten"] = (min(c for c, *_ in forgot), *forgot[-1][1:])
        cold = []
        for _ in range(3):
            host._witness_mark = None
            with _note._VERIFIED_LOCK:
                _note._VERIFIED.clear()
            cold.append(describe())
        out["cold"] = (min(c for c, *_ in cold), *cold[-1][1:])
    finally:
        host.close()
        loop.close()
    return out


def main(argv: list[str]) -> None:
    """Print one line of figures per checkpoint count given."""
    for arg in argv or ["0", "200", "1000"]:
        with tempfile.TemporaryDirectory() as tmp:
            r = run(int(arg), Path(tmp))
        print(json.dumps(r), "load", os.getloadavg()[0], flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
