"""The last server refusal details that were English inside Chinese output (issue 16).

A body that is not JSON was answered with the JSON parser's own English
(``Expecting value: line 1 column 1 (char 0)``); it now carries a template,
so a zh_CN client shows it in Chinese, and the English the server sends is
exactly that template rendered (a server failure's "internal error" too; no
test provokes one).
The signature layer's and the size/time limits' details (in the refusal log,
not sent to the client) were built from ``repr(...)`` or f-strings; they are
marked messages now as well, with the English kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from childvault._i18n import localize
from childvault.keys import ChildVaultError
from childvault.server import AuthRefusal, create_app
from childvault.vault._remote import RemoteBackend
from childvault.vault._wire_messages import message_fields
from tests.server._vaultserver import VaultServer, make_vault
from tests.server.test_hostile_headers import RESOLVER, call, signed_headers


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    vs = make_vault(tmp_path_factory.mktemp("vault"), people=("worker1",))
    vs.start()
    try:
        yield vs
    finally:
        vs.stop()


def _refused_body(vs: VaultServer, body: bytes) -> ChildVaultError:
    with vs.connect("worker1") as staff:
        backend: Any = staff._session.db
        assert isinstance(backend, RemoteBackend)
        with pytest.raises(ChildVaultError) as refused:
            backend._send("/v1/rpc", body)
    return refused.value


def test_a_body_that_is_not_json_reads_in_chinese(served: VaultServer) -> None:
    refused = _refused_body(served, b'{"repo": ')
    assert str(refused) == (
        "the server could not read the request (the body is not JSON (line 1, column 10))"
    )
    assert refused.localized("zh_CN") == (
        "服务器无法读取该请求（请求体不是 JSON（第 1 行，第 10 列））"
    )
    not_text = _refused_body(served, b'{"repo": "\xff"}')
    assert str(not_text).endswith("(the body is not UTF-8 text)")
    assert not_text.localized("zh_CN").endswith("（请求体不是 UTF-8 文本）")


def test_the_answer_of_a_body_that_is_not_json_carries_its_template(
    served: VaultServer,
) -> None:
    with served.connect("worker1") as staff:
        backend: Any = staff._session.db
        r = backend._http.post(
            served.url + "/v1/rpc",
            data=b"[1, 2",
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
    assert r.status_code == 400
    doc = r.json()
    assert doc["reason"] == "malformed"
    assert doc["error"] == "the body is not JSON (line 1, column 6)"
    assert doc["template"] == "the body is not JSON (line {line}, column {column})"
    assert doc["params"] == {"line": 1, "column": 6}


def test_signature_and_limit_details_are_marked_with_the_english_kept() -> None:
    events: list[AuthRefusal] = []
    app = create_app(RESOLVER, audit=events.append, max_body=64)
    # A Signature header that is not a structured field (the parser's repr).
    headers = signed_headers()
    headers["Signature"] = "(("
    status, _ = call(app, headers)
    assert status == 401
    # A body that is not the one signed.
    signed = signed_headers(data=b"signed", headers={"Content-Type": "text/plain"})
    status, _ = call(app, signed, body=b"sent")
    assert status == 401
    # A body declared larger than the limit.
    status, _ = call(app, {"Content-Length": "100"}, method="POST", body=b"x" * 100)
    assert status == 413
    malformed, mismatch, large = events
    assert malformed.reason == "malformed_signature"
    assert message_fields(malformed.detail)["template"] == "Signature: {error}"
    assert localize(malformed.detail, "zh_CN").startswith("Signature：")
    assert mismatch.reason == "digest_mismatch"
    assert message_fields(mismatch.detail)["template"] == "Content-Digest: {error}"
    assert localize(mismatch.detail, "zh_CN").startswith("Content-Digest：")
    assert large.reason == "body_too_large"
    assert large.detail == "Content-Length 100"  # the refusal log's English, as before
    assert localize(large.detail, "zh_CN") == "Content-Length 为 100"
