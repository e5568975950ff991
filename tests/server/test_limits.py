"""Size and time limits against a real server process, driven over raw sockets.

The test server allows 64 KiB bodies, 2 s for a request head, 2 s per
receive and 6 s for a whole body (tests/server/conftest.py). Each test stops
as soon as the server has answered or closed; every loop is bounded.
"""

from __future__ import annotations

import select
import socket
import time

import requests

from childvault.vault._httpsig import sign_request
from tests.server.conftest import ServerProcess, Users

MAX_BODY = 64 * 1024
READ_TIMEOUT = 30.0


def _connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=READ_TIMEOUT)
    return sock


def _head(
    prepared: requests.PreparedRequest, *, drop: tuple[str, ...] = (), extra: tuple[str, ...] = ()
) -> bytes:
    lines = [f"{prepared.method} {prepared.path_url} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in prepared.headers.items() if k.lower() not in drop]
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _answered(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def _drip_until_closed(sock: socket.socket, byte: bytes, *, interval: float = 0.25) -> bool:
    """Send ``byte`` every ``interval`` s, at most 60 times; whether the server closed first.

    A reset counts as closed: the kernel answers a byte sent to a closed
    socket with RST, which may arrive before our read of the FIN.
    """
    for _ in range(60):
        if _answered(sock):
            try:
                return sock.recv(1024) == b""
            except ConnectionResetError:
                return True
        try:
            sock.sendall(byte)
        except (BrokenPipeError, ConnectionResetError):
            return True
        time.sleep(interval)
    return False


def _read_all(sock: socket.socket) -> bytes:
    """Read until the server closes the connection (bounded by the socket timeout)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def _status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:100]
    return int(response.split(b" ", 2)[1])


def _signed_post(server: ServerProcess, users: Users, size: int) -> requests.PreparedRequest:
    request = requests.Request(
        "POST",
        server.url + "/v1/whoami",
        data=b"x" * size,
        headers={"Content-Type": "application/octet-stream"},
    ).prepare()
    return sign_request(request, users.alice)


def test_declared_body_over_the_limit_is_refused_before_reading(server: ServerProcess) -> None:
    with _connect(server) as sock:
        head = (
            "POST /v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Length: {100 * 1024 * 1024}\r\n\r\n"
        ).encode()
        sock.sendall(head + b"x" * 4096)
        response = _read_all(sock)
    assert _status(response) == 413
    assert b'"reason":"body_too_large"' in response
    line = [entry for entry in server.access_log() if entry.get("status") == 413][-1]
    assert line["bytes_in"] == 0
    assert any(e["reason"] == "body_too_large" and e["status"] == 413 for e in server.audit())


def test_chunked_body_over_the_limit_is_refused_while_reading(
    server: ServerProcess, users: Users
) -> None:
    # A correctly signed request whose body (100 KiB) exceeds the limit; it is
    # sent chunked, so only counting while reading can catch it.
    prepared = _signed_post(server, users, 100 * 1024)
    with _connect(server) as sock:
        sock.sendall(
            _head(prepared, drop=("content-length",), extra=("Transfer-Encoding: chunked",))
        )
        sent = 0
        chunk = b"x" * 8192
        # Never the whole body: at most 96 KiB of the 100, and no final chunk.
        while sent < 96 * 1024 and not _answered(sock):
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break  # answered and closed between our check and this send
            sent += len(chunk)
        response = _read_all(sock)
    assert _status(response) == 413
    assert sent < 100 * 1024


def test_transfer_encoding_with_content_length_is_refused_and_closed(
    server: ServerProcess, users: Users
) -> None:
    # The request-smuggling shape (RFC 9112 section 6.3): a proxy framing by
    # Content-Length and the server by the chunks would disagree on where the
    # next request starts. A correctly signed request, so only the framing is
    # at fault; the "next request" hidden in the body must never be answered.
    prepared = _signed_post(server, users, 16)
    hidden = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    body = b"10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n" + hidden
    with _connect(server) as sock:
        sock.sendall(_head(prepared, extra=("Transfer-Encoding: chunked",)) + body)
        response = _read_all(sock)
    assert _status(response) == 400
    assert b'"reason":"ambiguous_framing"' in response
    assert response.count(b"HTTP/1.1 ") == 1  # closed: the hidden request got no answer
    assert any(e["reason"] == "ambiguous_framing" and e["status"] == 400 for e in server.audit())


def test_slow_request_head_is_disconnected(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # One header byte every 0.25 s, never finishing the head; the server's
        # head timeout (2 s) must end this long before the 60 iterations.
        closed = _drip_until_closed(sock, b"X")
    assert closed
    assert "request head not complete" in server.log_path.read_text()


def test_oversized_request_head_is_refused(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (20 * 1024))
        sock.sendall(b"\r\n\r\n")
        response = _read_all(sock)
    # 431 from our limit when the head arrives whole, 400 from h11 when the
    # incomplete head alone passes its buffer limit.
    assert _status(response) in (400, 431)
    with _connect(server) as sock:
        head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (20 * 1024)
        sock.sendall(head + b"\r\n\r\n")
        response = _read_all(sock)
    assert _status(response) in (400, 431)


def test_slow_head_of_a_kept_alive_connection_is_disconnected(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            chunk = sock.recv(65536)
            assert chunk, first
            first += chunk
        assert _status(first) == 200
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        closed = _drip_until_closed(sock, b"X")
    assert closed


def test_body_dripped_after_the_answer_does_not_hold_the_connection(
    server: ServerProcess,
) -> None:
    with _connect(server) as sock:
        # /health answers without reading the declared body.
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 60000\r\n\r\n")
        response = b""
        while not response.endswith(b'{"status":"ok"}'):
            chunk = sock.recv(65536)
            assert chunk, response
            response += chunk
        assert _status(response) == 200
        # Each byte would restart uvicorn's 5 s keep-alive timer.
        closed = _drip_until_closed(sock, b"x")
    assert closed


def test_stalled_body_gets_408(server: ServerProcess, users: Users) -> None:
    prepared = _signed_post(server, users, 1000)
    with _connect(server) as sock:
        sock.sendall(_head(prepared) + b"x" * 10)
        # Nothing more is sent: the 2 s receive timeout answers.
        response = _read_all(sock)
    assert _status(response) == 408
    assert b'"reason":"request_timeout"' in response
    assert any(e["reason"] == "request_timeout" for e in server.audit())


def test_dripped_body_is_bounded_in_total(server: ServerProcess, users: Users) -> None:
    prepared = _signed_post(server, users, 1000)
    with _connect(server) as sock:
        sock.sendall(_head(prepared))
        # One byte every 0.5 s: each receive is within its 2 s timeout, but
        # the body as a whole must arrive within 6 s. 60 bytes would take 30 s.
        for _ in range(60):
            if _answered(sock):
                break
            try:
                sock.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                break  # answered and closed between our check and this send
            time.sleep(0.5)
        response = _read_all(sock)
    assert _status(response) == 408


def test_body_at_the_limit_is_accepted(server: ServerProcess, users: Users) -> None:
    prepared = _signed_post(server, users, MAX_BODY)
    with requests.Session() as session:
        response = session.send(prepared, timeout=READ_TIMEOUT)
    assert response.status_code == 200
    assert response.json()["body_bytes"] == MAX_BODY
