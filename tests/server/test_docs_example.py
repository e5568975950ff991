"""docs/server.md's examples: the OpenAPI document and the shell signer, run for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from childvault.server import openapi_document, openapi_json
from tests.server.conftest import ROOT, ServerProcess, Users

MARK = "<!-- sign-request.sh"


def _script() -> str:
    text = (ROOT / "docs" / "server.md").read_text(encoding="utf-8")
    assert text.count(MARK) == 1
    after = text.split(MARK, 1)[1]
    block = after.split("```sh\n", 1)[1].split("```", 1)[0]
    return block


def test_checked_in_openapi_matches_the_code() -> None:
    assert (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8") == openapi_json()


def test_served_openapi_matches_the_code(server: ServerProcess) -> None:
    assert requests.get(server.url + "/openapi.json").json() == openapi_document()


@pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("curl") is None,
    reason="the documented shell example needs openssl (3.x) and curl",
)
def test_documented_shell_signer_talks_to_the_server(
    server: ServerProcess, users: Users, tmp_path: Path
) -> None:
    script = tmp_path / "sign-request.sh"
    script.write_text(_script())
    key = tmp_path / "alice.pem"
    key.write_bytes(
        Ed25519PrivateKey.from_private_bytes(users.alice.signing_seed()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    def run(*args: str) -> dict[str, object]:
        result = subprocess.run(
            ["sh", str(script), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "CURL_OPTS": "--max-time 30"},
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    assert run("GET", server.url + "/v1/whoami", "alice", str(key)) == {
        "user": "alice",
        "body_bytes": 0,
    }
    body = tmp_path / "body.json"
    body.write_text('{"hello": "world"}')
    reply = run(
        "POST",
        server.url + "/v1/whoami?x=1&y=%20",
        "alice",
        str(key),
        str(body),
        "application/json",
    )
    assert reply == {"user": "alice", "body_bytes": body.stat().st_size}
    # The same script with another user's name is refused by the server.
    assert run("GET", server.url + "/v1/whoami", "bob", str(key))["reason"] == ("invalid_signature")


VAULT_MARK = "<!-- vault-routes.sh"


@pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("curl") is None,
    reason="the documented shell example needs openssl (3.x) and curl",
)
def test_documented_vault_routes_example(tmp_path: Path) -> None:
    from tests.server._vaultserver import make_vault

    text = (ROOT / "docs" / "server.md").read_text(encoding="utf-8")
    assert text.count(VAULT_MARK) == 1
    example = text.split(VAULT_MARK, 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    (tmp_path / "sign-request.sh").write_text(_script())
    (tmp_path / "vault-routes.sh").write_text(example)
    vs = make_vault(tmp_path / "vault", ("officer1", "worker1"))
    vs.start()
    try:
        # The sample's consents are older than the back-dating window: an
        # officer imports it, confirming them (issue 15).
        sample = ROOT / "childvault" / "vault" / "data" / "sample.csv"
        vs.cli("officer1", "import", "--confirm-backdated", str(sample))
        key = tmp_path / "worker1.pem"
        key.write_bytes(
            Ed25519PrivateKey.from_private_bytes(
                vs.identity("worker1").signing_seed()
            ).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        result = subprocess.run(
            ["sh", str(tmp_path / "vault-routes.sh"), vs.url, "worker1", str(key)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "CURL_OPTS": "--max-time 60"},
        )
        assert result.returncode == 0, result.stderr
        whoami, count = (json.loads(line) for line in result.stdout.splitlines() if line)
        assert whoami == {"user": "worker1", "body_bytes": 0}
        assert count["result"] == 200  # the sample's rows, as the page says
        assert set(count) == {"result", "gen"} and isinstance(count["gen"], int)
    finally:
        vs.stop()
