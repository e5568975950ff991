"""The scan quota holds across replicas: its buckets are rows of the shared database.

Two real ``childvault serve`` replicas on the session's PostgreSQL server. A
staff member appends denied attempts at an admin's action (``notice.publish``,
read by the notice scan of every approval and read) through both: together
they get :data:`SCAN_BURST`, not one burst each (before, each replica kept its
buckets in memory and a client alternating between replicas got twice the
burst). A replica started afterwards, or restarted, does not refill it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import requests

from childvault.keys import Identity
from childvault.server._vault import SCAN_BURST
from childvault.vault import _audit
from childvault.vault._audit import Event
from childvault.vault._httpsig import HTTPSignatureAuth
from childvault.vault._merkle import leaf_hash
from childvault.vault._remote._codec import decode
from childvault.vault._time import iso
from tests.attack._wire import TIMEOUT, call
from tests.scale._replicas import PgServed


def _rpc(url: str, identity: Identity, repo: str, method: str, *args: Any) -> requests.Response:
    with requests.Session() as http:
        return http.post(
            url + "/v1/rpc",
            data=json.dumps({"txn": None, **call(repo, method, *args)}).encode(),
            headers={"Content-Type": "application/json"},
            auth=HTTPSignatureAuth(identity),
            timeout=TIMEOUT,
        )


def _append_denied(url: str, staff: Identity, officer: Identity, n: int) -> requests.Response:
    """``n`` denied ``notice.publish`` entries of ``staff`` after the head, through ``url``."""
    head = _rpc(url, officer, "audit", "head")
    assert head.status_code == 200, head.text
    seq, prev = decode(head.json()["result"])
    rows = []
    for _ in range(n):
        event = Event(staff.name, "notice.publish", "denied", detail={"reason": "role"})
        entry = _audit.encode_entry(seq, iso(datetime.now(UTC)), event, prev)
        digest = leaf_hash(entry)
        rows.append((seq, entry, digest, staff.sign(_audit.entry_message(digest))))
        seq, prev = seq + 1, digest
    return _rpc(url, staff, "audit", "append", rows)


def _size(url: str, officer: Identity) -> int:
    r = _rpc(url, officer, "audit", "size")
    assert r.status_code == 200, r.text
    return int(decode(r.json()["result"]))


def test_the_scan_burst_is_shared_by_the_replicas(fresh_pg_vault: PgServed) -> None:
    pg = fresh_pg_vault
    a, b = pg.start_replica(), pg.start_replica()
    staff, officer = pg.identity("worker1"), pg.identity("officer1")
    first = SCAN_BURST - 5
    assert _append_denied(a.url, staff, officer, first).status_code == 200
    # The rest of the burst through the other replica, then nothing more anywhere.
    assert _append_denied(b.url, staff, officer, 5).status_code == 200
    size = _size(a.url, officer)
    for url in (b.url, a.url):
        r = _append_denied(url, staff, officer, 1)
        assert (r.status_code, r.json().get("reason")) == (429, "rate_limited"), r.text
    assert _size(b.url, officer) == size  # nothing of the refused calls stored
    # A replica started now (or a restarted one) finds the bucket empty too.
    a.stop()
    c = pg.start_replica()
    r = _append_denied(c.url, staff, officer, 1)
    assert (r.status_code, r.json().get("reason")) == (429, "rate_limited"), r.text
    # Another user's bucket is their own.
    other = pg.identity("officer2")  # not an admin: notice.publish counts for them too
    assert _append_denied(c.url, other, officer, 1).status_code == 200
