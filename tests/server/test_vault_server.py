"""``childvault serve`` with real clients: the core flow, roles, release after logging.

One server process per module on 127.0.0.1; CLI clients run as separate
processes with their own workstation directories (identity file only);
attacks use the library client in this process to send what an honest
client never would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from childvault.keys import AccessDenied, ApprovalInvalid, ChildVaultError, LocalProvider
from childvault.vault import _audit, _tokens
from childvault.vault._audit import Event
from childvault.vault._httpsig import HTTPSignatureAuth
from childvault.vault._remote._release import MAGIC, unwrap
from tests._sample import lasting
from tests.server._vaultserver import VaultServer, make_vault

SAMPLE = Path(__file__).resolve().parents[2] / "childvault" / "vault" / "data" / "sample.csv"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The test vault, served; the sample (a back-dated register) imported by officer1."""
    vs = make_vault(tmp_path_factory.mktemp("vault"))
    vs.start()
    try:
        vs.cli("officer1", "import", "--confirm-backdated", str(SAMPLE))
        yield vs
    finally:
        vs.stop()


def _ids(vs: VaultServer, n: int) -> list[str]:
    # Chosen by a property, not by position: the sample's ids are random and
    # some of its children turn 14 over time (tests/_sample.py).
    return lasting(vs.cli_json("worker1", "list")["records"], n)


def _approved(vs: VaultServer, records: list[str], *, uses: int = 1) -> tuple[str, str]:
    """(grant id, token) of a request by worker1 approved by officer1."""
    req = vs.cli_json(
        "worker1",
        "request",
        *[a for r in records for a in ("--record", r)],
        "--field",
        "name",
        "--purpose",
        "case_management",
        "--reason",
        "home visit",
    )
    with vs.connect("officer1") as officer:
        approval = officer.approve(req["request_id"], uses=uses)
    return approval.grant_id, approval.token


def test_core_flow_through_the_server(served: VaultServer, tmp_path: Path) -> None:
    vs = served
    ids = _ids(vs, 2)
    assert len(ids) == 2
    req = vs.cli_json(
        "worker1",
        "request",
        "--record",
        ids[0],
        "--record",
        ids[1],
        "--field",
        "name",
        "--field",
        "guardian_phone",
        "--purpose",
        "case_management",
        "--reason",
        "home visit",
    )
    pending = vs.cli_json("officer2", "requests")
    assert req["request_id"] in [r["id"] for r in pending["requests"]]
    token = tmp_path / "grant.token"
    vs.cli("officer2", "approve", req["request_id"], "--uses", "2", "--out", str(token))
    read = vs.cli_json("worker1", "read", ids[0], ids[1], "--grant", f"@{token}")
    assert set(read["records"]) == set(ids)
    assert all(set(v) == {"name", "guardian_phone"} for v in read["records"].values())
    vs.cli("officer1", "delete", ids[1], "--reason", "guardian asked")
    vs.cli("worker1", "read", ids[1], "--grant", f"@{token}", expect=3)
    vs.cli("worker1", "read", ids[0], "--grant", f"@{token}")
    vs.cli("worker1", "audit", "verify")
    vs.cli("officer1", "audit", "verify")
    # The workstations hold their identity file and nothing else.
    for user in ("worker1", "officer1", "officer2"):
        files = sorted(p.name for p in vs.workstation(user).rglob("*") if p.is_file())
        assert files == [f"{user}.id"]
    # The server witnessed the approval's checkpoint in its own witness file.
    witness = vs.home.parent / f"{vs.home.name}.witness.jsonl"
    assert witness.read_text(encoding="utf-8").count('"note"') >= 1


def test_staff_cannot_decide_requests_at_the_server(served: VaultServer) -> None:
    """A client that skips its own role check is refused by the server's allowlist."""
    vs = served
    ids = _ids(vs, 1)
    req = vs.cli_json(
        "worker2",
        "request",
        "--record",
        ids[0],
        "--field",
        "name",
        "--purpose",
        "case_management",
        "--reason",
        "x",
    )
    with vs.connect("worker1") as staff:
        db = staff._session.db
        refused = pytest.raises(AccessDenied, match=r"may not call access\.decide")
        with refused, db.transaction():
            db.access.decide(
                req["request_id"], status="approved", by="worker1", at="x", reason=None
            )
    assert any(r["reason"] == "role" and r["claimed_user"] == "worker1" for r in vs.refusals())
    with vs.connect("officer1") as officer:
        assert officer._session.db.access.request(req["request_id"]).status == "pending"


def test_log_entries_in_another_name_or_unsigned_are_refused(served: VaultServer) -> None:
    vs = served
    with vs.connect("worker1") as staff:
        db = staff._session.db
        before = db.audit.head()
        # An entry in the officer's name, signed by nobody the server trusts for it.
        db.audit.signer = None
        with pytest.raises(AccessDenied, match="another's name"), db.transaction():
            _audit.append(db.audit, [Event("officer1", "audit.checkpoint")], staff.now())
        # An entry in the caller's own name but without its signature.
        with pytest.raises(AccessDenied, match="not signed"), db.transaction():
            _audit.append(db.audit, [Event("worker1", "audit.checkpoint")], staff.now())
        assert db.audit.head() == before


