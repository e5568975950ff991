"""An insider on the server host: a user who opens the served vault's database with
their own passphrase (every key slot holds the database key, DESIGN section 2)
or edits the server's nonce file, then talks to the running server.

The server takes users, keys and roles from the verified trust state, never
from the ``users`` table; a replayed request is checked again by the vault.
What it still takes from a row it should not is a finding
(``/work/briefs/findings-A.md``), kept as a strict xfail.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import pytest
import requests

from childvault.keys import Identity
from childvault.vault._audit import Event
from childvault.vault._httpsig import HTTPSignatureAuth
from tests._insider import Insider
from tests.attack import _wire
from tests.attack._wire import batch, call, log_rows, read, refused, rpc, send
from tests.server._vaultserver import VaultServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served."""
    yield from _wire.served_fixture(tmp_path_factory)


def _insider(vs: VaultServer, user: str = "worker2") -> Insider:
    """``user`` opening the home's database on the host, with their own identity."""
    return Insider(vs.home, vs.identity(user))


def _restore(vs: VaultServer, user: str, values: dict[str, object]) -> None:
    """Put ``user``'s row back as it was (the module's later tests use the vault)."""
    with _insider(vs) as db:
        db.update("users", values, {"name": user})


def test_a_role_written_into_the_users_table_gives_nothing(
    served: VaultServer, request: pytest.FixtureRequest
) -> None:
    vs = served
    with _insider(vs) as db:
        (roles,) = db.rows("users", ["roles"], where={"name": "worker2"})[0]
        assert db.update("users", {"roles": "admin,officer,staff"}, {"name": "worker2"}) == 1
    request.addfinalizer(lambda: _restore(vs, "worker2", {"roles": roles}))
    req = _wire.request_row("worker1")
    now = "2026-01-01T00:00:00Z"
    for repo, method, args, kw in [
        (
            "access",
            "decide",
            (req.id,),
            {"status": "approved", "by": "worker2", "at": now, "reason": None},
        ),
        ("release", "new", ("ab" * 16,), {}),
        ("meta", "set", ("max_uses", "1000"), {}),
    ]:
        refused(rpc(vs, "worker2", repo, method, *args, **kw), 403, "role")


def test_a_signing_key_swapped_in_the_users_table_signs_nothing(
    served: VaultServer, request: pytest.FixtureRequest
) -> None:
    vs = served
    mallory = Identity.generate("worker1")  # a key of the insider's, in worker1's name
    genuine = vs.identity("worker1").public.signing_key
    request.addfinalizer(lambda: _restore(vs, "worker1", {"sign_key": genuine}))
    with _insider(vs) as db:
        changed = db.update("users", {"sign_key": mallory.public.signing_key}, {"name": "worker1"})
        assert changed == 1
    body = json.dumps({"txn": None, **call("records", "count")}).encode()
    forged = requests.Request(
        "POST",
        vs.url + "/v1/rpc",
        data=body,
        headers={"Content-Type": "application/json"},
        auth=HTTPSignatureAuth(mallory),
    ).prepare()
    refused(send(forged), 401, "invalid_signature")
    # The genuine key still works at the server: the table is not what it trusts.
    # (The library client of worker1 refuses to start meanwhile: it checks its
    # identity file against the row, so the edit denies worker1 service.)
    assert _wire.ok(rpc(vs, "worker1", "records", "count")) == len(_wire.record_ids(vs))


def test_a_replay_after_the_nonce_file_is_emptied_stores_nothing_twice(
    served: VaultServer,
) -> None:
    """With the nonce rows deleted the signature layer cannot tell a replay; the
    vault's own checks still refuse to store the captured write a second time."""
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1")
    rows = log_rows(vs, vs.identity("worker1"), Event("worker1", "grant.read", grant=grant_id))
    captured = _wire.prepared(
        vs,
        "worker1",
        "/v1/rpc/batch",
        {
            "begin": True,
            "commit": True,
            "calls": [call("access", "use_grant", grant_id), call("audit", "append", rows)],
        },
    )
    assert send(captured.copy()).status_code == 200
    head = read(vs, "audit", "head")
    with sqlite3.connect(vs.home / "server-nonces.db") as nonces:
        assert nonces.execute("DELETE FROM nonces").rowcount > 0
    again = send(captured.copy())
    assert again.status_code == 409 and again.json()["reason"] == "unverified", again.text
    assert read(vs, "audit", "head") == head
    assert read(vs, "access", "grant", grant_id).uses == 1


@pytest.mark.xfail(
    strict=True,
    reason="finding A-9: release.redeem trusts the grants row (revocation, expiry, uses, "
    "requester); an insider who clears revoked_at gets a release after the revocation",
)
def test_a_revocation_cleared_in_the_database_releases_nothing(served: VaultServer) -> None:
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1")
    with vs.connect("officer1") as officer:
        officer.revoke(grant_id)  # logged: grant.revoke
    with _insider(vs, "worker1") as db:
        assert db.update("grants", {"revoked_at": None, "revoked_by": None}, {"id": grant_id}) == 1
    rows = log_rows(vs, vs.identity("worker1"), Event("worker1", "grant.read", grant=grant_id))
    batch(vs, "worker1", call("access", "use_grant", grant_id), call("audit", "append", rows))
    r = batch(vs, "worker1", call("release", "redeem", grant_id))
    refused(r, 403, "release_refused")


@pytest.mark.xfail(
    strict=True,
    reason="finding A-10: release keys and their redemption counters are plain rows of the "
    "database every user's key slot opens",
)
def test_the_release_key_is_not_in_the_database_in_clear(served: VaultServer) -> None:
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1")
    with _insider(vs, "worker1") as db:
        stored = db.rows("meta", ["value"], where={"key": f"server/release/{grant_id}"})
    assert stored == [] or "key" not in json.loads(stored[0][0])
