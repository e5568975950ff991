"""An import through the server overlaps client and server (issue 13, round 2 session 9).

While the server checks and stores batch N (one request, sent on the backend's
sender thread), the client seals, signs and encodes batch N+1, its log entries
chained on the head N leaves. Nothing may be lost, duplicated or reordered: a
batch in flight refused for a moved head is written again from the real head,
then the batch prepared behind it; a batch that fails (here: the server killed
while it is in flight) discards the one behind it, the import fails with the
error it always gave, and the next run resumes from what is committed.

The hooks below run real code at chosen moments (another client's import, a
SIGKILL of the server) on the sender thread, just before it sends a batch.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from childvault.keys import AccessDenied, ProviderUnavailable
from childvault.vault import Vault, _svc_records_import
from tests.server._vaultserver import VaultServer, admin_workstation, make_vault, synthetic_csv
from tests.server.conftest import free_port

#: Rows per batch here (an import's own through one server: 50, 100, 200, 400,
#: then 500): 12 rows make three batches.
BATCH = 4
ROWS = 12


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of :data:`BATCH` rows, every one, in this process's imports."""
    monkeypatch.setattr(_svc_records_import, "_OVERLAPPED_FIRST", BATCH)
    monkeypatch.setattr(_svc_records_import, "_IMPORT_BATCH", BATCH)


def _on_batch_send(v: Vault, before: Callable[[int], None]) -> list[tuple[int, str, int]]:
    """Call ``before(n)`` on the sending thread just before the n-th batch request
    (0-based) of ``v``'s import goes out; record each batch request as (n, thread
    name, HTTP status)."""
    backend: Any = v._session.db
    send, answer = backend._send, backend._answer
    sent: list[tuple[int, str, int]] = []

    def hooked(path: str, body: bytes, *, raw: bool = False) -> Any:
        if b'"method":"insert"' in body:
            n = len(sent)
            before(n)
            sent.append((n, threading.current_thread().name, 0))
        return send(path, body, raw=raw)

    def status(r: Any, *, raw: bool = False) -> Any:
        if sent and sent[-1][2] == 0:
            sent[-1] = (*sent[-1][:2], r.status_code)
        return answer(r, raw=raw)

    backend._send, backend._answer = hooked, status
    return sent


def _import_rows_in_log(officer: Vault, source: str) -> list[int]:
    """The file rows of ``source``'s import, in log order (record.create entries)."""
    rows = []
    for _seq, entry, _ in officer._session.db.audit.entries(0):
        doc = json.loads(entry)
        detail = doc.get("detail") or {}
        if doc.get("action") == "record.create" and detail.get("source") == source[:16]:
            rows.append(int(detail["row"]))
    return rows


def _check_stored(served: VaultServer, source: str, rows: int, total: int) -> None:
    with served.connect("officer1") as officer:
        records = list(officer.list_records())
        assert len(records) == total
        assert len({r.id for r in records}) == total
        # Every row once, in file order: nothing lost, twice or reordered.
        assert _import_rows_in_log(officer, source) == list(range(1, rows + 1))
        officer.verify_audit(full=True)


def test_the_next_batch_is_prepared_while_the_server_stores_one(
    tmp_path: Path, small_batches: None
) -> None:
    served = make_vault(tmp_path, ("worker1", "officer1"))
    served.start()
    try:
        with served.connect("worker1") as w:
            backend: Any = w._session.db
            inserts: list[str] = []
            calls = backend.call
            second = threading.Event()

            def noted(repo: str, method: str, args: Any, kwargs: Any) -> Any:
                if (repo, method) == ("records", "insert"):
                    inserts.append(threading.current_thread().name)
                    if len(inserts) == 2:
                        second.set()
                return calls(repo, method, args, kwargs)

            backend.call = noted
            seen: list[bool] = []

            def before(n: int) -> None:
                if n == 0:
                    # The first batch is not sent until the second is being
                    # written: only an import that prepares N+1 meanwhile gets here.
                    sender = threading.current_thread() is not threading.main_thread()
                    seen.append(sender and second.wait(timeout=120))

            sent = _on_batch_send(w, before)
            progress: list[tuple[int, int]] = []
            report = w.import_file(
                synthetic_csv(tmp_path / "a.csv", ROWS),
                progress=lambda done, total: progress.append((done, total)),
            )
        assert seen == [True]
        main = threading.main_thread().name
        assert set(inserts) == {main}  # the batches are prepared on the caller's thread
        assert [n for n, _, _ in sent] == [0, 1, 2]
        assert all(thread != main and status == 200 for _, thread, status in sent), sent
        assert report.imported == ROWS
        # Reported once each batch is committed, in order, then the end: the
        # last full batch carries the import's end (no transaction of its own).
        assert progress == [(4, ROWS), (8, ROWS), (ROWS, ROWS)]
        _check_stored(served, report.source, ROWS, ROWS)
    finally:
        served.stop()