def test_a_consumed_use_needs_its_read_entry(served: VaultServer) -> None:
    vs = served
    grant_id, _ = _approved(vs, _ids(vs, 1))
    with vs.connect("worker1") as staff:
        db = staff._session.db
        with pytest.raises(ChildVaultError, match="without its read entry"), db.transaction():
            assert db.access.use_grant(grant_id)
        with vs.connect("officer1") as officer:
            assert officer._session.db.access.grant(grant_id).uses == 0


def test_skipping_redemption_cannot_decrypt(served: VaultServer) -> None:
    """The token's key material is useless without the server's release key."""
    vs = served
    ids = _ids(vs, 1)
    grant_id, token = _approved(vs, ids)
    requester = vs.identity("worker1")
    with vs.connect("worker1") as staff:
        signer = staff._session.public("officer1").signing_key
        vault_id = staff.vault_id
    claims = _tokens.verify(token, signer)
    assert claims.keys.startswith(MAGIC)
    provider = LocalProvider(vault_id, 1, b"\0" * 32)
    with pytest.raises(ApprovalInvalid):
        provider.redeem(claims.keys, requester, grant_id)  # sealed again: not openable
    with pytest.raises(ApprovalInvalid):
        unwrap(claims.keys, b"\1" * 32, vault_id, grant_id)  # a guessed release key
    # Asking for the release key without a logged use is refused too.
    with vs.connect("worker1") as staff, pytest.raises(AccessDenied, match="no logged use"):
        staff._session.db.release.redeem(grant_id)  # type: ignore[attr-defined]
    # The honest path still reads.
    with vs.connect("worker1") as staff:
        assert set(staff.read_with_grant(token)[ids[0]]) == {"name"}


def test_token_redeemed_by_another_user_is_refused(served: VaultServer, tmp_path: Path) -> None:
    vs = served
    ids = _ids(vs, 1)
    grant_id, token = _approved(vs, ids)
    path = tmp_path / "t"
    path.write_text(token)
    vs.cli("worker2", "read", ids[0], "--grant", f"@{path}", expect=3)
    with vs.connect("worker2") as other, pytest.raises(AccessDenied, match="issued to worker1"):
        other._session.db.release.redeem(grant_id)  # type: ignore[attr-defined]
    assert any(r["reason"] == "release_refused" for r in vs.refusals())


def test_redemption_after_revoke_is_refused(served: VaultServer) -> None:
    vs = served
    ids = _ids(vs, 1)
    grant_id, token = _approved(vs, ids, uses=2)
    with vs.connect("worker1") as staff:
        staff.read_with_grant(token)  # one use, logged and redeemed
    with vs.connect("officer1") as officer:
        officer.revoke(grant_id)
    with vs.connect("worker1") as staff:
        with pytest.raises(ApprovalInvalid):
            staff.read_with_grant(token)
        with pytest.raises(AccessDenied, match="revoked"):
            staff._session.db.release.redeem(grant_id)  # type: ignore[attr-defined]


def test_release_keys_are_not_readable_through_the_api(served: VaultServer) -> None:
    vs = served
    grant_id, _ = _approved(vs, _ids(vs, 1))
    with vs.connect("officer1") as officer, pytest.raises(AccessDenied, match="server's own"):
        officer._session.db.meta.get(f"server/release/{grant_id}")


def test_a_replayed_rpc_request_is_refused(served: VaultServer) -> None:
    vs = served
    body = json.dumps(
        {"txn": None, "repo": "records", "method": "count", "args": [], "kwargs": {"$o": []}}
    ).encode()
    prepared = requests.Request(
        "POST",
        vs.url + "/v1/rpc",
        data=body,
        headers={"Content-Type": "application/json"},
        auth=HTTPSignatureAuth(vs.identity("worker1")),
    ).prepare()
    with requests.Session() as http:
        first = http.send(prepared, timeout=30)
        again = http.send(prepared, timeout=30)
    assert first.status_code == 200, first.text
    assert (again.status_code, again.json()["reason"]) == (401, "replay")


def test_a_transaction_left_open_is_rolled_back_and_does_not_block_others(
    served: VaultServer,
) -> None:
    """A client that begins and then vanishes holds the vault only until its idle timeout."""
    vs = served
    with vs.connect("worker1") as dead, vs.connect("worker2") as alive:
        backend = dead._session.db
        txn = backend._post("/v1/txn/begin", {})  # type: ignore[attr-defined]
        # The other client's transaction waits its turn (its begin retries), then runs.
        with alive._session.db.transaction():
            assert alive._session.db.records.count() > 0
        with pytest.raises(ChildVaultError, match="no such open transaction"):
            backend._post("/v1/txn/commit", {"txn": txn})  # type: ignore[attr-defined]
