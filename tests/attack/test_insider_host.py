"""An insider on the server host: a user who opens the served vault's database with
their own passphrase (every key slot holds the database key, DESIGN section 2)
or edits the server's nonce file, then talks to the running server.

The server takes users, keys and roles from the verified trust state, never
from the ``users`` table; a replayed request is checked again by the vault.
What it took from a row it should not was a finding
(``/work/briefs/findings-A.md``); each reproducer now passes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import pytest
import requests

from childvault.keys import ApprovalInvalid, Identity
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
    rows = log_rows(vs, vs.identity("worker1"), _wire.read_event(vs, "worker1", grant_id))
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


def test_a_revocation_cleared_in_the_database_releases_nothing(served: VaultServer) -> None:
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1")
    with vs.connect("officer1") as officer:
        officer.revoke(grant_id)  # logged: grant.revoke
    with _insider(vs, "worker1") as db:
        assert db.update("grants", {"revoked_at": None, "revoked_by": None}, {"id": grant_id}) == 1
    rows = log_rows(vs, vs.identity("worker1"), _wire.read_event(vs, "worker1", grant_id))
    batch(vs, "worker1", call("access", "use_grant", grant_id), call("audit", "append", rows))
    r = batch(vs, "worker1", call("release", "redeem", grant_id))
    refused(r, 403, "release_refused")


def test_the_release_key_is_not_in_the_database_in_clear(served: VaultServer) -> None:
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1")
    with _insider(vs, "worker1") as db:
        stored = db.rows("meta", ["value"], where={"key": f"server/release/{grant_id}"})
    assert stored == [] or "key" not in json.loads(stored[0][0])


def _release_row(vs: VaultServer, grant_id: str) -> str:
    with _insider(vs, "worker1") as db:
        ((value,),) = db.rows("meta", ["value"], where={"key": f"server/release/{grant_id}"})
    return str(value)


def _set_release_row(vs: VaultServer, grant_id: str, value: str) -> None:
    with _insider(vs, "worker1") as db:
        assert db.update("meta", {"value": value}, {"key": f"server/release/{grant_id}"}) == 1


def _logged_use(vs: VaultServer, grant_id: str) -> requests.Response:
    """A use consumed (if the row still allows one) and its read entry committed."""
    rows = log_rows(vs, vs.identity("worker1"), _wire.read_event(vs, "worker1", grant_id))
    r = batch(vs, "worker1", call("access", "use_grant", grant_id), call("audit", "append", rows))
    assert r.status_code == 200, r.text
    return r


def test_a_release_counter_reset_in_the_database_gives_no_extra_release(
    served: VaultServer,
) -> None:
    vs = served
    grant_id, token = _wire.approved(vs, "worker1", uses=2)
    with vs.connect("worker1") as staff:
        staff.read_with_grant(token)  # one logged use, one release
    row = json.loads(_release_row(vs, grant_id))
    assert row["redeemed"] == 1 and "key" not in row
    _set_release_row(vs, grant_id, json.dumps({**row, "redeemed": 0}))
    r = batch(vs, "worker1", call("release", "redeem", grant_id))
    refused(r, 403, "release_refused")
    assert "altered" in r.json()["error"]


def test_uses_or_expiry_raised_in_the_grants_row_give_no_extra_release(
    served: VaultServer,
) -> None:
    """The signed approval entry decides how many uses and until when, not the row;
    and releases are counted against the logged reads, not the row's use count."""
    vs = served
    grant_id, token = _wire.approved(vs, "worker1", uses=1)
    with vs.connect("worker1") as staff:
        staff.read_with_grant(token)
    with _insider(vs, "worker1") as db:
        changed = {"max_uses": 5, "uses": 4, "expires_at": "2099-01-01T00:00:00.000000Z"}
        assert db.update("grants", changed, {"id": grant_id}) == 1
    _logged_use(vs, grant_id)  # the row now lets a second use be consumed
    r = batch(vs, "worker1", call("release", "redeem", grant_id))
    refused(r, 403, "release_refused")
    assert "no logged use left" in r.json()["error"]


def test_a_release_row_copied_to_another_grant_does_not_open(served: VaultServer) -> None:
    vs = served
    first, _ = _wire.approved(vs, "worker1")
    second, _ = _wire.approved(vs, "worker1")
    _set_release_row(vs, second, _release_row(vs, first))
    _logged_use(vs, second)
    r = batch(vs, "worker1", call("release", "redeem", second))
    refused(r, 403, "release_refused")
    assert "altered or belongs elsewhere" in r.json()["error"]


def test_a_release_in_a_transaction_left_open_is_refused(served: VaultServer) -> None:
    """Only a request that commits the release count may carry the key: a count in a
    transaction the client then rolls back would let the key out again."""
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1")
    _logged_use(vs, grant_id)
    r = batch(vs, "worker1", call("release", "redeem", grant_id), commit=False)
    refused(r, 403, "release_refused")
    # The logged use is still there to be released, once, by a committing request.
    assert _wire.ok(batch(vs, "worker1", call("release", "redeem", grant_id)))
    refused(batch(vs, "worker1", call("release", "redeem", grant_id)), 403, "release_refused")


def test_the_honest_flow_reads_each_logged_use(served: VaultServer) -> None:
    """approve (uses 2) -> read -> read through the server; the third read is refused."""
    vs = served
    grant_id, token = _wire.approved(vs, "worker1", uses=2)
    with vs.connect("worker1") as staff:
        first = staff.read_with_grant(token)
        second = staff.read_with_grant(token)
        assert first == second and first
        with pytest.raises(ApprovalInvalid):
            staff.read_with_grant(token)
    assert json.loads(_release_row(vs, grant_id))["redeemed"] == 2
    # The release secret sits beside the serving identity, sealed: not in clear.
    secret = json.loads((vs.home / "identities" / "admin.release").read_text())
    assert set(secret) == {"sealed", "sig", "user", "v", "vault"}


def test_a_use_logged_and_released_in_one_committing_batch(served: VaultServer) -> None:
    """The read entry appended in the same transaction counts (it commits with the
    release count, or the answer carrying the key is never sent); a second release
    of that one use is refused."""
    vs = served
    grant_id, _ = _wire.approved(vs, "worker1")
    rows = log_rows(vs, vs.identity("worker1"), _wire.read_event(vs, "worker1", grant_id))
    r = batch(
        vs,
        "worker1",
        call("access", "use_grant", grant_id),
        call("audit", "append", rows),
        call("release", "redeem", grant_id),
    )
    _, (used, _, key) = _wire.ok(r)  # [transaction id (None: committed), results]
    assert used is True and isinstance(key, bytes) and len(key) == 32
    refused(batch(vs, "worker1", call("release", "redeem", grant_id)), 403, "release_refused")
