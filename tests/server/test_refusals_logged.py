"""Refusals of verified users go into the hash-chained audit log, bounded (issue 13).

A staff user's forbidden call over a real server shows up in ``audit log
--json`` as a ``server.refuse`` entry signed by the server's identity, and
``audit verify`` still passes. A flood of refusals grows the log by a few
entries per user and window; the rest are counted in the next entry.
Unauthenticated refusals (an unknown key) stay in the refusal log only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from childvault.keys import AccessDenied, ConfigError, Identity
from childvault.server._refusals import RefusalLimiter
from childvault.server._vault import VaultHost, unlock_home_as
from childvault.vault import Vault
from childvault.vault._httpsig import HTTPSignatureAuth
from tests.server._vaultserver import VaultServer, make_vault, passphrase


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """A small vault (one officer, one staff), served as the staff-only user ``svc``."""
    vs = make_vault(tmp_path_factory.mktemp("refusals"), ("officer1", "worker1"))
    with Vault.open(vs.home, "admin", passphrase("admin")) as admin:
        admin.add_user("svc", ["staff"], passphrase("svc"))
    vs.start(as_user="svc")
    try:
        yield vs
    finally:
        vs.stop()


def _refusals_in_log(vs: VaultServer) -> list[dict[str, object]]:
    entries = vs.cli_json("officer1", "audit", "log", "--action", "server.refuse")["entries"]
    return [e["entry"] for e in entries]


def test_a_staff_users_forbidden_call_is_in_the_audit_log(served: VaultServer) -> None:
    vs = served
    with vs.connect("worker1") as staff:
        db = staff._session.db
        with pytest.raises(AccessDenied, match=r"may not call access\.decide"), db.transaction():
            db.access.decide("0" * 32, status="approved", by="worker1", at="x", reason=None)
    logged = _refusals_in_log(vs)
    assert len(logged) == 1
    entry = logged[0]
    assert entry["actor"] == "svc"  # the identity the server was started with
    assert entry["outcome"] == "denied"
    assert entry["detail"] == {
        "user": "worker1",
        "reason": "role",
        # The client sends a transaction's first write with its begin, as a batch.
        "request": "POST /v1/rpc/batch",
        "suppressed": 0,
    }
    vs.cli("worker1", "audit", "verify")
    vs.cli("officer1", "audit", "verify")


def test_an_unknown_key_stays_out_of_the_log(served: VaultServer) -> None:
    vs = served
    before = len(_refusals_in_log(vs))
    stranger = Identity.generate("mallory")
    r = requests.get(vs.url + "/v1/whoami", auth=HTTPSignatureAuth(stranger), timeout=30)
    assert r.status_code == 401
    assert any(x["reason"] == "unknown_user" for x in vs.refusals())
    assert len(_refusals_in_log(vs)) == before


def test_a_flood_of_refusals_is_bounded_and_counted(served: VaultServer) -> None:
    vs = served
    before = len(_refusals_in_log(vs))
    with vs.connect("worker1") as staff:
        db = staff._session.db
        for _ in range(12):
            with pytest.raises(AccessDenied):
                db.call("meta", "get", ("server/release/x",), {})  # type: ignore[attr-defined]
    logged = _refusals_in_log(vs)[before:]
    # At most five entries per user and minute (one was logged by the test above).
    assert 1 <= len(logged) <= 5
    assert all(e["detail"]["reason"] == "server_only" for e in logged)  # type: ignore[index]
    vs.cli("officer1", "audit", "verify")


def test_an_admins_or_officers_key_never_signs_refusals(served: VaultServer) -> None:
    """The server process keeps no key that registers, decides or signs checkpoints."""
    vs = served
    for user in ("admin", "officer1"):
        key, anchor, identity = unlock_home_as(vs.home, user, passphrase(user))
        host = VaultHost(vs.home, key, anchor)
        try:
            with pytest.raises(ConfigError, match="staff-only"):
                host.sign_refusals_as(identity)
        finally:
            host.close()


def test_the_limiter_counts_what_it_holds_back() -> None:
    limiter = RefusalLimiter(per_window=2, window=60.0)
    assert limiter.admit("a", "role", "x", now=0.0)
    assert limiter.admit("a", "role", "x", now=1.0)
    assert not limiter.admit("a", "role", "x", now=2.0)
    assert not limiter.admit("a", "role", "x", now=3.0)
    assert limiter.admit("b", "role", "x", now=3.0)  # per user
    assert [r.suppressed for r in limiter.take()] == [0, 0, 0]
    # After the window the next entry carries the count of those held back.
    assert limiter.admit("a", "binding", "y", now=61.0)
    (entry,) = limiter.take()
    assert (entry.user, entry.reason, entry.suppressed) == ("a", "binding", 2)


def test_the_queue_is_bounded() -> None:
    limiter = RefusalLimiter(per_window=100, window=60.0, max_queued=3)
    admitted = [limiter.admit(f"u{i}", "role", "x", now=0.0) for i in range(5)]
    assert admitted == [True, True, True, False, False]
    limiter.put_back(limiter.take())
    assert limiter.admit("u0", "role", "x", now=1.0)
    assert limiter.take()[0].suppressed == 1
