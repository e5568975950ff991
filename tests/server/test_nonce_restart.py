"""Regression: a SQLCipher server forgot its request nonces when it restarted.

Its nonce store lived in the process's memory, so a signed request captured on
the wire could be replayed once against the restarted server while its
``created`` time was still within the clock-skew window. The nonces now go to
``server-nonces.db`` in the home (``childvault/server/_nonces.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from childvault.server._auth import NonceStoreFull
from childvault.server._nonces import FILE_NAME, FileNonceStore
from childvault.vault._httpsig import HTTPSignatureAuth
from childvault.vault._remote._codec import encode
from tests.server._vaultserver import VaultServer, make_vault


def test_a_second_store_on_the_same_file_remembers_live_pairs(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    first = FileNonceStore(path)
    assert first.check_and_add("li", "a" * 32, expires_at=200.0, now=100.0)
    assert not first.check_and_add("li", "a" * 32, expires_at=200.0, now=150.0)
    first.close()
    assert path.stat().st_mode & 0o777 == 0o600
    again = FileNonceStore(path)  # the restarted server
    assert not again.check_and_add("li", "a" * 32, expires_at=300.0, now=199.0)
    # Another user's identical nonce is another pair; an expired pair may come back.
    assert again.check_and_add("wang", "a" * 32, expires_at=300.0, now=199.0)
    assert again.check_and_add("li", "a" * 32, expires_at=400.0, now=201.0)
    again.close()


def test_a_full_store_refuses_instead_of_forgetting_a_live_pair(tmp_path: Path) -> None:
    store = FileNonceStore(tmp_path / FILE_NAME, max_entries=2)
    assert store.check_and_add("li", "1" * 32, expires_at=200.0, now=100.0)
    assert store.check_and_add("li", "2" * 32, expires_at=200.0, now=100.0)
    with pytest.raises(NonceStoreFull):
        store.check_and_add("li", "3" * 32, expires_at=200.0, now=100.0)
    # Once the first two have expired, they are purged and the third goes in.
    assert store.check_and_add("li", "3" * 32, expires_at=400.0, now=300.0)
    assert len(store) == 1
    store.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[VaultServer]:
    vs = make_vault(tmp_path, ("officer1", "worker1"))
    vs.start()
    try:
        yield vs
    finally:
        vs.stop()


def test_a_request_replayed_after_a_restart_is_refused(served: VaultServer) -> None:
    vs = served
    call = {"txn": None, "repo": "access", "method": "request"}
    call |= {"args": encode(["0" * 32]), "kwargs": encode({})}
    captured = requests.Request(
        "POST",
        vs.url + "/v1/rpc",
        data=json.dumps(call).encode(),
        headers={"Content-Type": "application/json"},
        auth=HTTPSignatureAuth(vs.identity("worker1")),
    ).prepare()
    with requests.Session() as http:
        assert http.send(captured, timeout=60).status_code == 200
    port = urlsplit(vs.url).port
    vs.stop(kill=True)
    vs.start(port=port)
    with requests.Session() as http:
        again = http.send(captured, timeout=60)
    assert (again.status_code, again.json().get("reason")) == (401, "replay"), again.text
    assert (vs.home / FILE_NAME).exists()
