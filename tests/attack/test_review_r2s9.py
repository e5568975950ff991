"""Attack review of round 2, session 9's merged work (review RV10, issues 13, 16, 18).

Each test is named after what it found and fails without its fix. An insider
here is a staff member with their own database key and identity (the embedded
mode, ``tests.conftest.World``) or a correctly signed but hostile client of a
real ``childvault serve`` process (``tests.attack._wire``).

RV10-1: the rights and incident registers (read by the console's new register
pages, ``doctor``, and the ``subject_access`` / ``breach_notification`` bases,
which consent cannot block) were folded from every successful ``rights.*`` /
``incident.*`` entry, whoever logged it. Any user may log an entry of any
action in their own name, so a staff member could register a rights request
with the identity "checked" (a basis to read a child's record whatever the
consent), close an overdue request or report an incident to the authority.
These actions are now reserved to the officer (``_action_roles``): the server
refuses them at ``audit.append`` and the readers ignore them.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from childvault.keys import ConfigError, NotFound, StorageError
from childvault.vault import Basis, Vault
from childvault.vault._audit import Event
from childvault.vault._sqlcipher import SQLCipherBackend
from tests.attack import _wire
from tests.attack._wire import log_rows, refused
from tests.conftest import World, add_children
from tests.server._vaultserver import VaultServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served."""
    yield from _wire.served_fixture(tmp_path_factory)


def _forged_rights_open(actor: str, record: str, kind: str = "access") -> tuple[str, Event]:
    rid = secrets.token_hex(16)
    return rid, Event(
        actor,
        "rights.open",
        records=[record],
        detail={
            "rights": rid,
            "kind": kind,
            "by": "guardian",
            "received": "2026-01-01",
            "deadline": "2026-01-16",
            "identity_checked": True,
        },
    )


def _log(world: World, who: str, *events: Event) -> None:
    """``who`` appends ``events`` in their own name (signed, chained: a valid log)."""
    with world.open(who) as v:
        v._session.log(list(events), datetime.now(UTC))


def test_rv10_1_a_staff_members_rights_open_is_no_subject_access_basis(world: World) -> None:
    """A staff member's own ``rights.open`` (identity "checked") must not register a
    request: a ``subject_access`` request linked to it would read the record
    whatever its consent says, and the register would list it."""
    with world.open("worker1") as v:
        (record,) = add_children(v, 1)
    rid, forged = _forged_rights_open("worker2", record)
    _log(world, "worker2", forged)
    with world.open("worker2") as v, pytest.raises(NotFound):
        v.request_access(
            [record],
            ["name"],
            "case_management",
            "本人查询",
            basis=Basis("subject_access", link=rid),
        )
    with world.open("officer1") as v:
        assert [r.id for r in v.rights_list()] == []


def test_rv10_1_a_staff_members_rights_close_leaves_the_request_open(world: World) -> None:
    """An overdue request stays open and overdue after a staff member's ``rights.close``
    (plain, or one naming an answer that does not answer its kind)."""
    with world.open("worker1") as v:
        (record,) = add_children(v, 1)
    received = (world.clock.now - timedelta(days=60)).date()
    with world.open("officer1") as v:
        rights = v.rights_open(
            "delete", record, requester="guardian", received=received, identity_checked=True
        )
    plain = Event(
        "worker2", "rights.close", records=[record], detail={"rights": rights.id, "outcome": "done"}
    )
    # A staff member may link a subject report (the answer of an access request),
    # never close a deletion request with it.
    answered = [
        Event(
            "worker2",
            action,
            records=[record],
            detail={"rights": rights.id, "answer": "report.subject", **extra},
        )
        for action, extra in (("rights.link", {}), ("rights.close", {"outcome": "done"}))
    ]
    _log(world, "worker2", plain, *answered)
    with world.open("officer1") as v:
        (row,) = v.rights_list()
        assert (row.id, row.status, row.overdue, row.links) == (rights.id, "open", True, ())


