"""An import batch through the server is one request (issue 13, round 2 session 8).

The client links the batch's log entries to the head it expects (its trust
sync's, then its own last append) without reading it inside the transaction,
so the batch's writes and its commit go together. When another client
appended first, the server refuses the batch (409, nothing stored) and the
client writes it again from the real head: nothing lost, nothing twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from childvault.vault import Vault, _svc_records_import
from tests.server._vaultserver import make_vault, synthetic_csv


def _requests(v: Vault) -> list[tuple[str, int]]:
    """Each HTTP request ``v``'s remote backend sends: its repo.method calls and status."""
    backend: Any = v._session.db
    seen: list[tuple[str, int]] = []
    send, answer = backend._send, backend._answer

    def counted(path: str, body: bytes, *, raw: bool = False) -> Any:
        doc = json.loads(body)
        calls = doc.get("calls", [doc])
        names = ",".join(sorted({f"{c['repo']}.{c['method']}" for c in calls if "repo" in c}))
        seen.append((names, 0))
        return send(path, body, raw=raw)

    def status(r: Any, *, raw: bool = False) -> Any:
        seen[-1] = (seen[-1][0], r.status_code)
        return answer(r, raw=raw)

    backend._send, backend._answer = counted, status
    return seen


def test_a_batch_is_one_request_and_a_moved_head_is_written_again(tmp_path: Path) -> None:
    served = make_vault(tmp_path, ("worker1", "worker2", "officer1"))
    served.start()
    try:
        with served.connect("worker1") as w1, served.connect("worker2") as w2:
            seen = _requests(w1)
            w1.import_file(synthetic_csv(tmp_path / "a.csv", 12))
            inserts = [(n, s) for n, s in seen if "records.insert" in n]
            # One request holds the batch's rows, entries, statements and end (and
            # the fresh session's own saved trust state, put off to the operation's
            # first request).
            assert len(inserts) == 1, seen
            assert inserts[0] == (
                "audit.append,records.add_index_tags,records.insert,"
                "records.set_import_progress,statements.add_members,statements.save_state",
                200,
            )
            # Another writer appends after worker1's trust sync and before its batch:
            # worker1's expected head is stale then (a sync read after a writer's
            # commit is taken over its own last append since round 2 session 9, so
            # the other import runs in between, not before).
            backend: Any = w1._session.db
            recorded, moved = backend._send, []

            def moving(path: str, body: bytes, *, raw: bool = False) -> Any:
                if b'"method":"insert"' in body and not moved:
                    moved.append(w2.import_file(synthetic_csv(tmp_path / "b.csv", 5, 40)))
                return recorded(path, body, raw=raw)

            backend._send = moving
            seen.clear()
            report = w1.import_file(synthetic_csv(tmp_path / "c.csv", 7, 80))
            assert moved
            tried = [s for n, s in seen if "records.insert" in n]
            assert tried == [409, 200], seen  # refused once, then written from the head
            assert report.imported == 7
        with served.connect("officer1") as o:
            records = list(o.list_records())
            assert len(records) == 12 + 5 + 7
            assert len({r.id for r in records}) == len(records)
            o.verify_audit(full=True)  # one chain, every signature and statement
    finally:
        served.stop()


def test_each_batch_of_a_long_import_is_one_request(tmp_path: Path) -> None:
    """Batch after batch, the client's own last commit is the head it expects and
    its commit's generation names nothing it answers from: no batch is refused
    and written again (round 2 session 9: one was, every batch after the first)."""
    from bench._common import write_csv

    served = make_vault(tmp_path, ("worker1", "officer1"))
    served.start()
    try:
        with served.connect("worker1") as w1:
            seen = _requests(w1)
            report = w1.import_file(write_csv(tmp_path / "long.csv", 1100))
            assert report.imported == 1100
            inserts = [s for n, s in seen if "records.insert" in n]
            # Through one server: batches of 50, 100, 200, 400, then 350 rows.
            assert [_svc_records_import._overlapped_size(i) for i in range(5)] == [
                50,
                100,
                200,
                400,
                500,
            ]
            assert inserts == [200] * 5, seen
    finally:
        served.stop()
