"""A forwarding HTTP proxy in front of one replica that loses chosen answers.

It forwards every request unchanged (the signature covers method, path,
digest and content type, not the host) and passes the replica's answer back,
except for the requests chosen to lose: those reach the replica and are
served there, but the proxy closes the client's connection instead of
answering, exactly what a client sees when a replica dies after doing the
work and before answering. Real server, real client; only the wire is cut.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class LossyProxy:
    """Forward to ``target``; lose the answer of the next commit and/or of one call.

    ``lose_commit``: lose the answer of the next ``/v1/txn/commit`` of a
    transaction that appended to the log (once).
    ``lose_call``: lose the answer of the n-th ``/v1/rpc`` made inside a
    transaction (counting from 1, once).
    """

    def __init__(self, target: str, *, lose_commit: bool = False, lose_call: int = 0) -> None:
        self.target = target.rstrip("/")
        self.lose_commit = lose_commit
        self.lose_call = lose_call
        self.lost: list[str] = []
        self._calls = 0
        self._appended: set[str] = set()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._forward(self, "GET")

            def do_POST(self) -> None:
                proxy._forward(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> LossyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _lose(self, path: str, body: bytes) -> bool:
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            doc = {}
        txn = doc.get("txn") if isinstance(doc, dict) else None
        with self._lock:
            if path == "/v1/rpc" and (doc.get("repo"), doc.get("method")) == ("audit", "append"):
                self._appended.add(str(txn))
            if path == "/v1/txn/commit" and self.lose_commit and str(txn) in self._appended:
                self.lose_commit = False
                return True
            if path == "/v1/rpc" and self.lose_call and txn is not None:
                self._calls += 1
                if self._calls == self.lose_call:
                    self.lose_call = 0
                    return True
            return False

    def _forward(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP}
        r = requests.request(method, self.target + h.path, data=body, headers=headers, timeout=300)
        if self._lose(h.path, body):
            self.lost.append(h.path)
            h.close_connection = True
            return  # served by the replica, never answered
        h.send_response(r.status_code)
        for k, v in r.headers.items():
            if k.lower() not in _HOP:
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(r.content)))
        h.end_headers()
        h.wfile.write(r.content)