def test_rv10_1_a_staff_members_incident_entries_change_no_incident(world: World) -> None:
    """A staff member can neither report an officer's incident to the authority and
    close it, nor open an incident of their own whose records then give a
    ``breach_notification`` basis (contact fields whatever the consent)."""
    with world.open("worker1") as v:
        records = add_children(v, 2)
    with world.open("officer1") as v:
        incident = v.incident_open("leak", world.clock.now)
        v.incident_add_records(incident.id, records[:1])
    own = secrets.token_hex(16)
    _log(
        world,
        "worker2",
        Event("worker2", "incident.notify", detail={"incident": incident.id, "to": "authority"}),
        Event("worker2", "incident.add_records", records=records, detail={"incident": incident.id}),
        Event("worker2", "incident.close", detail={"incident": incident.id}),
        Event(
            "worker2",
            "incident.open",
            detail={"incident": own, "kind": "leak", "discovered": world.clock.now.isoformat()},
        ),
        Event("worker2", "incident.add_records", records=records, detail={"incident": own}),
    )
    with world.open("officer1") as v:
        (row,) = v.incidents()
        assert (row.id, row.status, dict(row.notified), row.records) == (
            incident.id,
            "open",
            {},
            tuple(records[:1]),
        )
    with world.open("worker2") as v, pytest.raises(NotFound):
        v.request_access(
            records,
            ["guardian_phone"],
            "case_management",
            "通知",
            basis=Basis("breach_notification", link=own),
        )


_RECORD = "ab" * 16
_STAFF_ENTRIES = [
    _forged_rights_open("worker2", _RECORD)[1],
    Event(
        "worker2",
        "rights.close",
        records=[_RECORD],
        detail={"rights": "cd" * 16, "outcome": "done"},
    ),
    Event(
        "worker2",
        "rights.link",
        records=[_RECORD],
        detail={"rights": "cd" * 16, "answer": "record.delete"},
    ),
    Event(
        "worker2",
        "incident.open",
        detail={"incident": "ef" * 16, "kind": "leak", "discovered": "2026-01-01T00:00:00+00:00"},
    ),
    Event("worker2", "incident.notify", detail={"incident": "ef" * 16, "to": "authority"}),
    Event("worker2", "incident.close", detail={"incident": "ef" * 16}),
]


@pytest.mark.parametrize(
    "event", _STAFF_ENTRIES, ids=lambda e: f"{e.action}-{e.detail.get('answer', '')}"
)
def test_rv10_1_the_server_refuses_a_staff_members_register_entry(
    served: VaultServer, event: Event
) -> None:
    """Through ``childvault serve``: refused (403 ``role``) before it is stored."""
    vs = served
    size = _wire.read(vs, "audit", "size")
    refused(
        _wire.rpc(vs, "worker2", "audit", "append", log_rows(vs, vs.identity("worker2"), event)),
        403,
        "role",
    )
    assert _wire.read(vs, "audit", "size") == size


def test_rv10_1_a_staff_members_subject_report_link_is_taken_by_the_server(
    served: VaultServer,
) -> None:
    """Staff make subject reports (``report subject --rights-request``): their
    ``rights.link`` / ``rights.close`` naming that answer is still taken."""
    vs = served
    detail = {"rights": "cd" * 16, "answer": "report.subject"}
    events = [
        Event("worker2", "rights.link", records=[_RECORD], detail=detail),
        Event("worker2", "rights.close", records=[_RECORD], detail={**detail, "outcome": "done"}),
    ]
    rows = log_rows(vs, vs.identity("worker2"), *events)
    assert _wire.ok(_wire.rpc(vs, "worker2", "audit", "append", rows)) is None


def test_rv10_1_the_officers_register_through_the_server_still_works(
    served: VaultServer,
) -> None:
    """The role's holder keeps the registers through the server as before."""
    records = _wire.record_ids(served)
    with served.connect("officer1") as officer:
        rights = officer.rights_open(
            "access",
            records[0],
            requester="child",
            received=date(2026, 11, 24),
            identity_checked=True,
        )
        closed = officer.rights_close(rights.id, "withdrawn")
        assert (closed.status, closed.outcome, closed.opened_by) == (
            "closed",
            "withdrawn",
            "officer1",
        )


# RV10-2: "Responses are not signed; their integrity comes from TLS only. Plain
# HTTP is therefore allowed on loopback only" (docs/server.md), yet the client
# took http:// to any host. RV10-3: on loopback, requests sent plain HTTP through
# HTTP_PROXY (no NO_PROXY entry needed to leave the machine), so the signed
# requests and the unsigned answers (release keys) crossed the network in clear.