def test_a_batch_in_flight_refused_for_a_moved_head_is_written_again_then_the_next(
    tmp_path: Path, small_batches: None
) -> None:
    served = make_vault(tmp_path, ("worker1", "worker2", "officer1"))
    served.start()
    try:
        with served.connect("worker1") as w1, served.connect("worker2") as w2:
            other = synthetic_csv(tmp_path / "other.csv", 1, 100)

            def before(n: int) -> None:
                if n == 0:
                    # Another client appends after the first batch was chained on
                    # the head, before it reaches the server.
                    assert w2.import_file(other).imported == 1

            sent = _on_batch_send(w1, before)
            report = w1.import_file(synthetic_csv(tmp_path / "a.csv", ROWS))
        # Refused (nothing stored), written again from the real head; the batch
        # prepared behind it was discarded and written after it.
        assert [status for _, _, status in sent] == [409, 200, 200, 200], sent
        assert report.imported == ROWS
        _check_stored(served, report.source, ROWS, ROWS + 1)
    finally:
        served.stop()


def test_a_failed_batch_in_flight_discards_the_next_and_the_import_resumes(
    tmp_path: Path, small_batches: None
) -> None:
    served = make_vault(tmp_path, ("worker1", "officer1"))
    port = free_port()
    served.start(port=port)
    source = synthetic_csv(tmp_path / "a.csv", ROWS)
    try:
        progress: list[tuple[int, int]] = []
        with served.connect("worker1") as w:

            def before(n: int) -> None:
                if n == 1:
                    served.stop(kill=True)  # the second batch meets a dead server

            _on_batch_send(w, before)
            with pytest.raises(ProviderUnavailable) as failed:
                w.import_file(source, progress=lambda d, t: progress.append((d, t)))
        # The error an import without the overlap gives when the server is gone.
        assert str(failed.value) == f"the childvault server {served.url} did not answer"
        assert progress == [(4, ROWS)]  # only the committed batch was reported
        served.start(port=port)
        with served.connect("officer1") as officer:
            assert officer._session.db.records.count() == BATCH
            officer.verify_audit(full=True)
        with served.connect("worker1") as w:
            report = w.import_file(source)
        assert report.imported == ROWS - BATCH
        _check_stored(served, report.source, ROWS, ROWS)
    finally:
        served.stop()


def test_a_batch_in_flight_refused_by_the_server_stops_the_import_there(
    tmp_path: Path, small_batches: None
) -> None:
    served = make_vault(tmp_path, ("worker1", "worker2", "officer1"))
    admin_workstation(served)
    served.start()
    source = synthetic_csv(tmp_path / "a.csv", ROWS)
    try:
        with served.connect("worker1") as w, served.connect("admin") as admin:

            def before(n: int) -> None:
                if n == 1:
                    # The importer is disabled while its second batch is on its way.
                    admin.disable_user("worker1", reason="left the institution")

            sent = _on_batch_send(w, before)
            with pytest.raises(AccessDenied) as refused:
                w.import_file(source)
        # The server's refusal, as an import without the overlap reports it; the
        # batch prepared behind the refused one was never sent.
        assert str(refused.value).startswith("the childvault server refused the request")
        statuses = [status for _, _, status in sent]
        # Batch 1 stored; batch 2 refused (perhaps first for the head the admin's
        # entries moved, then for the user); batch 3 never sent.
        assert statuses[0] == 200, sent
        assert statuses[-1] in (401, 403), sent
        assert statuses[1:-1] in ([], [409]), sent
        with served.connect("officer1") as officer:
            assert officer._session.db.records.count() == BATCH
        # Another member of staff resumes the same file from the committed batch.
        with served.connect("worker2") as w2:
            report = w2.import_file(source)
        assert report.imported == ROWS - BATCH
        _check_stored(served, report.source, ROWS, ROWS)
    finally:
        served.stop()
