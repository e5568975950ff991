"""Batch record statements through the server (issue 18, session 6; issue 13).

An import through the server signs one ``record.batch`` statement per batch,
exactly as embedded: the remote backend stores each record's member document
beside its entry (the same ``statements.add`` calls and bytes as an
envelope), the server stores it, and every client checks a record against
its member document before approving or reading it. A member document an
insider rewrites in the server's database is refused at approval.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from childvault.keys import IntegrityError
from childvault.vault import _record_trust, _statements
from tests._insider import Insider
from tests.server._vaultserver import make_vault, synthetic_csv


def test_an_import_through_the_server_is_signed_per_batch_and_checked_per_record(
    tmp_path: Path,
) -> None:
    served = make_vault(tmp_path, ("worker1", "worker2", "officer1"))
    served.start()
    try:
        source = synthetic_csv(tmp_path / "rows.csv", 30)
        with served.connect("worker1") as w:
            w.import_file(source)
            ids = sorted(r.id for r in w.list_records())
        assert len(ids) == 30
        with served.connect("officer1") as o:
            found = _record_trust.record_heads(o._session)
            assert found is not None
            seqs = {rid: found[1].heads[rid].seq for rid in ids}
            stored = o._session.db.statements.get_many(list(seqs.values()))
        members = [_statements.stored_statement(stored[seqs[rid]]) for rid in ids]
        assert all(isinstance(m, _statements.BatchMember) for m in members)
        batches = {m.batch.digest() for m in members}  # type: ignore[union-attr]
        assert len(batches) == 1  # 30 rows: one batch, one signature
        # Two records approved and read through the server, each checked alone.
        with served.connect("worker1") as w, served.connect("officer1") as o:
            req = w.request_access(ids[:2], ["name"], "case_management", "家访")
            token = o.approve(req).token
            assert set(w.read_with_grant(token)) == set(ids[:2])
        # An insider edits one record's proof in the server's database: refused.
        doc = json.loads(stored[seqs[ids[5]]])
        doc["proof"][0] = "00" * 32
        with Insider(served.home, served.identity("worker2")) as insider:
            insider.update(
                "statements", {"envelope": json.dumps(doc).encode()}, {"seq": seqs[ids[5]]}
            )
        with served.connect("worker1") as w, served.connect("officer1") as o:
            req = w.request_access([ids[4], ids[5]], ["name"], "case_management", "家访")
            with pytest.raises(IntegrityError, match=ids[5]):
                o.approve(req)
            assert o._session.db.access.request(req).status == "pending"  # type: ignore[union-attr]
    finally:
        served.stop()
