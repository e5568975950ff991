"""Approve + read of 50 records x 3 fields, both providers, against the bare hvac floor.

Each repetition: a staff user files a request for the records and fields
(untimed), then the timed part is the officer's ``Vault.approve`` (checks,
key release, PASETO token, log entry, signed checkpoint, witness append) plus
the requester's ``Vault.read_with_grant`` (token checks, log entry, key redeem,
150 field decryptions). Both users' vaults are open already (no Argon2id).

The Vault floor is the HTTP work no implementation of this design can avoid,
made with bare ``hvac`` against the same server with the same tokens: 50 KV
reads of the salt documents and one response-wrapped Transit batch decrypt of
the 150 DEKs (officer), one ``sys/wrapping/lookup`` and one
``sys/wrapping/unwrap`` (requester).
"""

from __future__ import annotations

import time
from typing import Any

from bench._bao import Bao
from bench._common import (
    FIELDS,
    Config,
    Figure,
    Result,
    Template,
    build_template,
    loadavg,
    ratio,
    write_csv,
)

NAME = "approve_read"


def _setup(tpl: Template, home: Any, n: int, csv: Any) -> tuple[Any, Any, list[str]]:
    tpl.copy(home)
    worker = tpl.open(home, "worker1")
    report = worker.import_file(csv)
    ids = list(report.record_ids)[:n]
    officer = tpl.open(home, "officer1")
    return worker, officer, ids


def _approve_read(worker: Any, officer: Any, ids: list[str], fields: tuple[str, ...]) -> float:
    req = worker.request_access(ids, fields, "case_management", "benchmark: 家访前核对")
    t0 = time.perf_counter()
    approval = officer.approve(req)
    out = worker.read_with_grant(approval.token)
    seconds = time.perf_counter() - t0
    assert len(out) == len(ids)
    return seconds


def _blobs(worker: Any, ids: list[str]) -> dict[str, dict[str, tuple[int, str]]]:
    """The wrapped DEKs childvault stored (what a bare client would read from its database)."""
    from childvault.keys._openbao._formats import parse_blob as _parse_blob
    from childvault.keys._provider import WrappedRecord

    out = {}
    for rid in ids:
        found = worker._session.db.records.keyblob(rid)
        assert found is not None
        out[rid] = _parse_blob(WrappedRecord(rid, found[0], found[1]))
    return out


def _floor(
    bao: Bao, blobs: dict[str, dict[str, tuple[int, str]]], fields: tuple[str, ...]
) -> float:
    """The unavoidable hvac calls, on the ciphertexts and contexts childvault stored."""
    from childvault.keys._openbao._formats import context as _context
    from childvault.keys._openbao._formats import parse_salts as _parse_salts

    tpl = bao.template
    s = bao.settings
    officer = bao.client(tpl.tokens["officer1"])
    worker = bao.client(tpl.tokens["worker1"])
    t0 = time.perf_counter()
    batch = []
    for rid, entries in blobs.items():
        reply = officer.secrets.kv.v2.read_secret_version(
            path=f"records/{rid}", mount_point=s.kv_mount, raise_on_deleted_version=True
        )
        salts = _parse_salts(reply, rid)
        for name in fields:
            fv, ct = entries[name]
            ctx = _context(rid, name, fv, salts.for_field(name))
            batch.append({"ciphertext": ct, "context": ctx})
    wrapped = officer.adapter.post(
        f"/v1/{s.transit_mount}/decrypt/{s.key_name}",
        json={"batch_input": batch},
        wrap_ttl="300s",
    )
    token = wrapped["wrap_info"]["token"]
    worker.adapter.post("/v1/sys/wrapping/lookup", json={"token": token})
    unwrapped = worker.adapter.post("/v1/sys/wrapping/unwrap", json={"token": token})
    seconds = time.perf_counter() - t0
    assert len(unwrapped["data"]["batch_results"]) == len(batch)
    officer.adapter.close()
    worker.adapter.close()
    return seconds


def run(cfg: Config, bao: Bao | None, local_tpl: Template | None = None) -> Result:
    work = cfg.workdir / NAME
    work.mkdir(parents=True, exist_ok=True)
    n, k = cfg.approve_records, cfg.approve_fields
    fields = FIELDS[:k]
    csv = write_csv(work / "records.csv", n)
    reps = max(cfg.reps * 2, 3) if cfg.reps > 1 else 1
    res = Result()
    if local_tpl is None:
        local_tpl = build_template(work / "local-template" / "home")
    worker, officer, ids = _setup(local_tpl, work / "local" / "home", n, csv)
    local = [_approve_read(worker, officer, ids, fields) for _ in range(reps)]
    log_size = worker._session.db.audit.size()
    worker.close()
    officer.close()
    unit = "ms"
    f_local = Figure(
        NAME,
        f"childvault approve + read, local provider ({n} x {k})",
        unit,
        [x * 1000 for x in local],
        higher_is_better=False,
    )
    res.figures.append(f_local)
    res.notes.append(f"local: audit log of {log_size} entries after the runs (approve verifies it)")
    if bao is not None:
        worker, officer, ids = _setup(bao.template, work / "vault" / "home", n, csv)
        blobs = _blobs(worker, ids)
        ours, floor = [], []
        for _ in range(reps):
            ours.append(_approve_read(worker, officer, ids, fields) * 1000)
            floor.append(_floor(bao, blobs, fields) * 1000)
        log_size = worker._session.db.audit.size()
        worker.close()
        officer.close()
        f_v = Figure(
            NAME,
            f"childvault approve + read, Vault provider ({n} x {k})",
            unit,
            ours,
            higher_is_better=False,
        )
        f_f = Figure(
            NAME,
            f"floor: bare hvac calls for the same work ({n} KV reads + 3 calls)",
            unit,
            floor,
            higher_is_better=False,
        )
        res.figures.extend([f_v, f_f])
        res.ratios.append(ratio(NAME, "Vault provider / hvac floor", f_v, f_f, at_most=1.5))
        res.notes.append(f"vault: audit log of {log_size} entries after the runs")
    res.notes.append(f"load average at the end: {loadavg()}")
    return res
