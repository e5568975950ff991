"""Part ``approve`` of ``python -m bench.scale``: approve latency on a 3-node OpenBao Raft
cluster and a 1-node one, with bare KV create rates for comparison.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import FIELDS, build_template, loadavg, write_csv
from bench._scale_common import ms, pct


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
