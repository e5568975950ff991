"""Signed requests against a real server process: acceptance and every forgery of the brief."""

from __future__ import annotations

import http.server
import threading
import time
from typing import Any

import pytest
import requests

from childvault.keys import ConfigError, Identity
from childvault.vault._httpsig import HTTPSignatureAuth, sign_request
from tests.server.conftest import ServerProcess, Users


def _prepare(method: str, url: str, **kwargs: Any) -> requests.PreparedRequest:
    return requests.Request(method, url, **kwargs).prepare()


def _send(prepared: requests.PreparedRequest) -> requests.Response:
    with requests.Session() as session:
        return session.send(prepared, timeout=30)


def _refused(response: requests.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {
        "error": {401: "unauthorized", 403: "forbidden"}[status],
        "reason": reason,
    }
    assert response.headers["connection"] == "close"


def _audited(server: ServerProcess, reason: str, claimed: str | None = None) -> dict[str, Any]:
    events = [e for e in server.audit() if e["reason"] == reason]
    assert events, f"no audited refusal {reason!r} in {server.audit()}"
    if claimed is not None:
        assert any(e["claimed_user"] == claimed for e in events)
    return events[-1]


def test_signed_get_is_accepted_and_the_server_sees_the_signer(
    server: ServerProcess, users: Users
) -> None:
    response = requests.get(server.url + "/v1/whoami", auth=HTTPSignatureAuth(users.alice))
    assert response.status_code == 200
    assert response.json() == {"user": "alice", "body_bytes": 0}
    response = requests.get(server.url + "/v1/whoami", auth=HTTPSignatureAuth(users.bob))
    assert response.json()["user"] == "bob"
    lines = [line for line in server.access_log() if line.get("user") == "alice"]
    assert lines and lines[-1]["path"] == "/v1/whoami" and lines[-1]["status"] == 200


def test_signed_post_with_query_and_body_is_accepted(server: ServerProcess, users: Users) -> None:
    response = requests.post(
        server.url + "/v1/whoami?record=0123&fields=a,b",
        json={"value": "x" * 1000},
        auth=HTTPSignatureAuth(users.alice),
    )
    assert response.status_code == 200, response.text
    assert response.json()["user"] == "alice"
    assert response.json()["body_bytes"] == len(response.request.body or b"")
    # The access log names the route, never the query or its values.
    logged = server.access_log()
    assert all("0123" not in str(line) for line in logged)


def test_unsigned_request_is_refused_and_audited(server: ServerProcess) -> None:
    _refused(requests.get(server.url + "/v1/whoami"), 401, "missing_signature")
    _audited(server, "missing_signature")
    # Unknown routes are not revealed to unsigned callers either.
    _refused(requests.get(server.url + "/v1/no-such-route"), 401, "missing_signature")


def test_health_needs_no_signature(server: ServerProcess) -> None:
    assert requests.get(server.url + "/health").json() == {"status": "ok"}


def test_signature_without_digest_is_refused(server: ServerProcess, users: Users) -> None:
    prepared = sign_request(_prepare("GET", server.url + "/v1/whoami"), users.alice)
    del prepared.headers["Content-Digest"]
    _refused(_send(prepared), 401, "missing_digest")


def test_replayed_request_is_refused(server: ServerProcess, users: Users) -> None:
    prepared = sign_request(_prepare("GET", server.url + "/v1/whoami"), users.alice)
    assert _send(prepared).status_code == 200
    _refused(_send(prepared), 401, "replay")
    _audited(server, "replay", "alice")


def test_created_outside_the_window_is_refused(server: ServerProcess, users: Users) -> None:
    now = int(time.time())
    for created in (now - 301 - 60, now + 301 + 60):
        prepared = sign_request(
            _prepare("GET", server.url + "/v1/whoami"), users.alice, created=created
        )
        _refused(_send(prepared), 401, "clock_skew")
    _audited(server, "clock_skew")


def test_tampered_body_is_refused(server: ServerProcess, users: Users) -> None:
    headers = {"Content-Type": "application/octet-stream"}
    prepared = sign_request(
        _prepare("POST", server.url + "/v1/whoami", data=b"pay 10", headers=headers), users.alice
    )
    prepared.body = b"pay 99"
    _refused(_send(prepared), 401, "digest_mismatch")
    _audited(server, "digest_mismatch", "alice")

    # Replacing the digest header too breaks the signature instead.
    prepared = sign_request(
        _prepare("POST", server.url + "/v1/whoami", data=b"pay 10", headers=headers), users.alice
    )
    other = sign_request(
        _prepare("POST", server.url + "/v1/whoami", data=b"pay 99", headers=headers), users.alice
    )
    prepared.body = other.body
    prepared.headers["Content-Digest"] = other.headers["Content-Digest"]
    _refused(_send(prepared), 401, "invalid_signature")


def test_tampered_path_query_or_method_is_refused(server: ServerProcess, users: Users) -> None:
    prepared = sign_request(_prepare("GET", server.url + "/v1/other"), users.alice)
    prepared.url = server.url + "/v1/whoami"
    _refused(_send(prepared), 401, "invalid_signature")

    prepared = sign_request(_prepare("GET", server.url + "/v1/whoami?a=1"), users.alice)
    prepared.url = server.url + "/v1/whoami?a=2"
    _refused(_send(prepared), 401, "invalid_signature")

    # A query added to a request signed without one is not covered at all.
    prepared = sign_request(_prepare("GET", server.url + "/v1/whoami"), users.alice)
    prepared.url = server.url + "/v1/whoami?a=1"
    _refused(_send(prepared), 401, "malformed_signature")

    prepared = sign_request(_prepare("GET", server.url + "/v1/whoami"), users.alice)
    prepared.method = "POST"
    _refused(_send(prepared), 401, "invalid_signature")
    _audited(server, "invalid_signature", "alice")


def test_signature_by_another_key_is_refused(server: ServerProcess, users: Users) -> None:
    # Someone with their own key claims to be alice (keyid "alice").
    impostor = Identity.generate("alice")
    _refused(
        requests.get(server.url + "/v1/whoami", auth=HTTPSignatureAuth(impostor)),
        401,
        "invalid_signature",
    )
    # Bob's valid signature with the keyid changed to alice's.
    prepared = sign_request(_prepare("GET", server.url + "/v1/whoami"), users.bob)
    prepared.headers["Signature-Input"] = prepared.headers["Signature-Input"].replace(
        'keyid="bob"', 'keyid="alice"'
    )
    _refused(_send(prepared), 401, "invalid_signature")


def test_unknown_user_is_refused(server: ServerProcess, users: Users) -> None:
    _refused(
        requests.get(server.url + "/v1/whoami", auth=HTTPSignatureAuth(users.mallory)),
        401,
        "unknown_user",
    )
    _audited(server, "unknown_user", "mallory")


def test_disabled_user_is_forbidden(server: ServerProcess, users: Users) -> None:
    _refused(
        requests.get(server.url + "/v1/whoami", auth=HTTPSignatureAuth(users.dave)),
        403,
        "user_disabled",
    )
    _audited(server, "user_disabled", "dave")
    lines = [line for line in server.access_log() if line.get("reason") == "user_disabled"]
    assert lines and lines[-1]["claimed_user"] == "dave" and lines[-1]["user"] is None


def test_changed_or_removed_content_type_is_refused(server: ServerProcess, users: Users) -> None:
    def signed() -> requests.PreparedRequest:
        request = _prepare(
            "POST", server.url + "/v1/whoami", data=b"{}", headers={"Content-Type": "a/b"}
        )
        return sign_request(request, users.alice)

    prepared = signed()
    prepared.headers["Content-Type"] = "application/json"
    _refused(_send(prepared), 401, "invalid_signature")

    prepared = signed()
    del prepared.headers["Content-Type"]
    _refused(_send(prepared), 401, "malformed_signature")


def test_signed_request_is_not_forwarded_on_redirect(server: ServerProcess, users: Users) -> None:
    seen: list[str] = []

    class Redirector(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(307)
            self.send_header("Location", server.url + "/v1/whoami")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            seen.append(self.path)

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Redirector)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        before = len(server.access_log())
        with pytest.raises(ConfigError, match="redirect"):
            requests.get(
                f"http://127.0.0.1:{httpd.server_address[1]}/v1/whoami",
                auth=HTTPSignatureAuth(users.alice),
                timeout=30,
            )
        assert seen == ["/v1/whoami"]
        # The childvault server never received the forwarded signature.
        assert len(server.access_log()) == before
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def test_concurrent_copies_of_one_request_pass_once(server: ServerProcess, users: Users) -> None:
    prepared = sign_request(_prepare("GET", server.url + "/v1/whoami"), users.alice)
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def fire() -> None:
        barrier.wait(timeout=30)
        statuses.append(_send(prepared.copy()).status_code)

    threads = [threading.Thread(target=fire) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [200] + [401] * 7
