"""The Vault provider against a three-node OpenBao Raft cluster (issue 17, Vault HA).

``VAULT_ADDR`` lists all three nodes. The leader is SIGKILLed while a batch of
records is being wrapped: the batch completes through the new leader, or fails
cleanly (exit 5, nothing of it stored) and is retried; afterwards every record
decrypts and the log verifies. No time is asserted (the HA wait bound only
stops a hang).
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from childvault.keys import ProviderUnavailable, VaultSettings, setup_vault
from childvault.keys._openbao._http import Connection
from childvault.testing import FakeClock
from childvault.vault import NewRecordInput, OpenBaoCredentials, OpenBaoKeys, Vault
from tests.conftest import PASSPHRASES, child_values, consent
from tests.fixtures.raft import RaftCluster

BATCHES = 4
PER_BATCH = 12


@pytest.fixture
def cluster(raft_cluster: RaftCluster) -> Iterator[RaftCluster]:
    """The session cluster, with every node running again after the test."""
    yield raft_cluster
    for i, node in enumerate(raft_cluster.nodes):
        if not node.running:
            raft_cluster.restart(i)
    raft_cluster.wait_for_leader()


def _settings(cluster: RaftCluster, order: list[int] | None = None) -> VaultSettings:
    addrs = [cluster.addrs[i] for i in (order or range(len(cluster.addrs)))]
    return VaultSettings(addr=",".join(addrs))


def test_several_addresses_are_parsed_and_a_bad_one_is_refused() -> None:
    s = VaultSettings(addr="http://127.0.0.1:1/, http://127.0.0.1:2")
    assert s.addr == "http://127.0.0.1:1,http://127.0.0.1:2"
    with pytest.raises(Exception, match="several such addresses"):
        VaultSettings(addr="http://127.0.0.1:1,ftp://x")


def test_a_standby_first_in_the_list_answers_through_the_leader(cluster: RaftCluster) -> None:
    leader = cluster.leader()
    standby = next(i for i in range(len(cluster.nodes)) if i != leader)
    conn = Connection(_settings(cluster, [standby, leader]), token=cluster.root_token, approle=None)
    try:
        # Leader-only operations, sent to the standby first.
        conn.call("POST", "transit/keys/ha-order")
        body = {"plaintext": "c3Vydml2ZXM="}
        reply = conn.call("POST", "transit/encrypt/ha-order", body=body)
        assert str(reply.data["data"]["ciphertext"]).startswith("vault:v1:")
    finally:
        conn.close()


def test_no_leader_within_the_bound_fails_with_exit_5_naming_the_nodes(
    cluster: RaftCluster,
) -> None:
    # Two free ports where nothing listens: every try is refused.
    dead = ["http://127.0.0.1:9", "http://127.0.0.1:1"]
    conn = Connection(VaultSettings(addr=",".join(dead)), token="t", approle=None)
    conn.ha_wait = 0.5
    try:
        with pytest.raises(ProviderUnavailable) as info:
            conn.call("GET", "sys/health")
    finally:
        conn.close()
    assert info.value.exit_code == 5
    assert all(d in str(info.value) for d in dead)
    assert "no active Vault node" in str(info.value)


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A real HTTP node: redirects to ``target`` if set, else answers 200 and
    records the token it received."""

    target: str | None = None
    tokens: list[str | None]

    def do_GET(self) -> None:
        type(self).tokens.append(self.headers.get("X-Vault-Token"))
        if self.target:
            self.send_response(307)
            self.send_header("Location", f"{self.target}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on a free loopback port, as its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _node(target: str | None = None) -> Iterator[tuple[str, list[str | None]]]:
    handler = type("Node", (_Recorder,), {"target": target, "tokens": []})
    with _serving(handler) as url:
        yield url, handler.tokens


def test_redirects_are_followed_to_listed_nodes_only() -> None:
    with _node() as (outsider, outsider_tokens), _node(outsider) as (a, _):
        conn = Connection(VaultSettings(addr=a), token="s.secret-token", approle=None)
        conn.ha_wait = 0.3
        try:
            with pytest.raises(ProviderUnavailable, match="not in VAULT_ADDR"):
                conn.call("GET", "sys/leader")
        finally:
            conn.close()
        assert outsider_tokens == []  # the outsider never saw a request, nor the token
    with _node() as (leader, leader_tokens), _node(leader) as (standby, _):
        conn = Connection(
            VaultSettings(addr=f"{standby},{leader}"), token="s.secret-token", approle=None
        )
        try:
            assert conn.call("GET", "sys/leader").data == {"ok": True}
        finally:
            conn.close()
        assert leader_tokens == ["s.secret-token"]


_NOT_ACTIVE = {"errors": ["local node not active but active cluster node not found"]}


class _Scripted(http.server.BaseHTTPRequestHandler):
    """A stand-in node on loopback (error handling only): answers its ``script``
    in order, repeating the last answer, and records each status it sent."""

    script: list[tuple[int, dict[str, object]]]
    sent: list[int]

    def do_GET(self) -> None:
        cls = type(self)
        status, doc = cls.script[min(len(cls.sent), len(cls.script) - 1)]
        cls.sent.append(status)
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _scripted(*script: tuple[int, dict[str, object]]) -> Iterator[tuple[str, list[int]]]:
    handler = type("Scripted", (_Scripted,), {"script": list(script), "sent": []})
    with _serving(handler) as url:
        yield url, handler.sent


def test_an_election_answered_twice_with_500_not_active_is_waited_out() -> None:
    # One address configured (the common case): "not active" is still retried.
    with _scripted((500, _NOT_ACTIVE), (500, _NOT_ACTIVE), (200, {"ok": True})) as (url, sent):
        conn = Connection(VaultSettings(addr=url), token="t", approle=None)
        try:
            assert conn.call("GET", "sys/leader").data == {"ok": True}
        finally:
            conn.close()
    assert sent == [500, 500, 200]


def test_unsealed_503_on_every_node_fails_with_exit_5_after_the_bound() -> None:
    # 503 without "sealed": standbys with no leader to forward to, on every node.
    standby = {"errors": []}
    with _scripted((503, standby)) as (a, sent_a), _scripted((503, standby)) as (b, sent_b):
        conn = Connection(VaultSettings(addr=f"{a},{b}"), token="t", approle=None)
        conn.ha_wait = 0.5
        try:
            with pytest.raises(ProviderUnavailable) as info:
                conn.call("GET", "sys/leader")
        finally:
            conn.close()
    assert info.value.exit_code == 5
    message = str(info.value)
    assert "no active Vault node answered within 0.5 s" in message
    assert f"{a} (HTTP 503: no active node)" in message
    assert f"{b} (HTTP 503: no active node)" in message
    # Retried in rounds over both nodes, and bounded: pauses of 0.1, 0.2, then
    # the 0.2 s left of the 0.5 s allow at most four rounds.
    assert sent_a == sent_b
    assert 2 <= len(sent_a) <= 4


def test_sigkill_of_the_leader_during_a_batch_of_wraps(
    cluster: RaftCluster, tmp_path: Path
) -> None:
    settings = _settings(cluster)
    # No audit device on the throw-away cluster: the failover, not the audit trail, is tested.
    setup_vault(settings, cluster.root_token, allow_no_audit_device=True)
    keys = dataclasses.replace(OpenBaoKeys(settings), token=cluster.root_token)
    creds = OpenBaoCredentials(token=cluster.root_token)
    clock = FakeClock()
    home = tmp_path / "home"
    with Vault.init(
        home,
        institution="测试福利院",
        admin="admin",
        admin_passphrase=PASSPHRASES["admin"],
        clock=clock,
        keys=keys,
    ) as v:
        v.add_user("worker1", ("staff",), PASSPHRASES["worker1"])
        v.add_user("officer1", ("officer",), PASSPHRASES["officer1"])

    def open_as(who: str) -> Vault:
        return Vault.open(home, who, PASSPHRASES[who], clock=clock, credentials=creds)

    ids: list[str] = []
    failed_cleanly = 0
    with open_as("worker1") as v:
        for batch in range(BATCHES):
            items = [
                NewRecordInput("child", child_values(batch * PER_BATCH + i), consent())
                for i in range(PER_BATCH)
            ]
            killer = None
            if batch == 1:
                # Kill the leader while this batch's salts and wraps are in flight.
                leader = cluster.leader()
                killer = threading.Timer(0.05, cluster.kill, args=(leader,))
                killer.start()
            try:
                ids += v.add_records(items)
            except ProviderUnavailable as exc:
                assert exc.exit_code == 5
                print(f"batch {batch} failed cleanly: {exc}")
                failed_cleanly += 1
                # Nothing of the failed batch was stored: its transaction rolled back.
                assert sum(1 for _ in v.list_records()) == len(ids)
                ids += v.add_records(items)  # resume: the whole batch again
            if killer is not None:
                killer.join()
    assert len(ids) == BATCHES * PER_BATCH == len(set(ids))
    with open_as("officer1") as v:
        assert sum(1 for _ in v.list_records()) == len(ids)
    got: dict[str, dict[str, str]] = {}
    for chunk in (ids[i : i + 25] for i in range(0, len(ids), 25)):
        with open_as("worker1") as v:
            req = v.request_access(chunk, ("name", "case_notes"), "case_management", "核对")
        with open_as("officer1") as v:
            token = v.approve(req).token
        with open_as("worker1") as v:
            got.update(v.read_with_grant(token))
    expected = {child_values(n)["name"] for n in range(len(ids))}
    assert {got[r]["name"] for r in ids} == expected
    with open_as("admin") as v:
        assert v.verify_audit().entries > len(ids)
    # Either way is fine; say which happened in the test output.
    print(f"batch during failover: {'retried' if failed_cleanly else 'completed'}")
