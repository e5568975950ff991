"""A refusal whose request path holds U+0000 is still chained (review RV11-2).

The server logs a verified user's refusals as ``server.refuse`` entries naming
the request (method and path). The path is percent-decoded, so ``%00`` puts
U+0000 into it, which no log entry may hold (tests/attack/test_log_entries_nul.py):
the entry would be refused, and with it the other refusals of its flush. The
server writes the character as U+FFFD instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from childvault.vault import Vault
from childvault.vault._httpsig import HTTPSignatureAuth
from tests.server._vaultserver import VaultServer, make_vault, passphrase
from tests.server.test_refusals_logged import _refusals_in_log


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


def test_a_replay_to_a_path_holding_nul_is_chained(served: VaultServer) -> None:
    vs = served
    signed = requests.Request(
        "POST",
        vs.url + "/v1/x%00y",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        auth=HTTPSignatureAuth(vs.identity("worker1")),
    ).prepare()
    for expected in (404, 401):  # no such route; then the same nonce again
        with requests.Session() as http:
            assert http.send(signed, timeout=30).status_code == expected
    assert any(r["reason"] == "replay" and r["path"] == "/v1/x\x00y" for r in vs.refusals())
    # Written on the server's DB thread after the answer: waited for, bounded.
    deadline = time.monotonic() + 60
    while not (logged := _refusals_in_log(vs)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [e["detail"] for e in logged] == [
        {"user": "worker1", "reason": "replay", "request": "POST /v1/x\ufffdy", "suppressed": 0}
    ]
    vs.cli("officer1", "audit", "verify")
