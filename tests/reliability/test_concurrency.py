"""Concurrency: 4 writer processes and 2 reader processes on one home.

Writers (two staff, two officers) add records one transaction at a time and
file access requests; the officers approve the requests of "their" staff
member as they arrive (each approval signs a checkpoint and appends it to the
witness). Readers read with multi-use grants, verify the whole log and list
records, re-opening the vault now and then. Every process starts at the same
moment (after its slow Argon2 unlock).

Checked: no process saw an error (in particular no "database is locked");
no lost write (every id a writer was given exists, counts per actor match the
log); sequence numbers are 0..n-1 without duplicates; ``audit verify`` passes,
so the log is one linear chain consistent with every stored and witnessed
checkpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from childvault.keys import Identity
from childvault.vault._time import iso
from tests.conftest import START, World, add_children, child_values, copy_world
from tests.reliability._support import ROOT, audit_entries, cli_env, record_result, verify

WRITERS = {"worker1": None, "worker2": None, "officer1": "worker1", "officer2": "worker2"}
READERS = ("worker1", "worker2")
USES = 10  # the vault's maximum uses per grant


def _run(world: World, tmp: Path, writer_ops: int, reader_ops: int) -> dict[str, object]:
    with world.open("worker1") as v:
        shared = add_children(v, 3)
    tokens: dict[str, list[str]] = {}
    for reader in READERS:
        tokens[reader] = []
        for _ in range(-(-reader_ops // USES)):
            with world.open(reader) as v:
                req = v.request_access(shared, ["name", "address"], "case_management", "读")
            with world.open("officer1") as v:
                tokens[reader].append(v.approve(req, uses=USES).token)
    expected = {
        rid: {"name": child_values(i)["name"], "address": child_values(i)["address"]}
        for i, rid in enumerate(shared)
    }
    before = Counter((e["actor"], e["action"], e["outcome"]) for e in audit_entries(world))
    go = tmp / "go"
    procs = []
    specs = []
    for n, (user, approve_for) in enumerate(WRITERS.items()):
        specs.append(
            {"kind": "writer", "user": user, "ops": writer_ops, "seed": 1000 * (n + 1)}
            | ({"approve_for": approve_for} if approve_for else {})
        )
    for user in READERS:
        specs.append(
            {
                "kind": "reader",
                "user": user,
                "ops": reader_ops,
                "tokens": tokens[user],
                "uses": USES,
                "expected": expected,
            }
        )
    for n, spec in enumerate(specs):
        spec |= {
            "home": str(world.home),
            "clock": iso(START),
            "ready": str(tmp / f"ready{n}"),
            "go": str(go),
        }
        path = tmp / f"spec{n}.json"
        path.write_text(json.dumps(spec))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.reliability._worker", str(path)],
                cwd=ROOT,
                env=cli_env(world.home, None),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    ready_by = time.monotonic() + 180
    while not all((tmp / f"ready{n}").exists() for n in range(len(specs))):
        assert time.monotonic() < ready_by, "workers did not unlock in time"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    began = time.monotonic()
    go.touch()
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr
        assert "locked" not in stderr.lower() and "busy" not in stderr.lower(), stderr
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    elapsed = time.monotonic() - began
    errors = [e for r in results for e in r["errors"]]
    assert not errors, errors

    # No lost write: every id handed out exists, every operation left its entry.
    entries = audit_entries(world)  # also asserts seq = 0..n-1
    after = Counter((e["actor"], e["action"], e["outcome"]) for e in entries)
    delta = after - before
    with world.open("officer1") as v:
        live = {r.id for r in v.list_records()}
        reqs = {r.id: r for r in v.requests(None)}
    created = [rid for r in results if r["kind"] == "writer" for rid in r["created"]]
    assert len(created) == len(set(created))
    assert set(created) <= live and len(live) == len(created) + len(shared)
    for r in results:
        user = r["user"]
        if r["kind"] == "writer":
            assert len(r["created"]) + len(r["requests"]) == writer_ops
            assert delta[(user, "record.create", "ok")] == len(r["created"])
            assert delta[(user, "request.create", "ok")] == len(r["requests"])
            assert all(q in reqs for q in r["requests"])
            assert delta[(user, "request.approve", "ok")] == len(r["approved"])
        else:
            assert r["reads"] == reader_ops
            assert delta[(user, "grant.read", "ok")] == reader_ops
    # Each staff request was approved by its officer exactly once (or is still pending
    # if it arrived after that officer's last operation).
    approved = [g for r in results if r["kind"] == "writer" for g in r["approved"]]
    assert len(approved) == len(set(approved))
    staff_requests = [q for r in results if r["user"] in READERS for q in r.get("requests", [])]
    statuses = Counter(reqs[q].status for q in staff_requests)
    assert statuses["approved"] == len(approved) and statuses["denied"] == 0
    assert verify(world) == len(audit_entries(world))
    with world.open("officer1") as v:
        report = v.verify_audit()
    assert report.witnessed >= len(approved)
    figures: dict[str, object] = {
        "writer_ops": writer_ops * len(WRITERS),
        "reads": reader_ops * len(READERS),
        "records_created": len(created),
        "requests_filed": sum(len(r.get("requests", [])) for r in results),
        "approvals_concurrent": len(approved),
        "log_entries": len(entries),
        "witnessed_checkpoints": report.witnessed,
        "seconds": round(elapsed, 1),
    }
    return figures


def test_four_writers_two_readers(
    template: tuple[Path, dict[str, Identity]], tmp_path: Path
) -> None:
    world = copy_world(*template, tmp_path)
    figures = _run(world, tmp_path, writer_ops=40, reader_ops=30)
    record_result("test_four_writers_two_readers", **figures)


@pytest.mark.slow
def test_four_writers_two_readers_long(
    template: tuple[Path, dict[str, Identity]], tmp_path: Path
) -> None:
    world = copy_world(*template, tmp_path)
    figures = _run(world, tmp_path, writer_ops=400, reader_ops=100)
    record_result("test_four_writers_two_readers_long", **figures)
