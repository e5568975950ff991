"""The runner: TLS with a throw-away certificate, the loopback rule, graceful shutdown."""

from __future__ import annotations

import datetime
import ipaddress
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from childvault.keys import UsageError
from childvault.server import StaticKeyResolver, create_app, server_config
from childvault.vault._httpsig import HTTPSignatureAuth, sign_request
from tests.server.conftest import ROOT, Users, start_server, stop_server


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "childvault test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_server_is_verified_against_its_certificate(tmp_path: Path, users: Users) -> None:
    cert, key = _self_signed(tmp_path)
    proc = start_server(
        tmp_path,
        users,
        scheme="https",
        extra=("--tls-cert", str(cert), "--tls-key", str(key)),
        verify=str(cert),
    )
    try:
        response = requests.get(
            proc.url + "/v1/whoami", auth=HTTPSignatureAuth(users.alice), verify=str(cert)
        )
        assert response.status_code == 200
        assert response.json()["user"] == "alice"
        # Without that certificate the client refuses the server.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(proc.url + "/health", verify=True, timeout=10)
        # Plain HTTP is not served on the TLS port (refused, or never answered).
        with pytest.raises((requests.ConnectionError, requests.Timeout)):
            requests.get(f"http://127.0.0.1:{proc.port}/health", timeout=3)
    finally:
        stop_server(proc.process)


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:8443", "[::]:8443", "192.0.2.10:8443", "example.org:1"]
)
def test_non_loopback_without_tls_or_proxy_is_refused(listen: str) -> None:
    with pytest.raises(UsageError, match="without TLS"):
        server_config(create_app(StaticKeyResolver({})), listen)


def test_listen_rules(tmp_path: Path) -> None:
    app = create_app(StaticKeyResolver({}))
    assert server_config(app, "127.0.0.1:8443").host == "127.0.0.1"
    assert server_config(app, "[::1]:8443").host == "::1"
    assert server_config(app, "localhost:8443").port == 8443
    # A wildcard bind needs the names clients use (tests/server/test_host_header.py).
    names = ["vault.example"]
    config = server_config(app, "0.0.0.0:8443", behind_proxy=True, allowed_hosts=names)
    assert config.host == "0.0.0.0" and config.proxy_headers
    config = server_config(
        app, "0.0.0.0:8443", tmp_path / "c.pem", tmp_path / "k.pem", allowed_hosts=names
    )
    assert config.ssl_certfile == str(tmp_path / "c.pem")
    with pytest.raises(UsageError, match="both"):
        server_config(app, "0.0.0.0:8443", tls_cert=tmp_path / "c.pem")
    for bad in ("8443", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", ":8443"):
        with pytest.raises(UsageError):
            server_config(app, bad)


def test_the_server_process_refuses_a_public_address_without_tls(tmp_path: Path) -> None:
    (tmp_path / "users.json").write_text("{}")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.server._serve",
            "--users",
            str(tmp_path / "users.json"),
            "--audit",
            str(tmp_path / "audit.jsonl"),
            "--listen",
            "0.0.0.0:0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "without TLS" in result.stderr


def _server_read_everything(server_port: int, client_port: int) -> bool:
    """Whether the server's end of this loopback connection has nothing left unread."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return int(fields[4].split(":")[1], 16) == 0
    return False


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_sigterm_finishes_the_request_in_flight(tmp_path: Path, users: Users) -> None:
    # Generous body timeouts here: this test is about shutdown, not slow clients.
    proc = start_server(tmp_path, users, extra=("--receive-timeout", "30", "--body-timeout", "60"))
    try:
        request = requests.Request(
            "POST",
            proc.url + "/v1/whoami",
            data=b"y" * 100,
            headers={"Content-Type": "application/octet-stream"},
        ).prepare()
        prepared = sign_request(request, users.alice)
        head = [f"POST {prepared.path_url} HTTP/1.1", "Host: 127.0.0.1"]
        head += [f"{k}: {v}" for k, v in prepared.headers.items()]
        body = prepared.body
        assert isinstance(body, bytes)
        with socket.create_connection(("127.0.0.1", proc.port), timeout=30) as sock:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[:50])
            # The request is in flight once the server has read its head
            # (uvicorn parses what it reads at once); before that, shutdown
            # rightly closes the connection as idle.
            for _ in range(600):
                if _server_read_everything(proc.port, sock.getsockname()[1]):
                    break
                time.sleep(0.05)
            proc.process.send_signal(signal.SIGTERM)
            # Once the listening socket is gone the server is shutting down.
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", proc.port), timeout=1).close()
                except OSError:
                    break
            sock.sendall(body[50:])
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        assert b'"user":"alice"' in response
        # ...and then the server ends by itself (uvicorn re-raises SIGTERM).
        assert proc.process.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        stop_server(proc.process)
