"""Fixtures for the server transport tests: real uvicorn processes on 127.0.0.1.

The server runs ``tests/server/_serve.py`` in its own process with small
limits (64 KiB body, 2 s head and receive timeouts, 6 s for a whole body),
so the attacks on them finish quickly. Every wait is bounded; nothing sleeps
longer than a timeout under test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from childvault.keys import Identity
from childvault.keys._encoding import b64

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0


@dataclass
class Users:
    """Identities known to the test server (``dave`` is disabled) and one it does not know."""

    alice: Identity
    bob: Identity
    dave: Identity
    mallory: Identity


@dataclass
class ServerProcess:
    """A running test server: its base URL, process and log files."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    audit_path: Path
    log_path: Path

    def audit(self) -> list[dict[str, Any]]:
        """Every refusal the server reported to its audit hook so far."""
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line]

    def access_log(self) -> list[dict[str, Any]]:
        """The structured access-log lines so far (uvicorn's own lines skipped)."""
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def users() -> Users:
    """Fresh identities (no files, no passphrases: the transport needs only keys)."""
    return Users(
        alice=Identity.generate("alice"),
        bob=Identity.generate("bob"),
        dave=Identity.generate("dave"),
        mallory=Identity.generate("mallory"),
    )


def start_server(
    tmp: Path,
    users: Users,
    *,
    scheme: str = "http",
    extra: tuple[str, ...] = (),
    verify: str | bool = True,
    address: str = "127.0.0.1",
) -> ServerProcess:
    """Start ``_serve`` on a free port of ``address`` (a loopback one) and wait
    (bounded) until /health answers."""
    users_file = tmp / "users.json"
    users_file.write_text(
        json.dumps(
            {
                "alice": [b64(users.alice.public.signing_key), True],
                "bob": [b64(users.bob.public.signing_key), True],
                "dave": [b64(users.dave.public.signing_key), False],
            }
        )
    )
    port = free_port()
    log_path = tmp / "server.log"
    audit_path = tmp / "audit.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "tests.server._serve",
        "--users",
        str(users_file),
        "--audit",
        str(audit_path),
        "--listen",
        f"[{address}]:{port}" if ":" in address else f"{address}:{port}",
        *extra,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
        )
    url = f"{scheme}://[{address}]:{port}" if ":" in address else f"{scheme}://{address}:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"test server exited early:\n{log_path.read_text()}")
        try:
            if requests.get(url + "/health", timeout=2, verify=verify).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            stop_server(process)
            raise RuntimeError(f"test server did not start:\n{log_path.read_text()}")
        time.sleep(0.1)
    return ServerProcess(url, port, process, audit_path, log_path)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful), then SIGKILL if it does not end within its shutdown bound."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, users: Users) -> Iterator[ServerProcess]:
    """One plain-HTTP test server per test module."""
    proc = start_server(tmp_path_factory.mktemp("server"), users)
    try:
        yield proc
    finally:
        stop_server(proc.process)