@pytest.mark.parametrize(
    "url", ["http://server.invalid:8443", "http://10.0.0.1:8443,https://server.invalid"]
)
def test_rv10_2_plain_http_off_loopback_is_refused_before_anything_is_sent(
    served: VaultServer, url: str
) -> None:
    with pytest.raises(ConfigError, match="https://"):
        Vault.connect(url, served.identity("worker1"))


@pytest.mark.parametrize(
    "url", ["https://server.invalid:8443", "https://a.invalid,https://b.invalid"]
)
def test_a_missing_server_ca_file_is_a_config_error_naming_the_setting(
    served: VaultServer, url: str, tmp_path: Path
) -> None:
    """``CHILDVAULT_SERVER_CA`` naming a file that is not there raised a bare
    OSError at the first request ("internal error" in the CLI): now a
    ConfigError before anything is sent, naming the setting."""
    with pytest.raises(ConfigError, match="CHILDVAULT_SERVER_CA"):
        Vault.connect(url, served.identity("worker1"), verify=str(tmp_path / "no-such-ca.pem"))


class _Proxy:
    """A real TCP listener standing in for the institution's proxy: it counts the
    connections made to it and closes each (nothing is forwarded)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_rv10_3_loopback_plain_http_goes_to_the_server_not_through_a_proxy(
    served: VaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = _Proxy()
    try:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("http_proxy", proxy.url)
        with Vault.connect(served.url, served.identity("worker1")) as v:
            assert v.requests() == []
    finally:
        proxy.close()
    assert proxy.connections == 0


# BackgroundCommit (_sqlcipher/_conn.py, issue 18): the connection belongs to one
# thread at a time, the commit thread while a COMMIT is in flight.

_DISK_FULL = """
import os, resource, secrets, signal, sys
from pathlib import Path
from childvault.keys import StorageError
from childvault.vault._sqlcipher import SQLCipherBackend

path, key = Path(sys.argv[1]), secrets.token_bytes(32)
db = SQLCipherBackend(path, key, create=True)
with db.transaction():
    db.meta.set("before", "1")
db.compact()
# A disk that fills during the COMMIT: writes past the limit fail with EFBIG.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path) + 65536, resource.RLIM_INFINITY))
commits = db.background_commit()
with commits.transaction():
    for i in range(300):
        db.meta.set(f"k{i}", "x" * 4000)
try:
    commits.wait()
    print("committed")
except StorageError as exc:
    print("refused", "is full" in str(exc))
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
with db.transaction():
    db.meta.set("after", "2")
