"""The remote backend's requests go straight through ``requests``' connection pool
(``_Session.post_signed``): signed as ``sign_request`` signs them, accepted by the
server, one connection for many requests, redirects refused, and ``requests``
itself whenever a proxy is set or the request is not a plain one.

Skipping ``requests``' per-request work (preparing and merging the request, hooks,
a ``Response``) halved the client's CPU of a round trip (docs/benchmarks.md,
"Server, round 2 session 10: the cost of a request").
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3.connection

from childvault.keys import AccessDenied, ConfigError, ProviderUnavailable
from childvault.vault._httpsig import plain_headers, sign_request
from childvault.vault._remote import RemoteBackend, _Session

from .conftest import ServerProcess, Users, start_server, stop_server
from .test_run import _self_signed

BODY = b'{"pad":"' + b"x" * 190 + b'"}'


def test_the_headers_are_those_sign_request_writes(users: Users) -> None:
    prepared = requests.Request(
        "POST",
        "http://127.0.0.1:1/v1/rpc",
        data=BODY,
        headers={"Content-Type": "application/json"},
    ).prepare()
    sign_request(prepared, users.alice, created=1_700_000_000, nonce="ab" * 16)
    direct = plain_headers(
        users.alice,
        "POST",
        "/v1/rpc",
        BODY,
        "application/json",
        created=1_700_000_000,
        nonce="ab" * 16,
    )
    assert direct is not None
    assert direct == {n: prepared.headers[n] for n in direct}
    assert set(direct) == {"Content-Digest", "Signature-Input", "Signature"}


def test_accepted_and_one_connection_for_many_requests(
    server: ServerProcess, users: Users, monkeypatch: pytest.MonkeyPatch
) -> None:
    connects: list[int] = []
    sends: list[int] = []
    plain = urllib3.connection.HTTPConnection.connect
    plain_send = urllib3.connection.HTTPConnection.send

    def counted(self: Any) -> None:
        connects.append(1)
        plain(self)

    def counted_send(self: Any, data: Any) -> None:
        sends.append(len(data))
        plain_send(self, data)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", counted)
    monkeypatch.setattr(urllib3.connection.HTTPConnection, "send", counted_send)
    session = _Session()
    for n in range(5):
        reply = session.post_signed(server.url, "/v1/whoami", BODY, users.alice, 30)
        assert reply is not None
        assert reply.status_code == 200, reply.content
        assert reply.json() == {"user": "alice", "body_bytes": len(BODY)}, n
    # One connection, and each request (head and body) in one send().
    assert len(connects) == 1
    assert len(sends) == 5 and all(n > len(BODY) for n in sends)
    # Each request had its own nonce (the server refuses a replay): five accepted.
    lines = [e for e in server.access_log() if e.get("user") == "alice"]
    assert [e["status"] for e in lines[-5:]] == [200] * 5
    session.close()


def test_a_refusal_comes_back_as_the_servers_answer(server: ServerProcess, users: Users) -> None:
    # mallory is unknown to the server: refused by the signature layer, 401.
    backend = RemoteBackend(server.url, users.mallory)
    with pytest.raises(AccessDenied, match="does not know the signing user"):
        backend._send("/v1/whoami", BODY)
    reply = backend._http.post_signed(server.url, "/v1/whoami", BODY, users.mallory, 30)
    assert reply is not None and reply.status_code == 401
    assert reply.json()["reason"] == "unknown_user"
    backend.close()


def _one_answer(answer: bytes) -> tuple[str, list[bytes]]:
    """A loopback listener that answers one request with ``answer``; its URL and
    what it received."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    received: list[bytes] = []

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                data = b""
                while not data.endswith(BODY):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                received.append(data)
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", received


def test_a_redirect_is_refused_not_followed(users: Users) -> None:
    url, received = _one_answer(
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:9/v1/rpc\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    backend = RemoteBackend(url, users.alice)
    with pytest.raises(ConfigError, match="redirect"):
        backend._send("/v1/rpc", BODY)
    head = received[0].partition(b"\r\n\r\n")[0].lower()
    assert b"\r\nsignature: childvault=:" in head and b"\r\ncontent-digest: sha-256=:" in head
    backend.close()


def test_a_server_that_does_not_answer_is_unavailable(users: Users) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    backend = RemoteBackend(f"http://127.0.0.1:{port}", users.alice)
    with pytest.raises(ProviderUnavailable):
        backend._send("/v1/rpc", BODY)
    backend.close()


def test_requests_sends_when_a_proxy_is_set(users: Users, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session = _Session()
    # No connection is made: the direct way declines, requests would use the proxy.
    assert (
        session.post_signed("https://vault.example:8443", "/v1/rpc", BODY, users.alice, 1) is None
    )
    session.close()


def test_requests_sends_what_the_plain_signature_does_not_cover(users: Users) -> None:
    session = _Session()
    # Declined before any connection is made (nothing listens on port 9).
    assert session.post_signed("http://127.0.0.1:9", "/v1/who%20ami", BODY, users.alice, 5) is None
    assert session.post_signed("http://127.0.0.1:9", "/v1/rpc?x=1", BODY, users.alice, 5) is None
    session.close()


def test_tls_is_verified_as_requests_verifies_it(tmp_path: Path, users: Users) -> None:
    cert, key = _self_signed(tmp_path)
    proc = start_server(
        tmp_path,
        users,
        scheme="https",
        extra=("--tls-cert", str(cert), "--tls-key", str(key)),
        verify=str(cert),
    )
    try:
        # The server's own certificate given (CHILDVAULT_SERVER_CA): accepted.
        trusting = RemoteBackend(proc.url, users.alice, verify=str(cert))
        reply = trusting._http.post_signed(proc.url, "/v1/whoami", BODY, users.alice, 30)
        assert reply is not None and reply.status_code == 200
        assert reply.json()["user"] == "alice"
        trusting.close()
        # The system's CAs only: the certificate is refused, nothing is answered.
        strict = RemoteBackend(proc.url, users.alice)
        with pytest.raises(ProviderUnavailable) as caught:
            strict._send("/v1/whoami", BODY)
        assert "CERTIFICATE_VERIFY_FAILED" in repr(caught.value.__cause__)
        strict.close()
    finally:
        stop_server(proc.process)


def test_the_urls_own_path_comes_first(users: Users) -> None:
    # A server behind a reverse proxy at /childvault: the request, and what its
    # signature covers, is /childvault/v1/rpc, as requests would send it.
    url, received = _one_answer(b'HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{"result":null}')
    session = _Session()
    reply = session.post_signed(url + "/childvault", "/v1/rpc", BODY, users.alice, 30)
    assert reply is not None and reply.status_code == 200
    assert received[0].startswith(b"POST /childvault/v1/rpc HTTP/1.1\r\n")
    prepared = requests.Request(
        "POST", url + "/childvault/v1/rpc", data=BODY, headers={"Content-Type": "application/json"}
    ).prepare()
    params = _header(received[0], b"signature-input").decode()
    nonce = params.split('nonce="')[1][:32]
    created = int(params.split("created=")[1].split(";")[0])
    sign_request(prepared, users.alice, created=created, nonce=nonce)
    assert params == prepared.headers["Signature-Input"]
    assert _header(received[0], b"signature") == prepared.headers["Signature"].encode()
    session.close()


def _header(request: bytes, name: bytes) -> bytes:
    for line in request.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    raise AssertionError(name)
