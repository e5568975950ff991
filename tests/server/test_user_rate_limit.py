"""Per-user rate limits of accepted requests on ``childvault serve`` (issue 13).

A token bucket per verified user (``serve --user-rate`` a minute, ``--user-burst``
at once): a request over it is answered 429 with ``Retry-After``, refused
before it reaches the vault, and logged as a refusal of that user (in the
refusal log and, bounded per user, as a ``server.refuse`` entry). The client
says so in the reader's language and exits 3 (refused). No test sleeps: the
bucket's clock is injected, and the server's limit is small enough to hit at
once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from childvault.keys import AccessDenied, UsageError
from childvault.server._limits import UserRateLimit
from childvault.vault._remote._codec import encode
from tests.server._vaultserver import (
    CLI_TIMEOUT,
    VaultServer,
    assert_refused,
    make_vault,
    passphrase,
    rpc_call,
    signed_rpc,
)

BURST = 30


def test_the_bucket_allows_a_burst_then_refills_per_user() -> None:
    now = [100.0]
    limit = UserRateLimit(per_minute=60, burst=3, clock=lambda: now[0])
    assert [limit.take("wang") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limit.take("wang")
    assert wait == pytest.approx(1.0)  # one token a second
    assert limit.retry_after(wait) == "1"
    assert limit.take("li") == 0.0  # another user has their own bucket
    now[0] += 0.5
    assert limit.take("wang") == pytest.approx(0.5)  # a refused request takes nothing
    now[0] += 0.5
    assert limit.take("wang") == 0.0
    now[0] += 3600
    assert [limit.take("wang") for _ in range(4)][-1] > 0  # refilled to the burst, no more
    with pytest.raises(UsageError, match="burst"):
        UserRateLimit(per_minute=0)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """A served vault whose users may make BURST requests, then one a minute.

    Served as worker4 (staff only), so refusals of verified users are also
    logged as ``server.refuse`` entries.
    """
    vs = make_vault(tmp_path_factory.mktemp("rate-vault"))
    vs.start(as_user="worker4", extra=["--user-rate", "1", "--user-burst", str(BURST)])
    try:
        yield vs
    finally:
        vs.stop()


def test_over_the_limit_is_refused_with_retry_after_and_logged(limited: VaultServer) -> None:
    vs = limited
    vs.cli("worker2", "list")  # well within its own burst
    answered = 0
    with vs.connect("worker1") as worker:
        db = worker._session.db
        with pytest.raises(AccessDenied, match=r"try again in (\d+) s") as refused:
            for n in range(BURST + 1):
                # A different key each time: nothing is answered from the client's cache.
                db.call("meta", "get", (f"rate-test-{n}",), {})  # type: ignore[attr-defined]
                answered += 1
        # A made-up transaction id does not pass for a request continuing one.
        made_up = {"txn": "0" * 32, "repo": "meta", "method": "get"}
        made_up |= {"args": encode(["rate-test"]), "kwargs": encode({})}
        with pytest.raises(AccessDenied, match=r"try again in"):
            db._post("/v1/rpc", made_up)  # type: ignore[attr-defined]
    assert answered < BURST
    match = re.search(r"try again in (\d+) s", str(refused.value))
    assert match is not None and 1 <= int(match.group(1)) <= 60
    # The CLI of the same user: refused, exit 3 (refused), in English and in Chinese.
    done = vs.cli("worker1", "list", expect=3)
    assert b"limits how many requests each user makes" in done.stderr
    env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase("worker1"), LANG="zh_CN.UTF-8")
    for name in ("CHILDVAULT_HOME", "LC_ALL", "LANGUAGE", "LC_MESSAGES"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "childvault", "--server", vs.url]
    cmd += ["--home", str(vs.workstation("worker1")), "--as", "worker1", "list"]
    zh = subprocess.run(cmd, cwd=vs.root, env=env, capture_output=True, timeout=CLI_TIMEOUT)
    assert zh.returncode == 3, zh.stderr.decode()
    assert "请求次数" in zh.stderr.decode()
    # Another user has their own bucket: still served.
    vs.cli("worker2", "list")
    # Logged: in the refusal log, and in the hash-chained log (bounded per user).
    assert any(
        r["reason"] == "rate_limited" and r["claimed_user"] == "worker1" for r in vs.refusals()
    )
    entries = vs.cli_json("officer1", "audit", "log", "--tail", "30")["entries"]
    refusals = [
        e["entry"]["detail"]
        for e in entries
        if e["entry"]["action"] == "server.refuse"
        and e["entry"]["detail"]["reason"] == "rate_limited"
    ]
    assert refusals and all(d["user"] == "worker1" for d in refusals)
    assert len(refusals) <= 5
    vs.cli("officer1", "audit", "verify")


def test_rate_limit_bypassed_inside_ones_own_transaction(limited: VaultServer) -> None:
    """Review finding RV-1: calls continuing one's own open transaction took no
    token, so one transaction ran any number of requests past the limit. They
    take one now; only ending the transaction (rollback, commit) is never refused."""
    vs = limited
    me = vs.identity("worker3")
    begun = signed_rpc(vs, me, "/v1/txn/begin", {})
    assert begun.status_code == 200, begun.text
    txn = begun.json()["result"]
    statuses = []
    try:
        for n in range(2 * BURST):
            call = signed_rpc(vs, me, "/v1/rpc", {"txn": txn, **rpc_call("meta", "get", f"k{n}")})
            statuses.append(call.status_code)
            if call.status_code != 200:
                assert_refused(call, 429, "rate_limited")
                break
    finally:
        # The bucket is empty, yet the transaction still ends.
        ended = signed_rpc(vs, me, "/v1/txn/rollback", {"txn": txn})
    assert ended.status_code == 200, ended.text
    assert statuses[-1] == 429 and len(statuses) <= BURST
