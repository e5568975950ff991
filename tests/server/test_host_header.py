"""The ``Host`` header must name the server (DNS rebinding), and raw refusals carry ``Date``.

Against real server processes over raw sockets: one on 127.0.0.1 started with
``--allowed-host vault.example --allowed-host proxy.example:443``, one on
``[::1]``. A head with no ``Host``, two, a foreign name, a wrong port or a
malformed form (IPv6 without brackets, a trailing dot, user information, a
leading zero in the port) gets 400 ``host`` before h11 or the app sees it,
logged like the other refused heads; the names the server is reachable as are
served. A refused signed request never reaches the signature layer: the same
request with a good ``Host`` is accepted afterwards (its nonce was not used).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests

from childvault.keys import UsageError
from childvault.server import StaticKeyResolver, create_app
from childvault.server._hosts import AllowedHosts, split_host
from childvault.server._run import server_config
from childvault.vault._httpsig import sign_request
from childvault.vault._wire_messages import REFUSALS
from tests.server.conftest import ServerProcess, Users, start_server, stop_server
from tests.server.test_limits import READ_TIMEOUT, _read_all, _status

ALLOWED = ("vault.example", "proxy.example:443")


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory, users: Users) -> Iterator[ServerProcess]:
    """A server on 127.0.0.1 that is also reached as vault.example and proxy.example:443."""
    extra = tuple(arg for name in ALLOWED for arg in ("--allowed-host", name))
    proc = start_server(tmp_path_factory.mktemp("named"), users, extra=extra)
    try:
        yield proc
    finally:
        stop_server(proc.process)


def _exchange(address: str, port: int, data: bytes) -> bytes:
    with socket.create_connection((address, port), timeout=READ_TIMEOUT) as sock:
        sock.sendall(data)
        return _read_all(sock)


def _get(host: str | None, version: str = "1.1") -> bytes:
    lines = [f"GET /health HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    return ("\r\n".join([*lines, "Connection: close"]) + "\r\n\r\n").encode("latin-1")


def _signed_whoami(server: ServerProcess, users: Users) -> requests.PreparedRequest:
    request = requests.Request(
        "POST", server.url + "/v1/whoami", data=b"{}", headers={"Content-Type": "application/json"}
    )
    return sign_request(request.prepare(), users.alice)


def _refused_host(server: ServerProcess, data: bytes, address: str = "127.0.0.1") -> bytes:
    logged = len(server.access_log())
    # A request behind the refused one: it must never be read as a request.
    response = _exchange(address, server.port, data + b"GET /health HTTP/1.1\r\n\r\n")
    assert _status(response) == 400, response[:200]
    head, _, body = response.partition(b"\r\n\r\n")
    assert json.loads(body) == {"error": "bad_request", "reason": "host"}
    assert b"connection: close" in head.lower()
    assert response.count(b"HTTP/1.1 ") == 1
    lines = server.access_log()[logged:]
    assert any(
        line["status"] == 400 and line.get("reason") == "host" and line["path"] == "-"
        for line in lines
    ), lines
    return head


def _served(server: ServerProcess, host: str, address: str = "127.0.0.1") -> None:
    response = _exchange(address, server.port, _get(host))
    assert _status(response) == 200, (host, response[:200])
    assert response.endswith(b'{"status":"ok"}'), response[-100:]


def test_the_names_the_server_is_reached_as_are_served(named: ServerProcess) -> None:
    port = named.port
    for host in (
        f"127.0.0.1:{port}",
        "127.0.0.1",  # no port: the name decides (a proxy passes it so)
        f"localhost:{port}",
        f"LocalHost:{port}",  # names compare without case
        f"[::1]:{port}",
        f"[0:0:0:0:0:0:0:1]:{port}",  # the same address written out
        "vault.example",
        f"vault.example:{port}",
        "proxy.example:443",
        "proxy.example",
        f"  127.0.0.1:{port}\t",  # optional whitespace around the value
    ):
        _served(named, host)


def test_the_client_library_sends_an_accepted_host(named: ServerProcess, users: Users) -> None:
    # requests (and http.client under the remote backend's pool) write the URL's host:port.
    prepared = _signed_whoami(named, users)
    with requests.Session() as session:
        assert session.send(prepared, timeout=READ_TIMEOUT).status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:{port}",  # DNS rebinding: the attacker's name, the server's port
        "evil.example",
        "vault.example.evil.example:{port}",
        "127.0.0.1:{other}",  # wrong port
        "localhost:{other}",
        "proxy.example:{port}",  # given with :443, so only that port
        "vault.example:443",
        "localhost.:{port}",  # a trailing dot is another name
        "::1:{port}",  # IPv6 without brackets
        "[::1:{port}",
        "[127.0.0.1]:{port}",
        "[::2]:{port}",
        "127.0.0.1:0{port}",  # a port with a leading zero
        "127.0.0.1:",
        "user@127.0.0.1:{port}",
        "127.0.0.1:{port}/x",
        "",
        "127.1:{port}",  # not an address as written
        "[fe80::1%25lo]:{port}",
    ],
)
def test_a_host_not_naming_the_server_is_refused(named: ServerProcess, host: str) -> None:
    value = host.format(port=named.port, other=named.port + 1)
    _refused_host(named, _get(value))


def test_a_missing_or_repeated_host_is_refused(named: ServerProcess) -> None:
    good = f"127.0.0.1:{named.port}"
    _refused_host(named, _get(None))
    # h11 accepts HTTP/1.0 without Host; the server does not.
    _refused_host(named, _get(None, "1.0"))
    _refused_host(named, _get(good).replace(b"\r\n\r\n", f"\r\nHost: {good}\r\n\r\n".encode()))
    _refused_host(named, _get(good).replace(b"\r\n\r\n", b"\r\nhost: evil.example\r\n\r\n"))
    # The refusal is logged with the client's address, as every refused head.
    assert "request refused: 400 host from 127.0.0.1:" in named.log_path.read_text()


def test_a_pipelined_request_is_checked_too(named: ServerProcess) -> None:
    # The second request arrives with the first; it is checked before h11 parses it.
    first = _get(f"127.0.0.1:{named.port}").replace(b"Connection: close\r\n", b"")
    response = _exchange("127.0.0.1", named.port, first + _get("evil.example"))
    assert response.startswith(b"HTTP/1.1 200 ") and response.count(b"HTTP/1.1 ") == 2
    assert response.endswith(b'{"error":"bad_request","reason":"host"}')


def test_a_refused_signed_request_never_reaches_the_signature_layer(
    named: ServerProcess, users: Users
) -> None:
    prepared = _signed_whoami(named, users)
    assert isinstance(prepared.body, bytes)
    fields = [f"{k}: {v}" for k, v in prepared.headers.items()]

    def head(host: str) -> bytes:
        lines = ["POST /v1/whoami HTTP/1.1", f"Host: {host}", *fields, "Connection: close"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + bytes(prepared.body or b"")

    audited = len(named.audit())
    _refused_host(named, head(f"evil.example:{named.port}"))
    assert len(named.audit()) == audited  # not an ASGI request: no refusal of alice
    accepted = _exchange("127.0.0.1", named.port, head(f"127.0.0.1:{named.port}"))
    assert _status(accepted) == 200, accepted[:300]  # not a replay: the nonce is unused


def test_a_raw_refusal_carries_a_date(named: ServerProcess) -> None:
    by_host = _refused_host(named, _get("evil.example"))
    # Refused by h11 itself (a space before the colon): the same hand-written answer.
    bad = _get(f"127.0.0.1:{named.port}").replace(b"\r\n\r\n", b"\r\nX-A : b\r\n\r\n")
    by_h11 = _exchange("127.0.0.1", named.port, bad).partition(b"\r\n\r\n")[0]
    assert b'"reason":"malformed_head"' not in by_h11 and _status(by_h11) == 400
    for head in (by_host, by_h11):
        fields = dict(
            line.split(b": ", 1) for line in head.lower().split(b"\r\n")[1:] if b": " in line
        )
        assert fields.keys() == {
            b"date",
            b"content-type",
            b"content-length",
            b"connection",
            b"cache-control",
        }
        assert fields[b"connection"] == b"close" and fields[b"cache-control"] == b"no-store"
        # RFC 9110 section 5.6.7: IMF-fixdate, in GMT.
        assert fields[b"date"].endswith(b" gmt")
        sent = parsedate_to_datetime(fields[b"date"].decode())
        # The answer's own time (a generous bound: not a timing test).
        assert abs((datetime.now(UTC) - sent).total_seconds()) < 300


@pytest.fixture(scope="module")
def ipv6(tmp_path_factory: pytest.TempPathFactory, users: Users) -> Iterator[ServerProcess]:
    """A server bound to [::1] only."""
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 on this machine")
    proc = start_server(tmp_path_factory.mktemp("ipv6"), users, address="::1")
    try:
        yield proc
    finally:
        stop_server(proc.process)


def test_an_ipv6_bound_server_checks_bracketed_hosts(ipv6: ServerProcess) -> None:
    port = ipv6.port
    for host in (f"[::1]:{port}", "[::1]", f"[0::1]:{port}", f"localhost:{port}"):
        _served(ipv6, host, "::1")
    for host in (f"::1:{port}", f"[::1]:{port + 1}", f"[::1%1]:{port}", f"evil.example:{port}"):
        _refused_host(ipv6, _get(host), "::1")
    # requests writes [::1]:port itself.
    assert requests.get(ipv6.url + "/health", timeout=READ_TIMEOUT).status_code == 200


def test_allowed_hosts_rules(tmp_path: Path) -> None:
    app = create_app(StaticKeyResolver({}))
    # A wildcard bind has no name of its own: the names must be given.
    for listen in ("0.0.0.0:8443", "[::]:8443"):
        with pytest.raises(UsageError, match="--allowed-host"):
            server_config(app, listen, behind_proxy=True)
        assert server_config(app, listen, behind_proxy=True, allowed_hosts=["vault.example"])
    for bad in ("", "a b", "vault.example:http", "vault.example:99999", "[::1", "-bad.example"):
        with pytest.raises(UsageError, match="--allowed-host"):
            server_config(app, "127.0.0.1:8443", allowed_hosts=[bad])
    hosts = AllowedHosts.for_listen("192.0.2.10", 8443, ["Vault.Example"])
    # A public bind adds no loopback names; a given name is compared in lower case.
    assert hosts.names == {"192.0.2.10": {8443}, "vault.example": {8443}}
    assert split_host("[::FFFF:7F00:1]:1") == ("::ffff:7f00:1", 1)
    assert "host" in REFUSALS


@pytest.mark.parametrize("lang", ["C", "zh_CN.UTF-8"])
def test_serve_refuses_a_wildcard_bind_without_allowed_host(tmp_path: Path, lang: str) -> None:
    # Refused before the home is opened or a passphrase tried, in the reader's language.
    result = subprocess.run(
        [
            *(sys.executable, "-m", "childvault", "--home", str(tmp_path), "--as", "admin"),
            *("serve", "--listen", "0.0.0.0:0", "--behind-proxy"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CHILDVAULT_PASSPHRASE": "x", "LC_ALL": lang},
    )
    assert result.returncode == 2, result.stderr
    wanted = "needs --allowed-host NAME" if lang == "C" else "需要 --allowed-host NAME"
    assert wanted in result.stderr
    assert list(tmp_path.iterdir()) == []
