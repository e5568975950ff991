"""The remote backend's requests leave in one ``send()``: head and body together.

urllib3 sends a request's head and its body apart, and the server then wakes
twice for one request (round 2 session 9, bench/NOTES.md). A listening socket
on loopback takes what one request sends and counts the client's sends.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
import requests
import urllib3.connection

from childvault.vault._remote import _Session


def _answered(session: Any, body: bytes) -> bytes:
    """What a loopback listener received for one POST of ``body`` (answered 200)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        received: list[bytes] = []

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data or not data.endswith(body):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                received.append(data)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

        thread = threading.Thread(target=serve)
        thread.start()
        r = session.post(
            f"http://127.0.0.1:{port}/v1/rpc",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        thread.join(timeout=30)
    assert r.status_code == 200
    return received[0]


@pytest.mark.parametrize("size", [7, 70_000])
def test_head_and_body_leave_in_one_send(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    sends: list[int] = []
    plain = urllib3.connection.HTTPConnection.send

    def counted(self: Any, data: Any) -> None:
        sends.append(len(data))
        plain(self, data)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "send", counted)
    body = b'{"pad":"' + b"x" * (size - 10) + b'"}'
    got = _answered(_Session(), body)
    head, _, rest = got.partition(b"\r\n\r\n")
    assert rest == body
    assert head.lower().count(b"content-length: %d" % len(body)) == 1
    assert len(sends) == 1 and sends[0] == len(got)
    # A plain requests session sends the same request in two pieces.
    sends.clear()
    plain_got = _answered(requests.Session(), body)
    assert plain_got.partition(b"\r\n\r\n")[2] == body
    assert len(sends) == 2
