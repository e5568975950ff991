"""A hostile but correctly signed client of ``childvault serve`` for the attack tests.

Every request is signed with a real identity (RFC 9421, ``_httpsig``), exactly
as ``childvault.vault._remote`` signs them, but the body is whatever the test
writes: a client that skips every check of its own library. The served vault
is ``tests/server/_vaultserver.py``'s (a real ``childvault serve`` process).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from childvault.keys import Identity
from childvault.vault import _audit
from childvault.vault._audit import Event
from childvault.vault._backend import GrantRow, RequestRow
from childvault.vault._httpsig import HTTPSignatureAuth
from childvault.vault._merkle import leaf_hash
from childvault.vault._remote._codec import decode, encode
from childvault.vault._time import iso
from tests.server._vaultserver import VaultServer, make_vault, synthetic_csv

#: The people of the attack vault: two officers (both hold the custodian key), two staff.
PEOPLE = ("officer1", "officer2", "worker1", "worker2")
#: Bound on every HTTP request of these tests.
TIMEOUT = 120


def served_vault(root: Path, rows: int = 4) -> VaultServer:
    """A vault of :data:`PEOPLE` with ``rows`` synthetic records imported by worker1, served."""
    vs = make_vault(root, PEOPLE)
    vs.start()
    with vs.connect("worker1") as staff:
        staff.import_file(synthetic_csv(root / "rows.csv", rows))
    return vs


def served_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """Body of a module fixture: :func:`served_vault`, stopped afterwards."""
    vs = served_vault(tmp_path_factory.mktemp("attack"))
    try:
        yield vs
    finally:
        vs.stop()


def call(repo: str, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """One backend call of a request body, in the wire encoding."""
    return {"repo": repo, "method": method, "args": encode(list(args)), "kwargs": encode(kwargs)}


def prepared(vs: VaultServer, user: str, path: str, doc: Any) -> requests.PreparedRequest:
    """A POST of ``doc`` (JSON) to ``path``, signed by ``user``: to send, replay or alter."""
    return requests.Request(
        "POST",
        vs.url + path,
        data=json.dumps(doc).encode(),
        headers={"Content-Type": "application/json"},
        auth=HTTPSignatureAuth(vs.identity(user)),
    ).prepare()


def send(p: requests.PreparedRequest) -> requests.Response:
    """Send one prepared request on a fresh connection."""
    with requests.Session() as http:
        return http.send(p, timeout=TIMEOUT)


def post(vs: VaultServer, user: str, path: str, doc: Any) -> requests.Response:
    """Sign ``doc`` as ``user`` and POST it to ``path``."""
    return send(prepared(vs, user, path, doc))


def rpc(vs: VaultServer, user: str, repo: str, method: str, *args: Any, **kw: Any) -> Any:
    """One ``/v1/rpc`` call outside a transaction (writes run in one of their own)."""
    return post(vs, user, "/v1/rpc", {"txn": None, **call(repo, method, *args, **kw)})


def batch(vs: VaultServer, user: str, *calls: dict[str, Any], **doc: Any) -> requests.Response:
    """One signed ``/v1/rpc/batch`` by ``user``; by default it begins and commits."""
    return post(
        vs, user, "/v1/rpc/batch", {"begin": True, "commit": True, **doc, "calls": list(calls)}
    )


def read(
    vs: VaultServer, repo: str, method: str, *args: Any, user: str = "officer1", **kw: Any
) -> Any:
    """A read the test trusts (an officer's, answered 200), decoded."""
    r = rpc(vs, user, repo, method, *args, **kw)
    assert r.status_code == 200, r.text
    return decode(r.json()["result"])


def refused(r: requests.Response, status: int, reason: str) -> None:
    """``r`` is the refusal (status, reason code) expected."""
    assert (r.status_code, r.json().get("reason")) == (status, reason), r.text


def refused_somehow(r: requests.Response, *statuses: int) -> None:
    """``r`` is a refusal with one of ``statuses`` and a reason code: for the findings'
    reproducers, whose fix may choose its own code."""
    assert r.status_code in statuses and r.json().get("reason"), r.text


def ok(r: requests.Response) -> Any:
    """``r`` succeeded: its decoded result."""
    assert r.status_code == 200, r.text
    return decode(r.json()["result"])


def log_rows(
    vs: VaultServer, signer: Identity, *events: Event
) -> list[tuple[int, bytes, bytes, bytes]]:
    """Log rows for ``events`` after the current head, each signed by ``signer``."""
    seq, prev = read(vs, "audit", "head")
    rows = []
    for event in events:
        entry = _audit.encode_entry(seq, iso(datetime.now(UTC)), event, prev)
        digest = leaf_hash(entry)
        rows.append((seq, entry, digest, signer.sign(_audit.entry_message(digest))))
        seq, prev = seq + 1, digest
    return rows


def read_event(vs: VaultServer, requester: str, grant_id: str) -> Event:
    """The successful ``grant.read`` entry the library logs for a read of every record
    and field of a consent grant: the approved request, purpose, records and fields
    (only such an entry counts for a release, review RV9-3)."""
    grant = read(vs, "access", "grant", grant_id)
    req = read(vs, "access", "request", grant.request_id)
    return Event(
        requester,
        "grant.read",
        records=req.records,
        fields=req.fields,
        purpose=req.purpose,
        request=req.id,
        grant=grant_id,
    )


def request_row(requester: str, records: tuple[str, ...] = ("0" * 32,)) -> RequestRow:
    """A pending request row in ``requester``'s name."""
    return RequestRow(
        id=secrets.token_hex(16),
        requester=requester,
        records=records,
        fields=("name",),
        purpose="case_management",
        reason="attack test",
        created_at=iso(datetime.now(UTC)),
        status="pending",
    )


def record_ids(vs: VaultServer) -> list[str]:
    """The ids of the vault's records (a trusted officer's read)."""
    return [r.id for r in read(vs, "records", "page", limit=1000)]


def approved(vs: VaultServer, requester: str = "worker1", *, uses: int = 1) -> tuple[str, str]:
    """(grant id, token): a request by ``requester`` for one record's name, approved by
    officer1 through the library client (the honest path)."""
    ids = record_ids(vs)[:1]
    with vs.connect(requester) as staff:
        req = staff.request_access(ids, ["name"], "case_management", "home visit")
    with vs.connect("officer1") as officer:
        approval = officer.approve(req, uses=uses)
    return approval.grant_id, approval.token


def pending(vs: VaultServer, requester: str = "worker1") -> str:
    """A pending request by ``requester`` (the honest client) for one record's name."""
    with vs.connect(requester) as who:
        return who.request_access(record_ids(vs)[:1], ["name"], "case_management", "home visit")


def grant_row(
    request_id: str,
    officer: str,
    requester: str,
    *,
    ttl: timedelta = timedelta(hours=1),
    uses: int = 1,
) -> GrantRow:
    """A grant row of ``request_id``, issued by ``officer`` now."""
    now = datetime.now(UTC)
    return GrantRow(
        secrets.token_hex(16),
        request_id,
        officer,
        requester,
        iso(now),
        iso(now + ttl),
        uses,
        0,
        None,
        None,
        None,
    )


def approve_event(officer: str, req: RequestRow, row: GrantRow) -> Event:
    """The ``request.approve`` entry the library logs for grant ``row`` of ``req``."""
    return Event(
        officer,
        "request.approve",
        records=req.records,
        fields=req.fields,
        purpose=req.purpose,
        request=req.id,
        grant=row.id,
        detail={"expires": row.expires_at, "uses": row.max_uses},
    )


def approval(
    vs: VaultServer, officer: str, request_id: str, *, by: str = ""
) -> tuple[list[dict[str, Any]], GrantRow]:
    """An approval's writes as the client queues them (``decide_cas``), in the
    library's order, and its grant row; ``by``: the name the decision gives."""
    req = read(vs, "access", "request", request_id)
    row = grant_row(req.id, officer, req.requester)
    calls = [
        call("access", "add_grant", row),
        call("release", "new", row.id),
        call(
            "access",
            "decide_cas",
            req.id,
            status="approved",
            by=by or officer,
            at=row.issued_at,
            reason=None,
        ),
        call(
            "audit", "append", log_rows(vs, vs.identity(officer), approve_event(officer, req, row))
        ),
    ]
    return calls, row


def undecided(vs: VaultServer, request_id: str, grant_id: str, head: Any) -> None:
    """Nothing of an approval was stored: no grant ``grant_id``, the request still
    pending, the log's head still ``head``."""
    assert read(vs, "access", "grant", grant_id) is None
    assert read(vs, "access", "request", request_id).status == "pending"
    assert read(vs, "audit", "head") == head


def approve(vs: VaultServer, officer: str, request_id: str, **doc: Any) -> None:
    """``officer``'s approval of the request, its writes in the library's order (a
    batch with ``doc``'s members): it stands."""
    calls, _row = approval(vs, officer, request_id)
    r = batch(vs, officer, *calls, **doc)
    assert r.status_code == 200, r.text
    assert read(vs, "access", "request", request_id).status == "approved"


def refusal_logged(vs: VaultServer, user: str, reason: str) -> bool:
    """The server's refusal log names ``user`` refused for ``reason``."""
    return any(r["reason"] == reason and r["claimed_user"] == user for r in vs.refusals())


def epoch(stamp: str) -> float:
    """Seconds since the epoch of an ISO time stamp the vault wrote."""
    from childvault.vault._time import parse_iso

    return parse_iso(stamp).timestamp()