commits.close()
db.close()
db = SQLCipherBackend(path, key)
print(db.meta.get("before"), db.meta.get("k0"), db.meta.get("after"))
"""


def test_rv10_a_disk_full_during_a_background_commit_rolls_back_and_is_raised(
    tmp_path: Path,
) -> None:
    """Held: SQLCipher's own write failure in the background COMMIT (a file size
    limit, as a full disk) is raised by ``wait`` as the disk-full error; the
    batch is not stored, the connection is usable and the database reopens."""
    done = subprocess.run(
        [sys.executable, "-c", _DISK_FULL, str(tmp_path / "db")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.split("\n")[:2] == ["refused True", "1 None 2"], done.stdout + done.stderr


def test_rv10_4_a_commit_failure_is_not_taken_by_another_thread(tmp_path: Path) -> None:
    """``BackgroundCommit.wait`` from a thread that does not own the connection took
    the COMMIT's result: its failure was raised there, and the owner's own
    ``wait`` then returned as if the batch were committed."""
    db = SQLCipherBackend(tmp_path / "db", secrets.token_bytes(32), create=True)
    commits = db.background_commit()
    caught: list[BaseException] = []

    def other() -> None:
        try:
            commits.wait()
        except BaseException as exc:  # reported to the test thread
            caught.append(exc)

    try:
        with commits.transaction():
            db.meta.set("k", "v")
            db._conn.q("PRAGMA defer_foreign_keys = ON")
            db._conn.q(
                "INSERT INTO fields (record_id, name, version, value) VALUES (?, ?, ?, ?)",
                ("no-such-record", "name", 1, b"x"),
            )
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        # The other thread is refused and takes nothing...
        assert len(caught) == 1 and isinstance(caught[0], StorageError), caught
        # ...so the owner learns that its batch was not committed.
        with pytest.raises(StorageError):
            commits.wait()
    finally:
        commits.close()
        db.close()


def test_rv10_5_a_backup_is_refused_while_another_thread_holds_the_connection(
    tmp_path: Path,
) -> None:
    """``backup_to`` used the connection without the owner check: during a
    background COMMIT (or from another thread) it ran on the commit thread's
    connection. It is refused as every other use is."""
    key = secrets.token_bytes(32)
    db = SQLCipherBackend(tmp_path / "db", key, create=True)
    commits = db.background_commit()
    try:
        with commits.transaction():
            db.meta.set("k", "v")
        with pytest.raises(StorageError, match="another thread"):
            db.backup_to(tmp_path / "copy", key)
        commits.wait()
        db.backup_to(tmp_path / "copy2", key)
        caught: list[BaseException] = []

        def other() -> None:
            try:
                db.backup_to(tmp_path / "copy3", key)
            except BaseException as exc:  # reported to the test thread
                caught.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert len(caught) == 1 and isinstance(caught[0], StorageError), caught
    finally:
        commits.close()
        db.close()
    copy = SQLCipherBackend(tmp_path / "copy2", key)
    try:
        assert copy.meta.get("k") == "v"
    finally:
        copy.close()


def test_rv10_a_release_staged_before_a_failing_call_is_not_answered(
    served: VaultServer,
) -> None:
    """Held: ``release.redeem_at_commit`` succeeds, then a later call of the same
    committing batch is refused: the whole transaction rolls back, the answer
    carries no key, and the use and its release are still there afterwards."""
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1")
    event = _wire.read_event(vs, "worker1", grant_id)
    rows = log_rows(vs, vs.identity("worker1"), event)
    r = _wire.batch(
        vs,
        "worker1",
        _wire.call("access", "use_grant", grant_id),
        _wire.call("audit", "append", rows),
        _wire.call("release", "redeem_at_commit", grant_id),
        # A statement beside no entry of this transaction: refused (403 binding).
        _wire.call("statements", "add", rows[0][0], b'{"not": "named"}'),
    )
    refused(r, 403, "binding")
    assert "result" not in r.json()
    assert _wire.read(vs, "access", "grant", grant_id).uses == 0
    rows = log_rows(vs, vs.identity("worker1"), event)
    txn, answer = _wire.ok(
        _wire.batch(
            vs,
            "worker1",
            _wire.call("access", "use_grant", grant_id),
            _wire.call("audit", "append", rows),
            _wire.call("release", "redeem_at_commit", grant_id),
        )
    )
    assert txn is None and isinstance(answer[2], bytes) and len(answer[2]) == 32


# RV10-6: a request's work is bounded before it runs (finding A-12, the scan
# budget) from its arguments alone, counting only integer page limits and
# signature ranges; SQLite reads LIMIT -1 as no limit and takes a float or a
# numeric text for a bound, so such arguments read the whole table, counted as
# a default page or as nothing.


@pytest.mark.parametrize(
    ("method", "args", "kwargs"),
    [
        ("page", [], {"limit": -1}),
        ("page", [], {"limit": 1e9}),
        ("page", [], {"limit": "1000000"}),
        ("keyblob_page", [], {"limit": -1}),
        ("pending_shreds", [], {"limit": -1}),
        ("due", ["9999-12-31"], {"limit": -1}),
    ],
    ids=lambda v: repr(v) if not isinstance(v, str) else v,
)
def test_rv10_6_a_page_limit_that_is_no_row_count_is_refused(
    served: VaultServer, method: str, args: list[object], kwargs: dict[str, object]
) -> None:
    refused(_wire.rpc(served, "worker2", "records", method, *args, **kwargs), 400, "malformed")


@pytest.mark.parametrize("bounds", [(0, 1e9), (0, "1000000"), ("0", 10**6)], ids=repr)
def test_rv10_6_a_signature_range_that_is_no_range_of_entries_is_refused(
    served: VaultServer, bounds: tuple[object, object]
) -> None:
    refused(_wire.rpc(served, "worker2", "audit", "signatures", *bounds), 400, "malformed")


def test_rv10_6_integer_limits_and_ranges_are_answered(served: VaultServer) -> None:
    """What the library sends (integers) is answered as before."""
    vs = served
    assert len(_wire.ok(_wire.rpc(vs, "worker2", "records", "page", limit=2))) == 2
    assert _wire.ok(_wire.rpc(vs, "worker2", "records", "pending_shreds", limit=0)) == []
    assert len(_wire.ok(_wire.rpc(vs, "worker2", "audit", "signatures", 0, 1))) == 2
